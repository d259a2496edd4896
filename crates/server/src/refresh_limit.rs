//! How many refresh tokens one client may rotate for one user.
//!
//! Every rotation keeps the token it used up (a replay of it must be
//! found out and end the session) until that token's own expiry,
//! `tokens.refresh_ttl`, and writes its audit events, kept
//! `audit.retain`. Nothing else bounds how fast a holder of a refresh
//! token rotates it: a user looping the grant on a few sessions of their
//! own, thousands of times a second, filled the database by hundreds of
//! millions of rows a day, minted access tokens as fast (which revoking
//! turns into events every resource server holds), and made the user's
//! deletion outlast its statement timeout. So each pair of client and
//! subject may rotate at most `tokens.refreshes_per_minute` times a
//! minute (120 by default, per instance; the whole minute's allowance
//! may be used at once), far more than the one rotation per access
//! token's lifetime of each of a person's devices; past it the token
//! endpoint answers `429` with `Retry-After`, and the token presented is
//! left as it was: the client retries with it. Keyed by the pair, one
//! user of a public app cannot use up the app's other users' allowance.
//!
//! The subject is read before the rotation (one indexed read), so that a
//! refused request writes nothing. Only a live token of this client
//! counts: spending a user's allowance takes one of their live tokens,
//! which is the session itself; a used or dead token's replay is never
//! refused here, so that it reaches the rotation, which finds out the
//! reuse and ends the family (a thief draining the allowance with the
//! chain it took cannot keep the victim's replay from ending it). A
//! retry within the grace window, which the rotation tells from a replay,
//! is counted after it (and refused when it wrote nothing), unless its
//! token was counted as live before. The count is an
//! [`crate::allowance::Allowance`] per pair, kept in memory like the
//! other limits.

use std::time::Duration;

use crate::allowance::Allowance;

/// Rotations allowed per client and subject.
#[derive(Debug)]
pub struct RefreshLimit {
    per_pair: Allowance<(String, String)>,
}

impl RefreshLimit {
    /// `per_minute` rotations per client and subject (0: no limit), all
    /// of which may come at once.
    pub fn new(per_minute: u32) -> RefreshLimit {
        RefreshLimit {
            per_pair: Allowance::per_minute(per_minute),
        }
    }

    /// Whether there is a limit.
    pub fn is_on(&self) -> bool {
        self.per_pair.is_limited()
    }

    /// Count one rotation by `client_id` of a token about `subject`, or
    /// say how long it must wait.
    pub fn check(&self, client_id: &str, subject: &str) -> Result<(), Duration> {
        self.per_pair
            .check(&(client_id.to_owned(), subject.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_has_its_own_allowance() {
        let limit = RefreshLimit::new(2);
        assert!(limit.is_on());
        for _ in 0..2 {
            limit.check("app", "alice").unwrap();
        }
        let wait = limit.check("app", "alice").unwrap_err();
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30));
        limit.check("app", "bob").unwrap();
        limit.check("other-app", "alice").unwrap();
        assert!(!RefreshLimit::new(0).is_on());
    }
}

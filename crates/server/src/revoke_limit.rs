//! How many access tokens one client may revoke for one subject.
//!
//! Each access token revoked by `jti` becomes an event in the revocation
//! log that every instance and every resource server's guard keeps until
//! the token would have expired. A client can mint tokens and revoke them
//! as fast as it likes, so without a bound one client could grow every
//! guard's set without end. So each pair of client and subject (`sub`:
//! the user, or the client itself for `client_credentials`) may add at
//! most `tokens.client_revocations` such events a minute (per instance;
//! the whole allowance may be used at once). Keyed by the pair, one user
//! of a public app cannot use up the allowance of the app's other users.
//! A client that can mint tokens for any user it names (allowed the
//! jwt-bearer grant) also has ten times that for all its subjects
//! together, so that naming new subjects does not make it unbounded;
//! other clients' subjects are people who signed in (or the client
//! itself), and a few of them together must not exhaust a shared
//! allowance and leave the app's other users unable to revoke.
//!
//! Past it, `/oauth2/revoke` answers `503` with `Retry-After`, which RFC
//! 7009 §2.2.1 tells the client to read as "the token still exists, retry
//! later"; a replayed authorization code, which must revoke what it
//! issued, ends the sign-in session instead (one event for all its
//! tokens, and no more codes from it without a new login). Only an event
//! appended counts ([`crate::store::revocation::Revocations::revoke_token_counted`]):
//! not a token revoked already, nor a refresh token (revoking one marks
//! its family in the database and adds nothing to the log).
//!
//! The count is an [`crate::allowance::Allowance`] per pair (and one
//! per client), kept in memory like the login limits.

use std::time::Duration;

use crate::allowance::Allowance;

/// Access-token revocations allowed per client and subject.
#[derive(Debug)]
pub struct RevokeLimit {
    per_pair: Allowance<(String, String)>,
    /// Ten times the pair's allowance, per client.
    per_client: Allowance<String>,
}

impl RevokeLimit {
    /// `per_minute` revocations per client and subject (0: no limit), all
    /// of which may come at once.
    pub fn new(per_minute: u32) -> RevokeLimit {
        RevokeLimit {
            per_pair: Allowance::per_minute(per_minute),
            per_client: Allowance::per_minute(per_minute.saturating_mul(10)),
        }
    }

    /// Count one revocation by `client_id` of a token about `subject`, or
    /// say how long it must wait; `any_subject`: the client can mint
    /// tokens for any subject it names (the jwt-bearer grant), and is
    /// bounded as a whole too.
    pub fn check(&self, client_id: &str, subject: &str, any_subject: bool) -> Result<(), Duration> {
        // The pair first: a subject refused its own allowance spends none
        // of the client's.
        self.per_pair
            .check(&(client_id.to_owned(), subject.to_owned()))?;
        if any_subject {
            self.per_client.check(&client_id.to_owned())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_and_subject_has_its_own_allowance() {
        let limit = RevokeLimit::new(3);
        for _ in 0..3 {
            limit.check("a", "alice", true).unwrap();
        }
        let wait = limit.check("a", "alice", true).unwrap_err();
        // One more is allowed a third of a minute after the first.
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        limit.check("a", "bob", true).unwrap();
        limit.check("b", "alice", true).unwrap();
        // A subject refused again and again spends none of the client's.
        for _ in 0..100 {
            assert!(limit.check("a", "alice", true).is_err());
        }
        // Thirty in all per client that names its subjects, whatever
        // the subjects.
        for i in 0..26 {
            limit.check("a", &format!("user{i}"), true).unwrap();
        }
        assert!(limit.check("a", "someone else", true).is_err());
        limit.check("b", "someone else", true).unwrap();
    }

    #[test]
    fn users_who_signed_in_do_not_share_an_allowance() {
        let limit = RevokeLimit::new(3);
        // Ten users (and more) each use theirs up: the eleventh still has
        // its own.
        for i in 0..20 {
            for _ in 0..3 {
                limit.check("spa", &format!("user{i}"), false).unwrap();
            }
            assert!(limit.check("spa", &format!("user{i}"), false).is_err());
        }
        limit.check("spa", "another user", false).unwrap();
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = RevokeLimit::new(0);
        for _ in 0..10_000 {
            limit.check("a", "alice", true).unwrap();
        }
    }
}

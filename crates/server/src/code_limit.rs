//! How many authorization codes one user may be issued.
//!
//! A code is a row kept an hour past its minute of life (a replay within
//! it must still revoke what the code issued), and with a live session a
//! silent authorization request (`prompt=none`, or a remembered consent)
//! issues one without a password: a signed-in person, or a script with
//! their cookie, could loop it thousands of times a second and fill the
//! database. A refused request (consent denied) is stored the same way,
//! and counts the same. So each user is issued at most
//! `sessions.codes_per_minute` codes and refusals a minute, across all
//! their sessions (per instance; all of them may come at once), far more
//! than any person's applications ask for; past it the client is answered
//! `temporarily_unavailable` (RFC 6749 §4.1.2.1), the session left as it
//! is. Per user, not per session: a script that logs in again and again
//! without the session cookie would otherwise start one more allowance
//! with each login.
//!
//! The count is an [`crate::allowance::Allowance`] per user, kept in
//! memory like the login limits.

use std::time::Duration;

use crate::allowance::Allowance;

/// Codes allowed per user.
#[derive(Debug)]
pub struct CodeLimit(Allowance<String>);

impl CodeLimit {
    /// `per_minute` codes per user (0: no limit), all of which may come
    /// at once.
    pub fn new(per_minute: u32) -> CodeLimit {
        CodeLimit(Allowance::per_minute(per_minute))
    }

    /// Count one code (or refusal) for user `user_id`, or say how long
    /// it must wait.
    pub fn check(&self, user_id: &str) -> Result<(), Duration> {
        self.0.check(&user_id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_their_own_allowance() {
        let limit = CodeLimit::new(3);
        for _ in 0..3 {
            limit.check("s1").unwrap();
        }
        let wait = limit.check("s1").unwrap_err();
        // One more is allowed a third of a minute after the first.
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        limit.check("s2").unwrap();
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = CodeLimit::new(0);
        for _ in 0..10_000 {
            limit.check("s1").unwrap();
        }
    }
}

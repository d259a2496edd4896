//! How many access tokens one client may revoke.
//!
//! Each access token a client revokes becomes an event in the revocation
//! log that every instance and every resource server's guard keeps until
//! the token would have expired. A client can mint tokens and revoke them
//! as fast as it likes, so without a bound one client could grow every
//! guard's set without end. Past `tokens.client_revocations` per minute
//! (per instance; the whole allowance may be used at once), a client's
//! revocations are answered `503` with `Retry-After`, which RFC 7009
//! §2.2.1 tells the client to read as "the token still exists, retry
//! later". Refresh tokens are not counted: revoking one marks its family
//! in the database and adds nothing to the log.
//!
//! The count is a GCRA rate limiter per client (`governor`), kept in
//! memory like the failed-login limits. Only authenticated clients reach
//! it, so it holds at most one entry per registered client.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Access-token revocations allowed per client.
#[derive(Debug)]
pub struct RevokeLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl RevokeLimit {
    /// `per_minute` revocations per client (0: no limit), all of which may
    /// come at once.
    pub fn new(per_minute: u32) -> RevokeLimit {
        RevokeLimit {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// Count one revocation by `client_id`, or say how long it must wait.
    pub fn check(&self, client_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&client_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_allowance() {
        let limit = RevokeLimit::new(3);
        for _ in 0..3 {
            limit.check("a").unwrap();
        }
        let wait = limit.check("a").unwrap_err();
        // One more is allowed a third of a minute after the first.
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        limit.check("b").unwrap();
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = RevokeLimit::new(0);
        for _ in 0..10_000 {
            limit.check("a").unwrap();
        }
    }
}

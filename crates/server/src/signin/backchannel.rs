//! Back-channel logout delivery (OpenID Connect Back-Channel Logout 1.0
//! §2.5–2.7): the queue `store::logouts` fills when a session ends is sent
//! from here, off the person's request, each logout token POSTed to its
//! client and retried with backoff until the client answers 200 or the
//! attempts run out (three when the client answers 400, the answer §2.8
//! gives to a logout it could not carry out).

use std::sync::Arc;
use std::time::Duration;

use crate::db::Db;
use crate::keys::Keys;
use crate::store::audit::{AuditQueue, Event, InChange};
use crate::store::clients::ClientCache;
use crate::store::logouts::{self, Delivery};
use crate::store::now;
use crate::Error;

/// Attempts before a delivery is given up (the last about a day after
/// the first).
pub const MAX_ATTEMPTS: i64 = 17;

/// Attempts (in all) after which a `400` ends a delivery: §2.8 has the
/// client answer 400 when "the logout failed", which sending the same
/// logout again rarely mends. A client answering 400 from the first
/// attempt is tried three times (over 15 s).
pub const MAX_REFUSED_ATTEMPTS: i64 = 3;

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// Acknowledged (a 2xx status: §2.8 asks for 200, and 204 or 202
    /// acknowledge as well), or the client is gone.
    Delivered,
    /// The client answered 400: it could not carry out the logout.
    Refused,
    /// The endpoint is down or failing: unreachable, a timeout, a 5xx or
    /// a 429. Its client's other logouts due wait with this one.
    Down,
    /// Anything else: another status (a redirect, a 404 for this one
    /// logout), or this server could not make the attempt (the client not
    /// read, the token not signed). This delivery alone is retried: one
    /// logout an endpoint keeps refusing must not hold up the others.
    Failed,
}

/// Seconds to wait after failed attempt number `attempts` (0-based):
/// 5 s, doubling, at most 4 h.
pub fn backoff(attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 12)).unwrap_or(12);
    (5_i64 << shift).min(4 * 3600)
}

/// An HTTP client for logout deliveries: rustls, a short timeout, no
/// redirects (§2.5: the client answers at the URI it registered), and the
/// environment's proxies but never for loopback, where plain HTTP may be
/// registered (`tessera_guard::environment_proxies`).
pub fn http_client() -> Result<reqwest::Client, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder().no_proxy();
    for proxy in tessera_guard::environment_proxies() {
        builder = builder.proxy(proxy);
    }
    builder
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))
}

/// What delivering logouts needs.
#[derive(Debug)]
pub struct Deliver<'a> {
    /// The queue.
    pub db: &'a Db,
    /// The keys that sign logout tokens.
    pub keys: &'a Keys,
    /// The clients (for their ID token algorithm).
    pub clients: &'a ClientCache,
    /// `iss`.
    pub issuer: &'a str,
    /// Given-up deliveries are recorded.
    pub audit: &'a AuditQueue,
}

/// How long a delivery taken for an attempt is kept from other attempts
/// (other instances, this one's next rounds): well past what an attempt
/// can take (the HTTP client's 5 s, signing, the database). If the
/// process dies during it, the delivery comes due again after this.
const LEASE: i64 = 60;

/// Deliveries taken in one round, all sent at once: a client that does
/// not answer holds up none of the others for longer than the timeout.
const BATCH: i64 = 50;

/// Rounds of deliveries under way at once, at most (`serve` runs them):
/// a round waits for its slowest client (up to the HTTP timeout), and
/// the rounds after it go on meanwhile.
pub const ROUNDS: usize = 4;

/// Deliveries under way at once, at most ([`ROUNDS`] of `BATCH`): each
/// holds an outgoing connection, a file descriptor the listener leaves
/// free (`Config::listen_limits`).
pub const MOST_AT_ONCE: usize = 200;

/// Send what is due now, side by side; returns how many were delivered.
/// Each delivery is taken (`store::logouts::claim`) before it is sent, so
/// across instances each attempt happens once and counts once.
pub async fn deliver_due(app: Deliver<'_>, http: &reqwest::Client) -> Result<usize, Error> {
    // Nothing is claimed while this instance may not sign (its keys not
    // read since a key was revoked): its own refusal would count as the
    // client's failed attempt, and put off the client's other logouts.
    app.keys.caught_up().await?;
    let at = now();
    let held_until = at + LEASE;
    let claimed = logouts::claim(app.db, at, held_until, BATCH).await?;
    let outcomes =
        futures_util::future::join_all(claimed.iter().map(|d| attempt(&app, http, d, held_until)))
            .await;
    let mut delivered = 0;
    for outcome in outcomes {
        if outcome? {
            delivered += 1;
        }
    }
    Ok(delivered)
}

/// One attempt at `delivery`, claimed until `held_until`, recorded: gone
/// when delivered or given up, otherwise due again after its backoff,
/// counted from when the attempt ended (unless the claim ran out meanwhile
/// and another attempt took it over). Whether it was delivered.
async fn attempt(
    app: &Deliver<'_>,
    http: &reqwest::Client,
    delivery: &Delivery,
    held_until: i64,
) -> Result<bool, Error> {
    let sent = send(app, http, delivery, now()).await;
    if sent == Sent::Delivered {
        logouts::done(app.db, &delivery.id).await?;
        return Ok(true);
    }
    let limit = match sent {
        Sent::Refused => MAX_REFUSED_ATTEMPTS,
        _ => MAX_ATTEMPTS,
    };
    if delivery.attempts.saturating_add(1) >= limit {
        let event = Event::new("backchannel_logout_failed")
            .client(&delivery.client_id)
            .subject(&delivery.subject)
            .detail(format!(
                "sid={} attempts={} last={}",
                delivery.sid,
                delivery.attempts.saturating_add(1),
                if sent == Sent::Refused {
                    "refused (400)"
                } else {
                    "not delivered"
                }
            ));
        let recorded = InChange::of(move |_: &()| event);
        if logouts::give_up(app.db, &delivery.id, recorded).await? {
            tracing::warn!(client = %delivery.client_id, attempts = delivery.attempts.saturating_add(1), "back-channel logout given up");
            metrics::counter!("tessera_backchannel_logouts_total", "outcome" => "given_up")
                .increment(1);
        }
    } else {
        let next_at = now().saturating_add(backoff(delivery.attempts));
        let still_held = logouts::retry_at(app.db, &delivery.id, held_until, next_at).await?;
        if still_held && sent == Sent::Down {
            // The endpoint is down or failing: its client's other
            // logouts wait with this one (a 400, or another answer of
            // the endpoint's, is about this logout).
            logouts::put_off_client(app.db, &delivery.client_id, now(), next_at).await?;
        }
    }
    Ok(false)
}

/// One attempt, its logout token issued at `at`.
async fn send(app: &Deliver<'_>, http: &reqwest::Client, delivery: &Delivery, at: i64) -> Sent {
    let alg = match app.clients.find(app.db, &delivery.client_id).await {
        Ok(Some(client)) => client.id_token_alg(),
        // A deleted client has nobody to tell.
        Ok(None) => return Sent::Delivered,
        Err(_) => return Sent::Failed,
    };
    let token = match super::id_token::logout_token(
        app.keys,
        app.issuer,
        alg,
        &delivery.client_id,
        &delivery.subject,
        &delivery.sid,
        at,
    ) {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = %e, "could not sign a logout token");
            return Sent::Failed;
        }
    };
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", &token)
        .finish();
    let result = http
        .post(&delivery.uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => {
            metrics::counter!("tessera_backchannel_logouts_total", "outcome" => "delivered")
                .increment(1);
            Sent::Delivered
        }
        Ok(r) => {
            tracing::info!(client = %delivery.client_id, status = %r.status(), attempts = delivery.attempts.saturating_add(1), "back-channel logout refused");
            // A 400 is about this logout token (Back-Channel Logout §2.8);
            // a 5xx or a 429 is the endpoint failing, which its other
            // logouts would meet too; any other answer, retried, is this
            // delivery's alone.
            let status = r.status();
            let (sent, outcome) = if status == 400 {
                (Sent::Refused, "refused")
            } else if status.is_server_error() || status == 429 {
                (Sent::Down, "failed_status")
            } else {
                (Sent::Failed, "failed_status")
            };
            metrics::counter!("tessera_backchannel_logouts_total", "outcome" => outcome)
                .increment(1);
            sent
        }
        Err(e) => {
            tracing::info!(client = %delivery.client_id, error = %e, attempts = delivery.attempts.saturating_add(1), "back-channel logout not delivered");
            metrics::counter!("tessera_backchannel_logouts_total", "outcome" => "unreachable")
                .increment(1);
            Sent::Down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_at_once_is_rounds_of_a_batch() {
        assert_eq!(
            i64::try_from(MOST_AT_ONCE).unwrap(),
            i64::try_from(ROUNDS).unwrap() * BATCH
        );
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_four_hours() {
        assert_eq!(backoff(0), 5);
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(5), 160);
        assert_eq!(backoff(20), 4 * 3600);
        let total: i64 = (0..MAX_ATTEMPTS - 1).map(backoff).sum();
        assert!(total > 20 * 3600 && total < 26 * 3600, "{total}");
    }
}

//! What the app keeps in memory between requests: the sign-ins under way
//! and the signed-in sessions, each with a bounded life. Whatever depends
//! on the time takes it as `now`, so the tests can move it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// How long sign-ins and sessions live in memory, and how many sign-ins
/// may be under way at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A session ends this long after sign-in, used or not; the person
    /// then signs in again (at the provider, often without a prompt).
    /// Default: 8 hours.
    pub session_lifetime: Duration,
    /// A sign-in must come back from the provider within this time.
    /// Default: 10 minutes.
    pub login_timeout: Duration,
    /// Sign-ins under way at most; past it, `/login` answers 503 until
    /// some finish or time out (older ones are not evicted to make room).
    /// Default: 10,000.
    pub max_pending_logins: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            session_lifetime: Duration::from_secs(8 * 60 * 60),
            login_timeout: Duration::from_secs(10 * 60),
            max_pending_logins: 10_000,
        }
    }
}

/// A sign-in under way: what the callback must find again.
pub(crate) struct Started {
    pub(crate) nonce: String,
    pub(crate) verifier: Zeroizing<String>,
    at: Instant,
}

/// Too many sign-ins are under way.
#[derive(Debug)]
pub(crate) struct TooMany;

/// The sign-ins under way, by their `state`. An entry is made by every
/// `GET /login`, signed in or not, and taken by the callback; one that
/// never comes back is dropped after `login_timeout`, and there are never
/// more than `max_pending_logins`.
pub(crate) struct PendingLogins {
    by_state: HashMap<String, Started>,
    timeout: Duration,
    max: usize,
}

impl PendingLogins {
    pub(crate) fn new(limits: &Limits) -> PendingLogins {
        PendingLogins {
            by_state: HashMap::new(),
            timeout: limits.login_timeout,
            max: limits.max_pending_logins,
        }
    }

    /// Record a sign-in under way. Those that timed out are dropped first;
    /// if the map is still full, this one is refused rather than an older
    /// one evicted: evicting would let anyone who loads `/login` in a loop
    /// silently cancel the sign-ins people are in the middle of, while a
    /// refusal says what happened, and lasts at most `login_timeout` after
    /// the flood stops.
    pub(crate) fn start(
        &mut self,
        state: String,
        nonce: String,
        verifier: Zeroizing<String>,
        now: Instant,
    ) -> Result<(), TooMany> {
        let timeout = self.timeout;
        self.by_state
            .retain(|_, s| now.saturating_duration_since(s.at) < timeout);
        if self.by_state.len() >= self.max {
            return Err(TooMany);
        }
        self.by_state.insert(
            state,
            Started {
                nonce,
                verifier,
                at: now,
            },
        );
        Ok(())
    }

    /// The sign-in `state` names, taken out; `None` when there is none, or
    /// it timed out.
    pub(crate) fn take(&mut self, state: &str, now: Instant) -> Option<Started> {
        self.by_state
            .remove(state)
            .filter(|s| now.saturating_duration_since(s.at) < self.timeout)
    }
}

/// A signed-in person.
#[derive(Clone)]
pub(crate) struct Session {
    /// The provider's session (`sid` of the ID token), if it named one.
    pub(crate) sid: Option<String>,
    /// Who signed in (`sub`).
    pub(crate) sub: String,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) access_token: Zeroizing<String>,
    pub(crate) refresh_token: Option<Zeroizing<String>>,
    pub(crate) id_token: String,
    /// When the person signed in: the session ends `session_lifetime` later.
    pub(crate) signed_in: Instant,
    /// Held while this session's tokens are refreshed, so that only one
    /// refresh at a time is under way for it (see `fresh_tokens`). Every
    /// copy of the session shares it.
    pub(crate) refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// The signed-in sessions, by the random id in the browser's cookie. A
/// session past its lifetime is dropped when it is next looked up, and
/// all those past it whenever someone signs in.
pub(crate) struct Sessions {
    by_id: HashMap<String, Session>,
    lifetime: Duration,
}

impl Sessions {
    pub(crate) fn new(limits: &Limits) -> Sessions {
        Sessions {
            by_id: HashMap::new(),
            lifetime: limits.session_lifetime,
        }
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.signed_in) < self.lifetime
    }

    /// The session `id` names, unless it has ended.
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        let session = self.by_id.get(id)?;
        if self.live(session, now) {
            Some(session.clone())
        } else {
            self.by_id.remove(id);
            None
        }
    }

    /// Add a session just signed in.
    pub(crate) fn insert(&mut self, id: String, session: Session, now: Instant) {
        let lifetime = self.lifetime;
        self.by_id
            .retain(|_, s| now.saturating_duration_since(s.signed_in) < lifetime);
        self.by_id.insert(id, session);
    }

    /// End the session `id` names.
    pub(crate) fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    /// Give session `id` its refreshed tokens, if it is still there and
    /// still holds `sent`, the refresh token that got them; the session so
    /// renewed, or `None` (it ended meanwhile: the tokens are dropped).
    pub(crate) fn renew(
        &mut self,
        id: &str,
        sent: &Zeroizing<String>,
        access_token: Zeroizing<String>,
        refresh_token: Zeroizing<String>,
    ) -> Option<Session> {
        let session = self
            .by_id
            .get_mut(id)
            .filter(|s| s.refresh_token.as_ref() == Some(sent))?;
        session.access_token = access_token;
        session.refresh_token = Some(refresh_token);
        Some(session.clone())
    }

    /// End the sessions a logout token names (Back-Channel Logout 1.0
    /// §2.7): with a `sid`, the sessions the provider's session `sid`
    /// signed in (and, when it names a `sub` too, only those of that
    /// person); with a `sub` alone, every session of that person. A token
    /// that names neither ends nothing.
    pub(crate) fn end(&mut self, sid: Option<&str>, sub: Option<&str>) {
        if sid.is_none() && sub.is_none() {
            return;
        }
        self.by_id.retain(|_, s| {
            let named = sid.is_none_or(|sid| s.sid.as_deref() == Some(sid))
                && sub.is_none_or(|sub| s.sub == sub);
            !named
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pending_logins: usize) -> Limits {
        Limits {
            max_pending_logins,
            ..Limits::default()
        }
    }

    fn start(pending: &mut PendingLogins, state: &str, now: Instant) -> Result<(), TooMany> {
        pending.start(
            state.to_owned(),
            format!("nonce of {state}"),
            Zeroizing::new(format!("verifier of {state}")),
            now,
        )
    }

    fn session(sid: Option<&str>, sub: &str, signed_in: Instant) -> Session {
        Session {
            sid: sid.map(str::to_owned),
            sub: sub.to_owned(),
            name: sub.to_owned(),
            email: String::new(),
            access_token: Zeroizing::new("access".to_owned()),
            refresh_token: Some(Zeroizing::new("refresh".to_owned())),
            id_token: String::new(),
            signed_in,
            refreshing: Arc::default(),
        }
    }

    #[test]
    fn a_sign_in_that_never_comes_back_is_dropped_after_the_timeout() {
        let t0 = Instant::now();
        let timeout = Limits::default().login_timeout;
        let mut pending = PendingLogins::new(&limits(10));
        start(&mut pending, "a", t0).unwrap();
        start(&mut pending, "b", t0).unwrap();
        // Within the timeout the callback finds it.
        let a = pending.take("a", t0 + timeout - Duration::from_secs(1));
        assert_eq!(a.map(|s| s.nonce).as_deref(), Some("nonce of a"));
        // Past it, the callback finds nothing...
        assert!(pending.take("b", t0 + timeout).is_none());
        // ...and the next sign-in sweeps out those that never came back.
        start(&mut pending, "c", t0).unwrap();
        start(&mut pending, "d", t0 + timeout).unwrap();
        assert_eq!(pending.by_state.len(), 1, "only d is left");
        assert!(pending.by_state.contains_key("d"));
    }

    #[test]
    fn sign_ins_under_way_are_capped_and_refused_past_the_cap() {
        let t0 = Instant::now();
        let timeout = Limits::default().login_timeout;
        let mut pending = PendingLogins::new(&limits(2));
        start(&mut pending, "a", t0).unwrap();
        start(&mut pending, "b", t0).unwrap();
        assert!(start(&mut pending, "c", t0).is_err(), "a third is refused");
        assert_eq!(pending.by_state.len(), 2);
        // Refused, not evicted: both sign-ins under way still complete.
        assert!(pending.take("a", t0).is_some());
        // A finished sign-in makes room, and so do timed-out ones.
        start(&mut pending, "c", t0).unwrap();
        assert!(start(&mut pending, "d", t0).is_err());
        start(&mut pending, "d", t0 + timeout).unwrap();
        assert_eq!(pending.by_state.len(), 1);
    }

    #[test]
    fn a_session_ends_its_lifetime_after_sign_in_and_is_swept_out() {
        let t0 = Instant::now();
        let lifetime = Limits::default().session_lifetime;
        let mut sessions = Sessions::new(&Limits::default());
        sessions.insert("old".into(), session(Some("s1"), "alice", t0), t0);
        sessions.insert("other".into(), session(Some("s2"), "bob", t0), t0);
        let almost = t0 + lifetime - Duration::from_secs(1);
        assert!(sessions.get("old", almost).is_some());
        // At its lifetime it is gone, and looking it up drops it.
        assert!(sessions.get("old", t0 + lifetime).is_none());
        assert!(!sessions.by_id.contains_key("old"));
        // A sign-in sweeps out every session past its lifetime, looked up
        // or not.
        let later = t0 + lifetime;
        sessions.insert("new".into(), session(Some("s3"), "carol", later), later);
        assert!(!sessions.by_id.contains_key("other"));
        assert!(sessions.get("new", later).is_some());
    }

    #[test]
    fn refreshed_tokens_go_only_to_a_session_that_still_holds_the_refresh_token_sent() {
        let t0 = Instant::now();
        let mut sessions = Sessions::new(&Limits::default());
        let sent = Zeroizing::new("refresh".to_owned());
        let renew = |sessions: &mut Sessions, id: &str| {
            sessions.renew(
                id,
                &sent,
                Zeroizing::new("access 2".into()),
                Zeroizing::new("refresh 2".into()),
            )
        };
        // Ended meanwhile: nothing is written back.
        assert!(renew(&mut sessions, "gone").is_none());
        assert!(sessions.by_id.is_empty());
        sessions.insert("id".into(), session(None, "alice", t0), t0);
        let renewed = renew(&mut sessions, "id").unwrap();
        assert_eq!(renewed.access_token.as_str(), "access 2");
        // The session now holds another refresh token: a second answer for
        // the one sent first is not written over it.
        assert!(renew(&mut sessions, "id").is_none());
        let stored = sessions.get("id", t0).unwrap();
        assert_eq!(
            stored.refresh_token.as_deref().map(String::as_str),
            Some("refresh 2")
        );
    }

    #[test]
    fn a_logout_token_ends_the_sessions_of_its_sid_its_sub_or_both() {
        let t0 = Instant::now();
        let ids = |sessions: &Sessions| {
            let mut ids: Vec<_> = sessions.by_id.keys().cloned().collect();
            ids.sort();
            ids
        };
        let fill = || {
            let mut sessions = Sessions::new(&Limits::default());
            for (id, sid, sub) in [
                ("a1", Some("s1"), "alice"),
                ("a2", Some("s2"), "alice"),
                ("a3", None, "alice"),
                ("b1", Some("s1"), "bob"),
            ] {
                sessions.insert(id.into(), session(sid, sub, t0), t0);
            }
            sessions
        };
        let mut sessions = fill();
        sessions.end(Some("s1"), None);
        assert_eq!(ids(&sessions), ["a2", "a3"]);
        let mut sessions = fill();
        sessions.end(None, Some("alice"));
        assert_eq!(ids(&sessions), ["b1"]);
        let mut sessions = fill();
        sessions.end(Some("s1"), Some("alice"));
        assert_eq!(ids(&sessions), ["a2", "a3", "b1"]);
        let mut sessions = fill();
        sessions.end(None, None);
        assert_eq!(
            ids(&sessions).len(),
            4,
            "a token naming no one ends nothing"
        );
    }
}

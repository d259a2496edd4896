//! What the app keeps in memory between requests: the signed-in sessions
//! and, briefly, the sign-ins a callback has taken, each with a bounded
//! life and number (a sign-in under way is kept by the browser, in a
//! signed cookie).
//! Whatever depends on the time takes it as `now`, so the tests can move
//! it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// How long sign-ins and sessions last, and how many at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A session ends this long after sign-in, used or not; the person
    /// then signs in again (at the provider, often without a prompt).
    /// Default: 8 hours.
    pub session_lifetime: Duration,
    /// A session not used for this long ends. Default: 1 hour.
    pub idle_timeout: Duration,
    /// A sign-in must come back from the provider within this time.
    /// Default: 10 minutes.
    pub login_timeout: Duration,
    /// Sessions kept at most; past it a sign-in ends the oldest. Default:
    /// 100,000 (a few hundred MB at most).
    pub max_sessions: usize,
    /// Sessions of one person kept at most; past it their sign-in ends
    /// their oldest. Default: 20.
    pub sessions_per_person: usize,
    /// Code exchanges with the provider under way at once, at most. Each
    /// runs to its end even when its browser leaves (a sign-in nobody
    /// completes has its refresh token revoked), so callbacks whose
    /// connections drop at once would otherwise pile up requests to the
    /// provider. Past it a callback is answered 503 before its sign-in is
    /// spent: reloaded, it goes on. Default: 64.
    pub code_exchanges_at_once: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            session_lifetime: Duration::from_secs(8 * 60 * 60),
            idle_timeout: Duration::from_secs(60 * 60),
            login_timeout: Duration::from_secs(10 * 60),
            max_sessions: 100_000,
            sessions_per_person: 20,
            code_exchanges_at_once: 64,
        }
    }
}

/// Sign-ins taken by a callback, remembered for `login_timeout` so that a
/// second callback with the same sign-in cookie (a double click, a
/// reload) is refused here rather than sent to the provider, which would
/// take the second use of the code as a replay and revoke what the first
/// one got. Sign-ins under way are kept by the browser (its signed
/// cookie), not here: a flood of `GET /login` stores nothing. At most
/// [`SPENT_KEPT`] are remembered; past that the oldest is forgotten, which
/// only reopens that race for it.
pub(crate) struct SpentLogins {
    /// When each was spent, oldest first.
    by_age: VecDeque<(Instant, String)>,
    spent: HashSet<String>,
    timeout: Duration,
}

/// Spent sign-ins remembered at most.
pub(crate) const SPENT_KEPT: usize = 10_000;

impl SpentLogins {
    pub(crate) fn new(limits: &Limits) -> SpentLogins {
        SpentLogins {
            by_age: VecDeque::new(),
            spent: HashSet::new(),
            timeout: limits.login_timeout,
        }
    }

    /// Mark the sign-in `state` spent; `false` if it already was. Each
    /// call forgets those past the timeout, and the oldest past
    /// [`SPENT_KEPT`], from the front: constant work a call.
    pub(crate) fn spend(&mut self, state: &str, now: Instant) -> bool {
        while let Some((at, old)) = self.by_age.front() {
            if now.saturating_duration_since(*at) < self.timeout {
                break;
            }
            self.spent.remove(old);
            self.by_age.pop_front();
        }
        if self.spent.contains(state) {
            return false;
        }
        if self.by_age.len() >= SPENT_KEPT {
            if let Some((_, oldest)) = self.by_age.pop_front() {
                self.spent.remove(&oldest);
            }
        }
        self.spent.insert(state.to_owned());
        self.by_age.push_back((now, state.to_owned()));
        true
    }
}

/// A signed-in person.
#[derive(Clone)]
pub(crate) struct Session {
    /// The provider's session (`sid` of the ID token), if it named one.
    pub(crate) sid: Option<String>,
    /// Who signed in (`sub`).
    pub(crate) sub: String,
    /// When the provider issued the ID token (its `iat`).
    pub(crate) issued_at: i64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) access_token: Zeroizing<String>,
    pub(crate) refresh_token: Option<Zeroizing<String>>,
    pub(crate) id_token: String,
    /// When the person signed in: the session ends `session_lifetime` later.
    pub(crate) signed_in: Instant,
    /// When it was last used: it ends `idle_timeout` later.
    pub(crate) last_used: Instant,
    /// Held while this session's tokens are refreshed, so that only one
    /// refresh at a time is under way for it (see `fresh_tokens`). Every
    /// copy of the session shares it.
    pub(crate) refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// The signed-in sessions, by the random id in the browser's cookie,
/// bounded in number ([`Limits::max_sessions`], and
/// [`Limits::sessions_per_person`] for each person: else anyone with an
/// account could sign in again and again, dropping the cookie each time,
/// until the app ran out of memory). A session past its lifetime or idle
/// is dropped when it is next looked up, and the oldest are swept out as
/// people sign in.
///
/// The refresh tokens of sessions ended here while the provider's
/// session goes on (idle, too old, pushed out, replaced by a new sign-in,
/// signed out here) are put aside for [`Sessions::take_retired`], to be
/// revoked at the provider: nobody would use them again, and they would
/// stay valid there for weeks.
pub(crate) struct Sessions {
    by_id: HashMap<String, Session>,
    /// Ids by sign-in, oldest first; ids of sessions since ended are
    /// skipped as they come up, and cleared out when they pile up.
    by_age: VecDeque<String>,
    /// Ids by person.
    by_sub: HashMap<String, Vec<String>>,
    retired: Vec<Zeroizing<String>>,
    /// The logouts heard of lately.
    logouts: RecentLogouts,
    limits: Limits,
}

impl Sessions {
    pub(crate) fn new(limits: &Limits) -> Sessions {
        Sessions {
            by_id: HashMap::new(),
            by_age: VecDeque::new(),
            by_sub: HashMap::new(),
            retired: Vec::new(),
            logouts: RecentLogouts::new(limits),
            limits: *limits,
        }
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.signed_in) < self.limits.session_lifetime
            && now.saturating_duration_since(session.last_used) < self.limits.idle_timeout
    }

    /// The session `id` names, unless it has ended; it counts as used.
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        let live = self.live(self.by_id.get(id)?, now);
        if !live {
            self.retire(id);
            return None;
        }
        let session = self.by_id.get_mut(id)?;
        session.last_used = now;
        Some(session.clone())
    }

    /// Add a session just signed in, ending sessions past their time
    /// from the oldest on, then the person's oldest and the oldest of all
    /// past the limits; `false`, and nothing added, when a logout token
    /// has already ended it (see [`RecentLogouts`]).
    #[must_use]
    pub(crate) fn insert(&mut self, id: String, session: Session, now: Instant) -> bool {
        if self.logouts.ended(&session, now) {
            return false;
        }
        while let Some(oldest) = self.by_age.front() {
            match self.by_id.get(oldest) {
                Some(s) if self.live(s, now) => break,
                Some(_) => {
                    let oldest = oldest.clone();
                    self.retire(&oldest);
                }
                None => {}
            }
            self.by_age.pop_front();
        }
        let theirs = self.by_sub.get(&session.sub).map_or(0, Vec::len);
        if theirs >= self.limits.sessions_per_person.max(1) {
            if let Some(oldest) = self.by_sub.get(&session.sub).and_then(|ids| ids.first()) {
                let oldest = oldest.clone();
                self.retire(&oldest);
            }
        }
        while self.by_id.len() >= self.limits.max_sessions.max(1) {
            let Some(oldest) = self.by_age.pop_front() else {
                break;
            };
            self.retire(&oldest);
        }
        if self.by_age.len() > 2 * self.limits.max_sessions.max(1) {
            let by_id = &self.by_id;
            self.by_age.retain(|id| by_id.contains_key(id));
        }
        self.by_sub
            .entry(session.sub.clone())
            .or_default()
            .push(id.clone());
        self.by_age.push_back(id.clone());
        self.by_id.insert(id, session);
        true
    }

    /// End the session `id` names here, the provider's going on: its
    /// refresh token is put aside to be revoked.
    pub(crate) fn retire(&mut self, id: &str) {
        if let Some(token) = self.remove(id).and_then(|s| s.refresh_token) {
            self.retired.push(token);
        }
    }

    /// Put aside a refresh token no session holds (a sign-in that failed
    /// after its code was exchanged), to be revoked with the others.
    pub(crate) fn retire_token(&mut self, token: Zeroizing<String>) {
        self.retired.push(token);
    }

    /// The refresh tokens of the sessions retired since the last call.
    pub(crate) fn take_retired(&mut self) -> Vec<Zeroizing<String>> {
        std::mem::take(&mut self.retired)
    }

    /// End the session `id` names (its grant is gone at the provider).
    pub(crate) fn remove(&mut self, id: &str) -> Option<Session> {
        let session = self.by_id.remove(id)?;
        if let Some(ids) = self.by_sub.get_mut(&session.sub) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_sub.remove(&session.sub);
            }
        }
        Some(session)
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
    /// person); with a `sub` alone, every session of that person signed
    /// in by then (its ID token's `iat` not after the logout token's: a
    /// logout token delivered late, or again, does not end a sign-in made
    /// since). A token that names neither ends nothing. `iat` is the
    /// logout token's: the logout is remembered, for a sign-in it ends
    /// that has not finished.
    pub(crate) fn end(&mut self, sid: Option<&str>, sub: Option<&str>, iat: i64, now: Instant) {
        if sid.is_none() && sub.is_none() {
            return;
        }
        self.logouts.record(sid, sub, iat, now);
        let named: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, s)| {
                let by_sub_alone = sid.is_none();
                sid.is_none_or(|sid| s.sid.as_deref() == Some(sid))
                    && sub.is_none_or(|sub| s.sub == sub)
                    && (!by_sub_alone || s.issued_at <= iat.saturating_add(LOGOUT_CLOCK_LEEWAY))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in named {
            self.remove(&id);
        }
    }
}

/// Logouts remembered for a sign-in's time (`login_timeout`). A sign-in
/// whose code was exchanged just before its provider session ended gets
/// tokens all the same, and the logout token may reach the app before
/// the callback has stored the session (the userinfo call comes between
/// them): stored after the logout that ended it, the session would stay
/// until its lifetime ran out. Remembered: the ended `sid`s (with the
/// `sub` the token named too, if any), and for a token naming only a
/// `sub`, its `iat`: that person's ID tokens issued until then are of
/// sessions it ended. At most [`LOGOUTS_KEPT`]; past that the oldest is
/// forgotten, which only reopens that race for it.
struct RecentLogouts {
    /// When each was heard of, oldest first.
    by_age: VecDeque<(Instant, Logout)>,
    /// Ended `sid`s: when, and the `sub` named with it.
    sids: HashMap<String, (Instant, Option<String>)>,
    /// People logged out of every session: when, and the latest `iat`.
    subs: HashMap<String, (Instant, i64)>,
    timeout: Duration,
}

/// What a remembered logout is filed under.
enum Logout {
    Sid(String),
    Sub(String),
}

/// Seconds a sign-in's ID token may be stamped after a logout token
/// naming only its `sub` and still be ended by it: the provider's
/// instances stamp by their own clocks, a few seconds apart, and ending a
/// sign-in a few seconds old is the safe way to be wrong.
const LOGOUT_CLOCK_LEEWAY: i64 = 5;

/// Logouts remembered at most.
pub(crate) const LOGOUTS_KEPT: usize = 10_000;

impl RecentLogouts {
    fn new(limits: &Limits) -> RecentLogouts {
        RecentLogouts {
            by_age: VecDeque::new(),
            sids: HashMap::new(),
            subs: HashMap::new(),
            timeout: limits.login_timeout,
        }
    }

    /// Forget, from the front, those heard of a sign-in's time ago and
    /// the oldest past the bound.
    fn forget(&mut self, now: Instant) {
        while let Some((at, _)) = self.by_age.front() {
            let old = now.saturating_duration_since(*at) >= self.timeout;
            if !old && self.by_age.len() < LOGOUTS_KEPT {
                break;
            }
            let Some((at, logout)) = self.by_age.pop_front() else {
                break;
            };
            // Only the entry this one made: the same `sid` or `sub` heard
            // of again since is kept from then.
            match logout {
                Logout::Sid(sid) => {
                    if self.sids.get(&sid).is_some_and(|(when, _)| *when == at) {
                        self.sids.remove(&sid);
                    }
                }
                Logout::Sub(sub) => {
                    if self.subs.get(&sub).is_some_and(|(when, _)| *when == at) {
                        self.subs.remove(&sub);
                    }
                }
            }
        }
    }

    fn record(&mut self, sid: Option<&str>, sub: Option<&str>, iat: i64, now: Instant) {
        self.forget(now);
        match (sid, sub) {
            (Some(sid), sub) => {
                self.sids
                    .insert(sid.to_owned(), (now, sub.map(str::to_owned)));
                self.by_age.push_back((now, Logout::Sid(sid.to_owned())));
            }
            (None, Some(sub)) => {
                let latest = self.subs.get(sub).map_or(iat, |(_, i)| iat.max(*i));
                self.subs.insert(sub.to_owned(), (now, latest));
                self.by_age.push_back((now, Logout::Sub(sub.to_owned())));
            }
            (None, None) => {}
        }
    }

    /// Whether a logout heard of lately ended `session`.
    fn ended(&mut self, session: &Session, now: Instant) -> bool {
        self.forget(now);
        let by_sid = session.sid.as_ref().and_then(|sid| self.sids.get(sid));
        if by_sid.is_some_and(|(_, sub)| sub.as_ref().is_none_or(|sub| *sub == session.sub)) {
            return true;
        }
        self.subs
            .get(&session.sub)
            .is_some_and(|(_, iat)| session.issued_at <= iat.saturating_add(LOGOUT_CLOCK_LEEWAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sid: Option<&str>, sub: &str, signed_in: Instant) -> Session {
        Session {
            sid: sid.map(str::to_owned),
            sub: sub.to_owned(),
            issued_at: 1_000,
            name: sub.to_owned(),
            email: String::new(),
            access_token: Zeroizing::new("access".to_owned()),
            refresh_token: Some(Zeroizing::new("refresh".to_owned())),
            id_token: String::new(),
            signed_in,
            last_used: signed_in,
            refreshing: Arc::default(),
        }
    }

    #[test]
    fn a_sign_in_is_spent_once_within_the_timeout_and_the_record_is_bounded() {
        let t0 = Instant::now();
        let timeout = Limits::default().login_timeout;
        let mut spent = SpentLogins::new(&Limits::default());
        assert!(spent.spend("a", t0));
        assert!(!spent.spend("a", t0 + timeout - Duration::from_secs(1)));
        // Past the timeout its cookie has expired anyway.
        assert!(spent.spend("a", t0 + timeout));
        for i in 0..SPENT_KEPT + 10 {
            assert!(spent.spend(&format!("s{i}"), t0 + timeout));
            assert!(spent.by_age.len() <= SPENT_KEPT && spent.spent.len() <= SPENT_KEPT);
        }
        // The newest are remembered.
        assert!(!spent.spend(&format!("s{}", SPENT_KEPT + 9), t0 + timeout));
    }

    #[test]
    fn a_session_ends_its_lifetime_after_sign_in_and_is_swept_out() {
        let t0 = Instant::now();
        let lifetime = Limits::default().session_lifetime;
        // Used often enough: the lifetime alone ends it.
        let mut sessions = Sessions::new(&Limits {
            idle_timeout: lifetime,
            ..Limits::default()
        });
        assert!(sessions.insert("old".into(), session(Some("s1"), "alice", t0), t0));
        assert!(sessions.insert("other".into(), session(Some("s2"), "bob", t0), t0));
        let almost = t0 + lifetime - Duration::from_secs(1);
        assert!(sessions.get("old", almost).is_some());
        // At its lifetime it is gone, and looking it up drops it.
        assert!(sessions.get("old", t0 + lifetime).is_none());
        assert!(!sessions.by_id.contains_key("old"));
        // A sign-in sweeps out every session past its lifetime, looked up
        // or not.
        let later = t0 + lifetime;
        assert!(sessions.insert("new".into(), session(Some("s3"), "carol", later), later));
        assert!(!sessions.by_id.contains_key("other"));
        assert!(sessions.get("new", later).is_some());
    }

    #[test]
    fn an_unused_session_ends_at_its_idle_timeout_and_its_refresh_token_is_retired() {
        let t0 = Instant::now();
        let idle = Limits::default().idle_timeout;
        let mut sessions = Sessions::new(&Limits::default());
        assert!(sessions.insert("id".into(), session(None, "alice", t0), t0));
        // Each use starts the idle time again.
        let used = t0 + idle - Duration::from_secs(1);
        assert!(sessions.get("id", used).is_some());
        assert!(sessions
            .get("id", used + idle - Duration::from_secs(1))
            .is_some());
        assert!(sessions.take_retired().is_empty());
        assert!(sessions.get("id", used + 2 * idle).is_none());
        let retired = sessions.take_retired();
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].as_str(), "refresh");
        assert!(sessions.take_retired().is_empty(), "handed over once");
    }

    #[test]
    fn sessions_are_bounded_in_all_and_per_person_the_oldest_ending_first() {
        let t0 = Instant::now();
        let mut sessions = Sessions::new(&Limits {
            max_sessions: 10,
            sessions_per_person: 3,
            ..Limits::default()
        });
        let at = |i: u64| t0 + Duration::from_secs(i);
        // One person signing in again and again keeps their newest three.
        for i in 0..50 {
            assert!(sessions.insert(format!("m{i}"), session(None, "mallory", at(i)), at(i)));
        }
        let mut theirs: Vec<_> = sessions.by_id.keys().cloned().collect();
        theirs.sort();
        assert_eq!(theirs, ["m47", "m48", "m49"]);
        assert_eq!(sessions.take_retired().len(), 47);
        // Many people: the oldest sessions of all go past the bound.
        for i in 0..30 {
            let sub = format!("user{i}");
            assert!(sessions.insert(
                format!("u{i}"),
                session(None, &sub, at(100 + i)),
                at(100 + i),
            ));
            assert!(sessions.by_id.len() <= 10);
        }
        assert!(sessions.by_id.contains_key("u29") && !sessions.by_id.contains_key("u19"));
        assert!(!sessions.by_id.contains_key("m49"));
        // The bookkeeping stays bounded too.
        assert!(sessions.by_age.len() <= 20, "{}", sessions.by_age.len());
        assert!(sessions.by_sub.len() <= 10);
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
        assert!(sessions.insert("id".into(), session(None, "alice", t0), t0));
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
                assert!(sessions.insert(id.into(), session(sid, sub, t0), t0));
            }
            sessions
        };
        let mut sessions = fill();
        sessions.end(Some("s1"), None, 2_000, t0);
        assert_eq!(ids(&sessions), ["a2", "a3"]);
        let mut sessions = fill();
        sessions.end(None, Some("alice"), 2_000, t0);
        assert_eq!(ids(&sessions), ["b1"]);
        let mut sessions = fill();
        sessions.end(Some("s1"), Some("alice"), 2_000, t0);
        assert_eq!(ids(&sessions), ["a2", "a3", "b1"]);
        // By `sub` alone, a logout token issued before a sign-in (sent
        // late, or again) leaves that sign-in.
        let mut sessions = fill();
        sessions.end(None, Some("alice"), 1_000 - LOGOUT_CLOCK_LEEWAY - 1, t0);
        assert_eq!(ids(&sessions), ["a1", "a2", "a3", "b1"]);
        let mut sessions = fill();
        sessions.end(None, None, 2_000, t0);
        assert_eq!(
            ids(&sessions).len(),
            4,
            "a token naming no one ends nothing"
        );
    }

    #[test]
    fn a_sign_in_finishing_after_the_logout_that_ended_it_starts_no_session() {
        let t0 = Instant::now();
        let timeout = Limits::default().login_timeout;
        let mut sessions = Sessions::new(&Limits::default());
        let issued = |mut s: Session, iat: i64| {
            s.issued_at = iat;
            s
        };
        // The provider's session s1 ended before its sign-in got here.
        sessions.end(Some("s1"), None, 2_000, t0);
        assert!(!sessions.insert("a".into(), session(Some("s1"), "alice", t0), t0));
        assert!(sessions.by_id.is_empty());
        // Another session of the same person is not touched.
        assert!(sessions.insert("b".into(), session(Some("s2"), "alice", t0), t0));
        // A sid named with a sub: only that person's sign-in is refused.
        sessions.end(Some("s3"), Some("bob"), 2_000, t0);
        assert!(!sessions.insert("c".into(), session(Some("s3"), "bob", t0), t0));
        assert!(sessions.insert("d".into(), session(Some("s3"), "carol", t0), t0));
        // Every session of a person: ID tokens issued until the logout
        // token was (and the clocks' leeway after) are refused, later
        // ones start sessions.
        sessions.end(None, Some("dave"), 2_000, t0);
        let dave = |iat| issued(session(Some("s4"), "dave", t0), iat);
        let last_ended = 2_000 + LOGOUT_CLOCK_LEEWAY;
        assert!(!sessions.insert("e".into(), dave(1_999), t0));
        assert!(!sessions.insert("e".into(), dave(last_ended), t0));
        assert!(sessions.insert("e".into(), dave(last_ended + 1), t0));
        // An older logout token heard of later does not move it back.
        sessions.end(None, Some("dave"), 1_500, t0);
        assert!(!sessions.insert("f".into(), dave(1_999), t0));
        // A sign-in's time later the logouts are forgotten (its cookie
        // has expired by then).
        let later = t0 + timeout;
        assert!(sessions.insert("g".into(), session(Some("s1"), "alice", later), later));
        assert!(sessions.logouts.by_age.is_empty() && sessions.logouts.sids.is_empty());
        assert!(sessions.logouts.subs.is_empty());
    }

    #[test]
    fn logouts_remembered_are_bounded() {
        let t0 = Instant::now();
        let mut sessions = Sessions::new(&Limits::default());
        for i in 0..LOGOUTS_KEPT + 10 {
            sessions.end(Some(&format!("s{i}")), None, 2_000, t0);
            assert!(sessions.logouts.by_age.len() <= LOGOUTS_KEPT);
        }
        assert!(sessions.logouts.sids.len() <= LOGOUTS_KEPT);
        // The oldest went, the newest stay.
        assert!(sessions.insert("a".into(), session(Some("s0"), "alice", t0), t0));
        let newest = format!("s{}", LOGOUTS_KEPT + 9);
        assert!(!sessions.insert("b".into(), session(Some(&newest), "alice", t0), t0));
    }
}

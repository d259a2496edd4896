//! Revocation events and the set they make: what the revocation feed
//! carries, and which tokens it refuses.
//!
//! One definition serves both ends: the authorization server checks its
//! own tokens (introspection, userinfo, `/admin`) against a
//! [`RevocationSet`], and a [`crate::RevocationFeed`] keeps one at each
//! resource server, so a token the server calls inactive is refused
//! everywhere for the same reason.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The request header in which a subscriber names the event its cursor
/// stands on, beside `Last-Event-ID`: the [`event_digest`] of that event's
/// `data`. A server whose event at that id is another one (its log was
/// restored from a backup and has grown back past the cursor) starts the
/// subscriber over; a server that does not know the header ignores it.
pub const LAST_EVENT_DIGEST: &str = "tessera-last-event-digest";

/// What names one event of the feed: the first 8 bytes of the SHA-256 of
/// its `data` as sent, in lowercase hex.
pub fn event_digest(data: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One revocation, as the feed carries it (the `data` of a server-sent
/// event, as JSON). Every event says until when it matters (`until`,
/// seconds since the epoch): past it, no token it could refuse is still
/// valid, and it is forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Revocation {
    /// One access token, by `jti`.
    Token {
        /// The token's `jti`.
        jti: String,
        /// Its `exp` plus the longest leeway a verifier may allow.
        until: i64,
    },
    /// Every token about a user (`sub`) issued at or before a time: the
    /// user was disabled, deleted, or changed password.
    User {
        /// The user's `sub`.
        sub: String,
        /// Tokens whose `iat` is at or before this are refused.
        issued_before: i64,
        /// When the last such token expires.
        until: i64,
    },
    /// Every token issued to a client (`client_id`) at or before a time:
    /// the client was deleted or its secret rotated.
    Client {
        /// The client.
        client_id: String,
        /// Tokens whose `iat` is at or before this are refused.
        issued_before: i64,
        /// When the last such token expires.
        until: i64,
    },
    /// Every token of a sign-in session (`sid`): the person logged out,
    /// or the session was ended by an administrator.
    Session {
        /// The session's `sid`.
        sid: String,
        /// When the last such token expires.
        until: i64,
    },
    /// Every token signed with a key (`kid`): the key was revoked at
    /// once (it leaked), and whoever holds it could sign tokens of any
    /// `iat`. A token without a `kid` is matched by the key that verified
    /// it.
    Key {
        /// The key's `kid`.
        kid: String,
        /// When the last token it signed expires.
        until: i64,
    },
    /// Every access token minted from a refresh-token family (its
    /// `refresh_family` claim): the family was revoked (its refresh token
    /// revoked by its client, RFC 7009 §2.1, or presented again after it
    /// was rotated, which says it was stolen).
    Family {
        /// The family's id.
        family: String,
        /// When the last such token expires.
        until: i64,
    },
}

impl Revocation {
    /// Until when the event matters.
    pub fn until(&self) -> i64 {
        match self {
            Revocation::Token { until, .. }
            | Revocation::User { until, .. }
            | Revocation::Client { until, .. }
            | Revocation::Session { until, .. }
            | Revocation::Key { until, .. }
            | Revocation::Family { until, .. } => *until,
        }
    }
}

/// The claims of a token that revocation looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Revocable<'a> {
    /// `jti`.
    pub jti: Option<&'a str>,
    /// `sub`.
    pub sub: Option<&'a str>,
    /// `client_id` (RFC 9068).
    pub client_id: Option<&'a str>,
    /// `sid`.
    pub sid: Option<&'a str>,
    /// `iat`.
    pub iat: Option<i64>,
    /// The `kid` of the key that verified it (its header's, or the key
    /// chosen for a header without one).
    pub kid: Option<&'a str>,
    /// `refresh_family`: the refresh-token family it was minted from.
    pub family: Option<&'a str>,
}

impl<'a> Revocable<'a> {
    /// The claims of a JSON claims object.
    pub fn from_claims(claims: &'a Map<String, Value>) -> Revocable<'a> {
        let text = |name| claims.get(name).and_then(Value::as_str);
        Revocable {
            jti: text("jti"),
            sub: text("sub"),
            client_id: text("client_id"),
            sid: text("sid"),
            iat: claims.get("iat").and_then(Value::as_i64),
            kid: None,
            family: text("refresh_family"),
        }
    }

    /// These claims, verified by the key `kid`.
    pub fn signed_by(mut self, kid: Option<&'a str>) -> Revocable<'a> {
        self.kid = kid;
        self
    }
}

/// The live revocations, indexed for the check every request makes.
///
/// Each kind is a hash map from the claim it matches, so a check costs
/// at most six lookups whatever the set holds. Events for the same user
/// or client merge (the latest cut-off, the latest `until`).
#[derive(Clone, Debug, Default)]
pub struct RevocationSet {
    tokens: HashMap<Box<str>, i64>,
    users: HashMap<Box<str>, Cut>,
    clients: HashMap<Box<str>, Cut>,
    sessions: HashMap<Box<str>, i64>,
    keys: HashMap<Box<str>, i64>,
    families: HashMap<Box<str>, i64>,
}

/// Tokens issued at or before `before` are refused, until `until`.
#[derive(Clone, Copy, Debug)]
struct Cut {
    before: i64,
    until: i64,
}

impl Cut {
    fn merge(&mut self, before: i64, until: i64) {
        self.before = self.before.max(before);
        self.until = self.until.max(until);
    }
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Add `event`.
    pub fn insert(&mut self, event: &Revocation) {
        match event {
            Revocation::Token { jti, until } => {
                let kept = self.tokens.entry(jti.as_str().into()).or_insert(*until);
                *kept = (*kept).max(*until);
            }
            Revocation::User {
                sub,
                issued_before,
                until,
            } => cut(&mut self.users, sub, *issued_before, *until),
            Revocation::Client {
                client_id,
                issued_before,
                until,
            } => cut(&mut self.clients, client_id, *issued_before, *until),
            Revocation::Session { sid, until } => {
                let kept = self.sessions.entry(sid.as_str().into()).or_insert(*until);
                *kept = (*kept).max(*until);
            }
            Revocation::Key { kid, until } => {
                let kept = self.keys.entry(kid.as_str().into()).or_insert(*until);
                *kept = (*kept).max(*until);
            }
            Revocation::Family { family, until } => {
                let kept = self
                    .families
                    .entry(family.as_str().into())
                    .or_insert(*until);
                *kept = (*kept).max(*until);
            }
        }
    }

    /// Whether [`RevocationSet::insert`] of `event` would add an entry
    /// (rather than merge into one the set holds).
    pub fn would_grow(&self, event: &Revocation) -> bool {
        match event {
            Revocation::Token { jti, .. } => !self.tokens.contains_key(jti.as_str()),
            Revocation::User { sub, .. } => !self.users.contains_key(sub.as_str()),
            Revocation::Client { client_id, .. } => !self.clients.contains_key(client_id.as_str()),
            Revocation::Session { sid, .. } => !self.sessions.contains_key(sid.as_str()),
            Revocation::Key { kid, .. } => !self.keys.contains_key(kid.as_str()),
            Revocation::Family { family, .. } => !self.families.contains_key(family.as_str()),
        }
    }

    /// Forget what no longer matters at `now` (seconds since the epoch).
    pub fn prune(&mut self, now: i64) {
        self.tokens.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
        self.keys.retain(|_, until| *until > now);
        self.families.retain(|_, until| *until > now);
        self.users.retain(|_, c| c.until > now);
        self.clients.retain(|_, c| c.until > now);
    }

    /// How many entries the set holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
            + self.users.len()
            + self.clients.len()
            + self.sessions.len()
            + self.keys.len()
            + self.families.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest cut-off in force for user `sub` or client `client_id`
    /// (a token issued at or before it is refused).
    pub fn cut_off(&self, sub: Option<&str>, client_id: Option<&str>) -> Option<i64> {
        let users = sub.and_then(|s| self.users.get(s));
        let clients = client_id.and_then(|c| self.clients.get(c));
        users.into_iter().chain(clients).map(|c| c.before).max()
    }

    /// Whether a token with these claims is revoked. A token without
    /// `iat` counts as issued before any cut-off of its user or client.
    pub fn refuses(&self, token: Revocable<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let issued_by = |cuts: &HashMap<Box<str>, Cut>, key: Option<&str>| {
            key.and_then(|k| cuts.get(k))
                .is_some_and(|c| token.iat.is_none_or(|iat| iat <= c.before))
        };
        token.jti.is_some_and(|j| self.tokens.contains_key(j))
            || token.sid.is_some_and(|s| self.sessions.contains_key(s))
            || token.kid.is_some_and(|k| self.keys.contains_key(k))
            || token.family.is_some_and(|f| self.families.contains_key(f))
            || issued_by(&self.users, token.sub)
            || issued_by(&self.clients, token.client_id)
    }
}

fn cut(map: &mut HashMap<Box<str>, Cut>, key: &str, before: i64, until: i64) {
    match map.get_mut(key) {
        Some(c) => c.merge(before, until),
        None => {
            map.insert(key.into(), Cut { before, until });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_for_an_entry_held_merges_and_does_not_grow_the_set() {
        let mut set = RevocationSet::new();
        let token = Revocation::Token {
            jti: "j1".into(),
            until: 10,
        };
        assert!(set.would_grow(&token));
        set.insert(&token);
        let later = Revocation::Token {
            jti: "j1".into(),
            until: 20,
        };
        assert!(!set.would_grow(&later));
        set.insert(&later);
        assert_eq!(set.len(), 1);
        let user = Revocation::User {
            sub: "j1".into(),
            issued_before: 5,
            until: 20,
        };
        assert!(set.would_grow(&user), "another kind is another entry");
    }

    fn token<'a>(jti: &'a str, sub: &'a str, client: &'a str, iat: i64) -> Revocable<'a> {
        Revocable {
            jti: Some(jti),
            sub: Some(sub),
            client_id: Some(client),
            sid: None,
            iat: Some(iat),
            kid: Some("k1"),
            family: None,
        }
    }

    #[test]
    fn each_kind_refuses_what_it_names_and_nothing_else() {
        let mut set = RevocationSet::new();
        assert!(!set.refuses(token("j1", "alice", "web", 100)));
        set.insert(&Revocation::Token {
            jti: "j1".into(),
            until: 1000,
        });
        assert!(set.refuses(token("j1", "alice", "web", 100)));
        assert!(!set.refuses(token("j2", "alice", "web", 100)));

        set.insert(&Revocation::User {
            sub: "bob".into(),
            issued_before: 200,
            until: 1000,
        });
        assert!(
            set.refuses(token("j3", "bob", "web", 200)),
            "at the cut-off"
        );
        assert!(!set.refuses(token("j3", "bob", "web", 201)), "issued after");
        assert!(set.refuses(Revocable {
            sub: Some("bob"),
            ..Revocable::default()
        }));

        set.insert(&Revocation::Client {
            client_id: "batch".into(),
            issued_before: 300,
            until: 1000,
        });
        assert!(set.refuses(token("j4", "carol", "batch", 299)));
        assert!(!set.refuses(token("j4", "carol", "batch", 301)));
        assert!(
            !set.refuses(token("j4", "batch", "web", 100)),
            "sub is not client_id"
        );
        assert_eq!(set.cut_off(Some("bob"), Some("batch")), Some(300));
        assert_eq!(set.cut_off(Some("bob"), Some("web")), Some(200));
        assert_eq!(set.cut_off(Some("alice"), None), None);

        set.insert(&Revocation::Session {
            sid: "s1".into(),
            until: 1000,
        });
        let in_session = Revocable {
            sid: Some("s1"),
            ..token("j5", "dave", "web", 5000)
        };
        assert!(set.refuses(in_session));
        assert!(!set.refuses(Revocable {
            sid: Some("s2"),
            ..in_session
        }));

        // A revoked key: every token it verified, whatever its iat (who
        // holds the key can sign any), and no other.
        set.insert(&Revocation::Key {
            kid: "leaked".into(),
            until: 1000,
        });
        let forged = token("j6", "erin", "web", 9999).signed_by(Some("leaked"));
        assert!(set.refuses(forged));
        assert!(!set.refuses(forged.signed_by(Some("k2"))));
        assert!(!set.refuses(forged.signed_by(None)));
        // A revoked refresh-token family: the access tokens minted from
        // it, whatever their iat, and no other.
        set.insert(&Revocation::Family {
            family: "f1".into(),
            until: 1000,
        });
        let minted = Revocable {
            family: Some("f1"),
            ..token("j7", "frank", "web", 9999)
        };
        assert!(set.refuses(minted));
        assert!(!set.refuses(Revocable {
            family: Some("f2"),
            ..minted
        }));
        assert!(!set.refuses(Revocable {
            family: None,
            ..minted
        }));
        let text = r#"{"kind":"family","family":"f1","until":1000}"#;
        assert_eq!(
            serde_json::from_str::<Revocation>(text).unwrap(),
            Revocation::Family {
                family: "f1".into(),
                until: 1000
            }
        );
        set.prune(1000);
        assert!(!set.refuses(forged), "forgotten at until");
        assert!(!set.refuses(minted), "forgotten at until");
    }

    #[test]
    fn later_cut_offs_win_and_expired_events_go() {
        let mut set = RevocationSet::new();
        let user = |before, until| Revocation::User {
            sub: "alice".into(),
            issued_before: before,
            until,
        };
        set.insert(&user(200, 900));
        set.insert(&user(100, 500));
        assert!(set.refuses(token("j", "alice", "web", 150)));
        assert!(set.refuses(token("j", "alice", "web", 200)));
        set.insert(&Revocation::Token {
            jti: "old".into(),
            until: 400,
        });
        assert_eq!(set.len(), 2);
        set.prune(400);
        assert_eq!(set.len(), 1, "the token event ended at 400");
        set.prune(900);
        assert!(set.is_empty());
        assert!(!set.refuses(token("j", "alice", "web", 150)));
    }

    #[test]
    fn the_wire_format_is_tagged_json() {
        let event = Revocation::User {
            sub: "u1".into(),
            issued_before: 10,
            until: 20,
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"user","sub":"u1","issued_before":10,"until":20}"#
        );
        assert_eq!(serde_json::from_str::<Revocation>(&text).unwrap(), event);
        assert!(serde_json::from_str::<Revocation>(r#"{"kind":"everything"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Revocation>(r#"{"kind":"key","kid":"k9","until":20}"#).unwrap(),
            Revocation::Key {
                kid: "k9".into(),
                until: 20
            }
        );
    }
}

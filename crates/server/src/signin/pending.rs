//! Authorization requests waiting for the person to log in or consent,
//! carried by the browser, not stored: the validated request is sealed
//! (AES-256-GCM under a key derived from the master key for this alone,
//! so it can be neither read nor altered) into the `request` parameter of
//! the login and consent pages, with a digest of the browser's cookie (a
//! request works only in the browser that started it), the session once
//! the person has logged in, and the time it was made (it lasts
//! [`LIFETIME`]).
//!
//! Nothing is written before the person logs in, so calling the
//! authorization endpoint costs the server no storage, however often it
//! is called. A request is answered once: it carries a random `origin`,
//! kept when it is sealed again for the consent page, and the code issued
//! for it, or its refusal, records that origin's digest under a unique
//! index (`store::codes`), so neither its login page nor its consent page
//! can answer it a second time.

use serde::{Deserialize, Serialize};

use super::AuthorizationRequest;
use crate::secret::{digests_equal, token_digest, MasterKey};
use crate::Error;

/// How long a person has to log in and consent.
pub const LIFETIME: i64 = 30 * 60;

/// How long after an authorization request was first sealed any sealing
/// of it may still be answered (a page sealed again for the consent, or
/// started again past its [`LIFETIME`]): less than the hour an answer is
/// kept (`store::retention`, past the answer's writing, which comes after
/// the first sealing), so every sealing of a request answered once finds
/// it answered.
pub const LONGEST: i64 = 55 * 60;

/// The time a page started again has at least, or it is not offered.
const RESTART_LEAVES: i64 = 5 * 60;

/// How far ahead another instance's clock may be (seconds).
const INSTANCE_SKEW: i64 = 5;

/// What it is sealed under (the label, with the master key's key for
/// pending sign-ins: `MasterKey::pending`).
const LABEL: &str = "pending-authorization";

/// A pending request, opened.
#[derive(Clone)]
pub struct Pending {
    /// The sealed form: the pages' `request` parameter.
    pub id: String,
    /// The validated request.
    pub request: AuthorizationRequest,
    /// The session, once the person has logged in.
    pub sid: Option<String>,
    /// The same for every sealing of one authorization request.
    pub origin: String,
    /// Whether the session's login was made for this request (it then
    /// answers `prompt=login` and any `max_age`).
    pub fresh_login: bool,
    /// When the request was first sealed (every sealing of it keeps it).
    pub started: i64,
}

/// Without the sealed form, which with the browser's cookie answers the
/// request.
impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("request", &self.request)
            .field("sid", &self.sid)
            .field("fresh_login", &self.fresh_login)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// What the code that answers this request records.
    pub fn answer(&self) -> Vec<u8> {
        token_digest(&self.origin)
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    request: AuthorizationRequest,
    origin: String,
    /// SHA-256 of the browser cookie, base64url.
    browser: String,
    sid: Option<String>,
    /// See [`Pending::fresh_login`].
    #[serde(default)]
    fresh_login: bool,
    made: i64,
    /// See [`Pending::started`]; `made` in what was sealed before it
    /// was.
    #[serde(default)]
    started: Option<i64>,
}

impl Sealed {
    fn started(&self) -> i64 {
        self.started.unwrap_or(self.made)
    }
}

/// Seal `request` for the browser whose cookie is `browser`, in session
/// `sid` once the person has logged in (`fresh_login`: for this request);
/// `continues` is the sealing of the same request this one follows (its
/// origin and start kept; `None`: a new request).
pub fn seal(
    master: &MasterKey,
    browser: &str,
    request: &AuthorizationRequest,
    sid: Option<(&str, bool)>,
    continues: Option<&Pending>,
    now: i64,
) -> Result<String, Error> {
    let (origin, started) = match continues {
        Some(p) => (p.origin.clone(), p.started),
        None => (crate::secret::random_id()?, now),
    };
    let sealed = Sealed {
        started: Some(started),
        origin,
        request: request.clone(),
        browser: tessera_jose::b64::encode(token_digest(browser)),
        sid: sid.map(|(sid, _)| sid.to_owned()),
        fresh_login: sid.is_some_and(|(_, fresh)| fresh),
        made: now,
    };
    let json = serde_json::to_vec(&sealed).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(tessera_jose::b64::encode(
        master.pending().seal(LABEL, &json)?,
    ))
}

/// When `id` was sealed here for the browser whose cookie is `browser`
/// and is past its [`LIFETIME`] (the person took too long, which the page
/// says rather than blame another browser): the same request sealed
/// afresh, to start again from the login (without its session: whoever
/// left a consent page that long logs in again), answered once with the
/// first (the same origin). It is the request the application made, for
/// the browser that made it; starting it again is what going back to the
/// application and signing in would do, without the dead end. `None`
/// for any other `id`.
pub fn restarted(
    master: &MasterKey,
    id: &str,
    browser: &str,
    now: i64,
) -> Result<Option<String>, Error> {
    let Some(opened) = unsealed(master, id, browser) else {
        return Ok(None);
    };
    // One sealed before requests carried their start cannot say how old
    // the request is.
    let Some(started) = opened.started else {
        return Ok(None);
    };
    // Only a page past its own lifetime, and only while the request can
    // still be told answered (else one refused, `access_denied`, could
    // get a code after all), with time left to sign in.
    if now.saturating_sub(opened.made) < LIFETIME
        || now.saturating_sub(started) >= LONGEST - RESTART_LEAVES
    {
        return Ok(None);
    }
    let first = Pending {
        id: String::new(),
        request: opened.request,
        sid: None,
        origin: opened.origin,
        fresh_login: false,
        started,
    };
    seal(master, browser, &first.request, None, Some(&first), now).map(Some)
}

/// `id` sealed here for the browser whose cookie is `browser`, of any age.
fn unsealed(master: &MasterKey, id: &str, browser: &str) -> Option<Sealed> {
    let sealed = tessera_jose::b64::decode(id)?;
    let json = master.pending().open(LABEL, &sealed).ok()?;
    let opened: Sealed = serde_json::from_slice(&json).ok()?;
    digests_equal(
        opened.browser.as_bytes(),
        tessera_jose::b64::encode(token_digest(browser)).as_bytes(),
    )
    .then_some(opened)
}

/// Open `id` for the browser whose cookie is `browser`: `None` when it was
/// not sealed here, has expired, or belongs to another browser.
pub fn open(master: &MasterKey, id: &str, browser: &str, now: i64) -> Option<Pending> {
    let opened = unsealed(master, id, browser)?;
    // Sealed "in the future" by an instance whose clock is a little ahead
    // (docs/server.md asks for clocks within 2 s) is fresh too.
    let started = opened.started();
    let fresh = now.saturating_add(INSTANCE_SKEW) >= opened.made
        && now.saturating_sub(opened.made) < LIFETIME
        && now.saturating_sub(started) < LONGEST;
    fresh.then(|| Pending {
        id: id.to_owned(),
        request: opened.request,
        sid: opened.sid,
        origin: opened.origin,
        fresh_login: opened.fresh_login,
        started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{random_token, MasterKeySource};
    use crate::signin::{Prompt, ResponseMode};

    fn key() -> MasterKey {
        MasterKey::load_existing(&MasterKeySource::Value(random_token().unwrap()))
            .unwrap()
            .unwrap()
    }

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: "c".into(),
            redirect_uri: "https://a/cb".into(),
            response_mode: ResponseMode::Query,
            state: Some("s".into()),
            scope: "openid".into(),
            nonce: None,
            code_challenge: "x".repeat(43),
            prompt: Prompt::default(),
            max_age: None,
            login_hint: None,
            hint_subject: Some("u".into()),
            hint_unconfirmed: false,
        }
    }

    #[test]
    fn a_pending_request_opens_only_in_its_browser_in_time_and_unaltered() {
        let master = key();
        let (mine, theirs) = ("a".repeat(43), "b".repeat(43));
        let id = seal(
            &master,
            &mine,
            &request(),
            Some(("sid-1", false)),
            None,
            1000,
        )
        .unwrap();
        let opened = open(&master, &id, &mine, 1010).unwrap();
        assert_eq!(opened.request, request());
        let shown = format!("{opened:?}");
        assert!(!shown.contains(&id) && shown.contains("sid-1"), "{shown}");
        assert_eq!(opened.sid.as_deref(), Some("sid-1"));
        assert!(!opened.fresh_login);
        assert!(
            open(&master, &id, &theirs, 1010).is_none(),
            "another browser"
        );
        assert!(
            open(&master, &id, &mine, 1000 + LIFETIME).is_none(),
            "expired"
        );
        // Sealed by an instance whose clock is a little ahead: fresh; far
        // ahead: not.
        assert!(
            open(&master, &id, &mine, 998).is_some(),
            "a clock 2 s ahead"
        );
        assert!(open(&master, &id, &mine, 900).is_none(), "from the future");
        let other = key();
        assert!(
            open(&other, &id, &mine, 1010).is_none(),
            "another server's key"
        );
        let mut altered = id.clone().into_bytes();
        let last = altered.len() - 5;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(open(&master, &altered, &mine, 1010).is_none(), "altered");
        assert!(open(&master, "not sealed", &mine, 1010).is_none());
        // The same request sealed under the key that seals signing keys
        // is not a pending sign-in.
        let plain = master
            .pending()
            .open(LABEL, &tessera_jose::b64::decode(&id).unwrap())
            .unwrap();
        let by_master = tessera_jose::b64::encode(master.seal(LABEL, &plain).unwrap());
        assert!(
            open(&master, &by_master, &mine, 1010).is_none(),
            "master key"
        );
        // Sealed again for consent: another token, the same request.
        let again = seal(
            &master,
            &mine,
            &request(),
            Some(("sid-1", true)),
            Some(&opened),
            1020,
        )
        .unwrap();
        assert_ne!(again, id);
        assert!(open(&master, &again, &mine, 1030).unwrap().fresh_login);
        assert_eq!(
            open(&master, &again, &mine, 1030).unwrap().answer(),
            opened.answer()
        );
        let other_request = seal(&master, &mine, &request(), None, None, 1020).unwrap();
        assert_ne!(
            open(&master, &other_request, &mine, 1030).unwrap().answer(),
            opened.answer()
        );
    }

    /// Every sealing of a request lives within `LONGEST` of the first, so
    /// that its answer, kept an hour, is seen by all of them; a page past
    /// its lifetime is started again only within that, with time left.
    #[test]
    fn a_request_is_answered_within_its_longest_however_often_it_is_sealed() {
        let master = key();
        let mine = random_token().unwrap();
        let t0 = 10_000;
        let first = seal(&master, &mine, &request(), None, None, t0).unwrap();
        let opened = open(&master, &first, &mine, t0 + 10).unwrap();
        assert_eq!(opened.started, t0);
        // Not past its own lifetime: nothing to start again.
        assert!(restarted(&master, &first, &mine, t0 + 10)
            .unwrap()
            .is_none());
        // Past it: started again, the same request and origin, the same start.
        let late = t0 + LIFETIME + 60;
        assert!(open(&master, &first, &mine, late).is_none());
        let again = restarted(&master, &first, &mine, late).unwrap().unwrap();
        let reopened = open(&master, &again, &mine, late).unwrap();
        assert_eq!(reopened.answer(), opened.answer());
        assert_eq!(reopened.started, t0);
        assert_eq!(reopened.sid, None);
        // A consent page sealed from it keeps the start too, and neither
        // opens once `LONGEST` has passed since the first sealing, however
        // fresh each is.
        let consent = seal(
            &master,
            &mine,
            &request(),
            Some(("s", true)),
            Some(&reopened),
            late,
        )
        .unwrap();
        let end = t0 + LONGEST;
        assert!(open(&master, &consent, &mine, end - 1).is_some());
        assert!(open(&master, &consent, &mine, end).is_none());
        assert!(open(&master, &again, &mine, end).is_none());
        // Nor is a page started again when too little of it would be left.
        assert!(restarted(&master, &again, &mine, end - RESTART_LEAVES)
            .unwrap()
            .is_none());
        assert!(restarted(&master, &first, &mine, end - RESTART_LEAVES)
            .unwrap()
            .is_none());
        assert!(restarted(&master, &first, &mine, end - RESTART_LEAVES - 1)
            .unwrap()
            .is_some());
        // Another browser's page is never started again.
        let theirs = random_token().unwrap();
        assert!(restarted(&master, &first, &theirs, late).unwrap().is_none());
    }
}

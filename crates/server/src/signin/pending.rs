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

/// How far ahead another instance's clock may be (seconds).
const INSTANCE_SKEW: i64 = 5;

/// What it is sealed under (the label, with the master key's key for
/// pending sign-ins: `MasterKey::pending`).
const LABEL: &str = "pending-authorization";

/// A pending request, opened.
#[derive(Clone, Debug)]
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
}

/// Seal `request` for the browser whose cookie is `browser`, in session
/// `sid` once the person has logged in (`fresh_login`: for this request);
/// `origin` continues a request sealed before (`None`: a new one).
pub fn seal(
    master: &MasterKey,
    browser: &str,
    request: &AuthorizationRequest,
    sid: Option<(&str, bool)>,
    origin: Option<&str>,
    now: i64,
) -> Result<String, Error> {
    let origin = match origin {
        Some(o) => o.to_owned(),
        None => crate::secret::random_id()?,
    };
    let sealed = Sealed {
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
    if now.saturating_sub(opened.made) < LIFETIME {
        return Ok(None);
    }
    seal(
        master,
        browser,
        &opened.request,
        None,
        Some(&opened.origin),
        now,
    )
    .map(Some)
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
    let fresh = now.saturating_add(INSTANCE_SKEW) >= opened.made
        && now.saturating_sub(opened.made) < LIFETIME;
    fresh.then(|| Pending {
        id: id.to_owned(),
        request: opened.request,
        sid: opened.sid,
        origin: opened.origin,
        fresh_login: opened.fresh_login,
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
            Some(&opened.origin),
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
}

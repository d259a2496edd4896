//! JWT claims (RFC 7519 §4): the registered ones typed, the rest the
//! caller's own serde type; and the verified token that carries them.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::json::scan::{Kind, Member};
use crate::jws::Header;
use crate::time::NumericDate;
use crate::Error;

/// A verified, validated token.
#[derive(Clone, Debug, PartialEq)]
pub struct Token<T> {
    /// The protected header. Shared: an issuer signs its tokens under one
    /// header, byte for byte, so a verifying thread keeps the last few it
    /// parsed and each token it verifies points at the one it has instead
    /// of carrying a copy. Read it as a `Header` through the `Arc`;
    /// [`Arc::unwrap_or_clone`] gives one of your own.
    pub header: Arc<Header>,
    /// The claims.
    pub claims: Claims<T>,
}

/// The `aud` claim: one audience or several (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single string.
    One(String),
    /// An array of strings.
    Many(Vec<String>),
}

impl Audience {
    /// Every audience named.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Audience::One(one) => std::slice::from_ref(one),
            Audience::Many(many) => many,
        };
        slice.iter().map(String::as_str)
    }

    /// True if `aud` is one of them.
    pub fn contains(&self, aud: &str) -> bool {
        self.iter().any(|a| a == aud)
    }
}

impl From<&str> for Audience {
    fn from(aud: &str) -> Audience {
        Audience::One(aud.to_owned())
    }
}

impl From<String> for Audience {
    fn from(aud: String) -> Audience {
        Audience::One(aud)
    }
}

impl From<Vec<String>> for Audience {
    fn from(auds: Vec<String>) -> Audience {
        Audience::Many(auds)
    }
}

/// For tokens that carry only registered claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoCustomClaims {}

/// A JWT claims set: the registered claims, typed, and the caller's own
/// claims `T` (any serde type; it sees the whole payload object).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Claims<T = NoCustomClaims> {
    /// `iss`: who issued the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `sub`: whom the token is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `aud`: whom the token is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// `exp`: when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<NumericDate>,
    /// `nbf`: when it starts to be valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<NumericDate>,
    /// `iat`: when it was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<NumericDate>,
    /// `jti`: its unique id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub custom: T,
}

impl Claims<NoCustomClaims> {
    /// Empty claims, to be filled with the builder methods.
    pub fn new() -> Claims<NoCustomClaims> {
        Claims::default()
    }
}

impl<T> Claims<T> {
    /// Claims carrying the caller's own claims `custom`.
    pub fn with_custom(custom: T) -> Claims<T> {
        Claims {
            iss: None,
            sub: None,
            aud: None,
            exp: None,
            nbf: None,
            iat: None,
            jti: None,
            custom,
        }
    }

    /// Set `iss`.
    #[must_use]
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = Some(iss.into());
        self
    }

    /// Set `sub`.
    #[must_use]
    pub fn subject(mut self, sub: impl Into<String>) -> Self {
        self.sub = Some(sub.into());
        self
    }

    /// Set `aud`.
    #[must_use]
    pub fn audience(mut self, aud: impl Into<Audience>) -> Self {
        self.aud = Some(aud.into());
        self
    }

    /// Set `iat` to now and `exp` to now + `ttl`.
    #[must_use]
    pub fn valid_for(mut self, ttl: Duration) -> Self {
        let now = NumericDate::now();
        self.iat = Some(now);
        self.exp = Some(now.plus(ttl));
        self
    }

    /// Set `exp`.
    #[must_use]
    pub fn expires_at(mut self, exp: NumericDate) -> Self {
        self.exp = Some(exp);
        self
    }

    /// Set `nbf`.
    #[must_use]
    pub fn not_before(mut self, nbf: NumericDate) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// Set `iat`.
    #[must_use]
    pub fn issued_at(mut self, iat: NumericDate) -> Self {
        self.iat = Some(iat);
        self
    }

    /// Set `jti`.
    #[must_use]
    pub fn jwt_id(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// Set `jti` to 128 random bits, base64url.
    pub fn random_jwt_id(mut self) -> Result<Self, Error> {
        self.jti = Some(super::random_id()?);
        Ok(self)
    }
}

/// A token verified by [`crate::jwt::verify_borrowed`]: the header, and
/// claims whose strings borrow from the decoded payload.
#[derive(Clone, Debug, PartialEq)]
pub struct BorrowedToken<'b, T> {
    /// The protected header (shared, as in [`Token`]).
    pub header: Arc<Header>,
    /// The claims.
    pub claims: BorrowedClaims<'b, T>,
}

/// [`Claims`] whose registered strings point into the decoded payload: a
/// string written without escapes is borrowed, one with escapes (`\n`,
/// `\u00e9`, `\/`) is owned, unescaped, and so are the strings of an
/// `aud` array. Read from a payload only, never signed:
/// [`BorrowedClaims::into_owned`] gives [`Claims`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BorrowedClaims<'b, T> {
    /// `iss`.
    pub iss: Option<Cow<'b, str>>,
    /// `sub`.
    pub sub: Option<Cow<'b, str>>,
    /// `aud`.
    pub aud: Option<AudienceRef<'b>>,
    /// `exp`.
    pub exp: Option<NumericDate>,
    /// `nbf`.
    pub nbf: Option<NumericDate>,
    /// `iat`.
    pub iat: Option<NumericDate>,
    /// `jti`.
    pub jti: Option<Cow<'b, str>>,
    /// Everything else, as the caller's type read it.
    pub custom: T,
}

/// `aud` of [`BorrowedClaims`]: a string, or an array of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudienceRef<'b> {
    /// A single string.
    One(Cow<'b, str>),
    /// An array of strings.
    Many(Vec<Cow<'b, str>>),
}

impl AudienceRef<'_> {
    /// Every audience named.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[Cow<'_, str>] = match self {
            AudienceRef::One(one) => std::slice::from_ref(one),
            AudienceRef::Many(many) => many,
        };
        slice.iter().map(|a| &**a)
    }

    /// True if `aud` is one of them.
    pub fn contains(&self, aud: &str) -> bool {
        self.iter().any(|a| a == aud)
    }

    /// The same, owning its strings.
    pub fn into_owned(self) -> Audience {
        match self {
            AudienceRef::One(one) => Audience::One(one.into_owned()),
            AudienceRef::Many(many) => {
                Audience::Many(many.into_iter().map(Cow::into_owned).collect())
            }
        }
    }
}

impl<T> BorrowedClaims<'_, T> {
    /// The same claims, the registered ones owning their strings (`T` is
    /// kept as it is).
    pub fn into_owned(self) -> Claims<T> {
        Claims {
            iss: self.iss.map(Cow::into_owned),
            sub: self.sub.map(Cow::into_owned),
            aud: self.aud.map(AudienceRef::into_owned),
            exp: self.exp,
            nbf: self.nbf,
            iat: self.iat,
            jti: self.jti.map(Cow::into_owned),
            custom: self.custom,
        }
    }
}

/// The registered claims, as read from a payload.
pub(crate) type Registered<'a> = BorrowedClaims<'a, ()>;

impl<'a> BorrowedClaims<'a, ()> {
    /// Keep `member` if it is a registered claim. A registered claim of
    /// another JSON type (including `null`) is an
    /// [`Error::InvalidClaimType`], never "absent".
    pub(crate) fn read(&mut self, member: &Member<'a>) -> Result<(), Error> {
        match &*member.name {
            "iss" => self.iss = Some(string(member, "iss")?),
            "sub" => self.sub = Some(string(member, "sub")?),
            "jti" => self.jti = Some(string(member, "jti")?),
            "aud" => self.aud = Some(audience(member)?),
            "exp" => self.exp = Some(date(member, "exp", f64::floor)?),
            // A fractional "not before" is not reached until its
            // fraction is: rounded up, where the other dates round down.
            "nbf" => self.nbf = Some(date(member, "nbf", f64::ceil)?),
            "iat" => self.iat = Some(date(member, "iat", f64::floor)?),
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn with_custom<T>(self, custom: T) -> BorrowedClaims<'a, T> {
        BorrowedClaims {
            iss: self.iss,
            sub: self.sub,
            aud: self.aud,
            exp: self.exp,
            nbf: self.nbf,
            iat: self.iat,
            jti: self.jti,
            custom,
        }
    }
}

fn wrong_type(claim: &str, expected: &'static str) -> Error {
    Error::InvalidClaimType {
        claim: claim.to_owned(),
        expected,
    }
}

fn string<'a>(member: &Member<'a>, claim: &str) -> Result<Cow<'a, str>, Error> {
    member.as_str().ok_or_else(|| wrong_type(claim, "a string"))
}

fn audience<'a>(member: &Member<'a>) -> Result<AudienceRef<'a>, Error> {
    let wrong = || wrong_type("aud", "a string or an array of strings");
    match member.kind {
        Kind::String { .. } => string(member, "aud").map(AudienceRef::One),
        // The scanner accepted the text: any failure is an element that
        // is not a string.
        Kind::Array => serde_json::from_str::<Vec<String>>(member.raw)
            .map(|many| AudienceRef::Many(many.into_iter().map(Cow::Owned).collect()))
            .map_err(|_| wrong()),
        _ => Err(wrong()),
    }
}

/// A NumericDate for validation: an integer exactly, anything else as a
/// double, made whole seconds by `round` (down for `exp` and `iat`, as
/// `NumericDate`'s own `Deserialize` gives the caller's type; up for
/// `nbf`, so a fractional "not before" is never reached early: there the
/// caller's type may see one second less than validation used).
fn date(member: &Member<'_>, claim: &str, round: fn(f64) -> f64) -> Result<NumericDate, Error> {
    let seconds = match member.kind {
        Kind::Number { integer: true } => member.raw.parse::<i64>().ok(),
        Kind::Number { integer: false } => serde_json::from_str::<f64>(member.raw)
            .ok()
            .and_then(|v| NumericDate::seconds_from_f64(round(v))),
        _ => None,
    };
    seconds
        .map(NumericDate::from_seconds)
        .ok_or_else(|| wrong_type(claim, "a number of seconds since the epoch (NumericDate)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Registered<'_>, Error> {
        super::super::read::registered(text.as_bytes(), 8, &[]).map(|r| r.registered)
    }

    #[test]
    fn registered_claims_are_typed() {
        let r = read(r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10,"nbf":5.5,"iat":1,"jti":"j","x":{"y":[1]}}"#).unwrap();
        assert_eq!(r.iss.as_deref(), Some("i"));
        assert_eq!(r.aud, Some(AudienceRef::Many(vec!["a".into(), "b".into()])));
        assert_eq!(r.exp, Some(NumericDate::from_seconds(10)));
        assert_eq!(r.nbf, Some(NumericDate::from_seconds(6)), "rounded up");
        let single = read(r#"{"aud":"a"}"#).unwrap();
        assert_eq!(single.aud, Some(AudienceRef::One("a".into())));
    }

    #[test]
    fn strings_borrow_unless_written_with_escapes() {
        let r = read(r#"{"iss":"https:\/\/i","sub":"s","aud":"a","jti":"\u006a"}"#).unwrap();
        assert!(matches!(r.iss, Some(Cow::Owned(ref i)) if i == "https://i"));
        assert!(matches!(r.sub, Some(Cow::Borrowed("s"))));
        assert!(matches!(r.aud, Some(AudienceRef::One(Cow::Borrowed("a")))));
        assert!(matches!(r.jti, Some(Cow::Owned(ref j)) if j == "j"));
        let owned = r.with_custom(NoCustomClaims {}).into_owned();
        assert_eq!(owned.iss.as_deref(), Some("https://i"));
        assert_eq!(owned.aud, Some(Audience::One("a".into())));
        assert_eq!(owned.jti.as_deref(), Some("j"));
    }

    #[test]
    fn wrong_types_are_errors_never_absent() {
        for (text, claim) in [
            (r#"{"exp":"123"}"#, "exp"),
            (r#"{"exp":null}"#, "exp"),
            (r#"{"exp":true}"#, "exp"),
            (r#"{"exp":[1]}"#, "exp"),
            (r#"{"exp":1e400}"#, "exp"),
            (r#"{"nbf":{}}"#, "nbf"),
            (r#"{"iat":"now"}"#, "iat"),
            (r#"{"iss":1}"#, "iss"),
            (r#"{"sub":null}"#, "sub"),
            (r#"{"jti":["a"]}"#, "jti"),
            (r#"{"aud":1}"#, "aud"),
            (r#"{"aud":["a",1]}"#, "aud"),
            (r#"{"aud":[["a"]]}"#, "aud"),
            (r#"{"aud":null}"#, "aud"),
        ] {
            match read(text) {
                Err(Error::InvalidClaimType { claim: c, .. }) => assert_eq!(c, claim, "{text}"),
                Err(Error::Json { .. }) if text.contains("1e400") => {}
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn payload_must_be_a_sound_object() {
        assert!(matches!(
            read(r#"{"exp":1,"exp":2}"#),
            Err(Error::DuplicateMember { .. })
        ));
        assert!(matches!(
            read(r#"{"a":{"b":1,"b":2}}"#),
            Err(Error::DuplicateMember { .. })
        ));
        assert!(matches!(read(r#"[1]"#), Err(Error::Json { .. })));
        assert!(matches!(read("foo"), Err(Error::Json { .. })));
        let required = ["jti".to_owned(), "cnf".to_owned(), "scope".to_owned()];
        let read =
            super::super::read::registered(br#"{"scope":"a","jti":"x"}"#, 8, &required).unwrap();
        assert_eq!(read.found, vec![true, false, true]);
    }

    #[test]
    fn claims_serialize_with_custom_members() {
        #[derive(Serialize)]
        struct Extra {
            scope: String,
        }
        let claims = Claims::with_custom(Extra {
            scope: "read".into(),
        })
        .issuer("https://issuer")
        .audience("api")
        .expires_at(NumericDate::from_seconds(100));
        let text = serde_json::to_string(&claims).unwrap();
        assert_eq!(
            text,
            r#"{"iss":"https://issuer","aud":"api","exp":100,"scope":"read"}"#
        );
    }
}

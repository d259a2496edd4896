//! What a verified token's claims must satisfy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::claims::Registered;
use crate::alg::Algorithm;
use crate::jws::{Header, Limits, VerifyOptions};
use crate::time::{Clock, NumericDate, SystemClock};
use crate::Error;

/// The largest leeway accepted: clock skew beyond five minutes is a broken
/// clock, not skew, and a large leeway silently extends every token.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// A custom check over the payload object; `Err` carries the reason.
pub(crate) type CheckFn = dyn Fn(&Map<String, Value>) -> Result<(), String> + Send + Sync;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// The caller has not said: verification refuses to run.
    Unset,
    /// The caller explicitly accepts any value (or none).
    Any,
    /// One of these.
    OneOf(Vec<String>),
}

/// Validation rules for JWT claims, as a builder that starts secure.
///
/// - The expected issuer and audience must be stated: call
///   [`issuer`](Validation::issuer) / [`audience`](Validation::audience), or
///   opt out explicitly with [`any_issuer`](Validation::any_issuer) /
///   [`any_audience`](Validation::any_audience). Verifying with neither is
///   an [`Error::InvalidConfig`], so a forgotten check cannot pass silently.
/// - `exp` is required; `nbf` and `iat` are checked when present (`iat`
///   may not be in the future).
/// - Leeway is 60 s by default and at most [`MAX_LEEWAY`].
/// - Size limits and JSON depth are bounded ([`Limits::default`]).
#[derive(Clone)]
pub struct Validation {
    jws: VerifyOptions,
    issuer: Expect,
    audience: Expect,
    subject: Option<String>,
    typ: Option<String>,
    require_exp: bool,
    leeway: Duration,
    max_age: Option<Duration>,
    required: Vec<String>,
    checks: Vec<(String, Arc<CheckFn>)>,
    clock: Arc<dyn Clock>,
}

impl Default for Validation {
    fn default() -> Validation {
        Validation::new()
    }
}

impl Validation {
    /// Secure defaults; the issuer and audience still have to be stated.
    pub fn new() -> Validation {
        Validation {
            jws: VerifyOptions::default(),
            issuer: Expect::Unset,
            audience: Expect::Unset,
            subject: None,
            typ: None,
            require_exp: true,
            leeway: Duration::from_secs(60),
            max_age: None,
            required: Vec::new(),
            checks: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Require `iss` to be `issuer` (call again to accept several).
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Validation {
        push(&mut self.issuer, issuer.into());
        self
    }

    /// Accept any issuer, or none. An explicit opt-out.
    #[must_use]
    pub fn any_issuer(mut self) -> Validation {
        self.issuer = Expect::Any;
        self
    }

    /// Require `aud` to include `audience` (call again to accept several).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Validation {
        push(&mut self.audience, audience.into());
        self
    }

    /// Accept any audience, or none. An explicit opt-out.
    #[must_use]
    pub fn any_audience(mut self) -> Validation {
        self.audience = Expect::Any;
        self
    }

    /// Require `sub` to be `subject`.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Validation {
        self.subject = Some(subject.into());
        self
    }

    /// Require the header `typ` to be `typ` (compared as media types:
    /// case-insensitively, with an optional `application/` prefix), for
    /// example `at+jwt` for RFC 9068 access tokens.
    #[must_use]
    pub fn typ(mut self, typ: impl Into<String>) -> Validation {
        self.typ = Some(typ.into());
        self
    }

    /// Accept tokens without `exp`. Tokens that never expire are rarely
    /// what anyone wants; this has to be asked for.
    #[must_use]
    pub fn allow_missing_exp(mut self) -> Validation {
        self.require_exp = false;
        self
    }

    /// Clock-skew allowance for `exp`, `nbf`, `iat` and the maximum age.
    /// More than [`MAX_LEEWAY`] makes verification fail with
    /// [`Error::InvalidConfig`].
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Validation {
        self.leeway = leeway;
        self
    }

    /// Refuse tokens issued longer ago than `age` (requires `iat`).
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Validation {
        self.max_age = Some(age);
        self
    }

    /// Require the claim `name` to be present (registered or custom),
    /// with a value other than `null`: a claim written as `null` is read
    /// as absent by an `Option` field, so it counts as missing here too.
    #[must_use]
    pub fn require(mut self, name: impl Into<String>) -> Validation {
        let name = name.into();
        // Once is enough: each required name is looked for once.
        if !self.required.contains(&name) {
            self.required.push(name);
        }
        self
    }

    /// Run a custom check over the verified payload object.
    #[must_use]
    pub fn check<F>(mut self, name: impl Into<String>, check: F) -> Validation
    where
        F: Fn(&Map<String, Value>) -> Result<(), String> + Send + Sync + 'static,
    {
        self.checks.push((name.into(), Arc::new(check)));
        self
    }

    /// Use `clock` for "now" (tests use [`crate::FixedClock`]).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Validation {
        self.clock = Arc::new(clock);
        self
    }

    /// Accept only these signature algorithms.
    #[must_use]
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Validation {
        self.jws = self.jws.algorithms(algs);
        self
    }

    /// Replace the size and depth limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Validation {
        self.jws = self.jws.with_limits(limits);
        self
    }

    /// Declare `crit` header extensions the caller checks itself.
    #[must_use]
    pub fn critical<I, S>(mut self, names: I) -> Validation
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.jws = self.jws.critical(names);
        self
    }

    pub(crate) fn jws_options(&self) -> &VerifyOptions {
        &self.jws
    }

    pub(crate) fn required_claims(&self) -> &[String] {
        &self.required
    }

    pub(crate) fn has_checks(&self) -> bool {
        !self.checks.is_empty()
    }

    /// Refuse to verify with options that would silently skip a check.
    pub(crate) fn check_config(&self) -> Result<(), Error> {
        if self.issuer == Expect::Unset {
            return Err(Error::InvalidConfig {
                reason: "no expected issuer: call .issuer(..) or, deliberately, .any_issuer()"
                    .to_owned(),
            });
        }
        if self.audience == Expect::Unset {
            return Err(Error::InvalidConfig {
                reason:
                    "no expected audience: call .audience(..) or, deliberately, .any_audience()"
                        .to_owned(),
            });
        }
        if self.leeway > MAX_LEEWAY {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "leeway of {}s is over the maximum of {}s",
                    self.leeway.as_secs(),
                    MAX_LEEWAY.as_secs()
                ),
            });
        }
        Ok(())
    }

    /// The header's `typ` check.
    pub(crate) fn validate_header(&self, header: &Header) -> Result<(), Error> {
        if let Some(expected) = &self.typ {
            let ok = header
                .typ
                .as_deref()
                .is_some_and(|found| media_type_eq(found, expected));
            if !ok {
                return Err(Error::InvalidType {
                    expected: expected.clone(),
                    found: header.typ.clone(),
                });
            }
        }
        Ok(())
    }

    /// Time, issuer, audience, subject and required-claim checks.
    pub(crate) fn validate_claims(
        &self,
        claims: &Registered<'_>,
        found_required: &[bool],
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let leeway = self.leeway.as_secs();
        let lee = i64::try_from(leeway).unwrap_or(i64::MAX);
        match claims.exp {
            Some(exp) if now.seconds() >= exp.seconds().saturating_add(lee) => {
                return Err(Error::Expired { exp, now, leeway });
            }
            None if self.require_exp => {
                return Err(Error::MissingClaim {
                    claim: "exp".to_owned(),
                })
            }
            _ => {}
        }
        if let Some(nbf) = claims.nbf {
            if now.seconds().saturating_add(lee) < nbf.seconds() {
                return Err(Error::NotYetValid { nbf, now, leeway });
            }
        }
        if let Some(iat) = claims.iat {
            if iat.seconds() > now.seconds().saturating_add(lee) {
                return Err(Error::IssuedInFuture { iat, now, leeway });
            }
        }
        if let Some(max_age) = self.max_age {
            let iat = claims.iat.ok_or_else(|| Error::MissingClaim {
                claim: "iat".to_owned(),
            })?;
            let limit = NumericDate::from_seconds(iat.seconds())
                .plus(max_age)
                .plus(self.leeway);
            if now > limit {
                return Err(Error::TooOld {
                    iat,
                    now,
                    max_age: max_age.as_secs(),
                });
            }
        }
        if let Expect::OneOf(expected) = &self.issuer {
            if !claims
                .iss
                .as_deref()
                .is_some_and(|iss| expected.iter().any(|e| e == iss))
            {
                return Err(Error::InvalidIssuer {
                    expected: expected.clone(),
                    found: claims.iss.as_deref().map(str::to_owned),
                });
            }
        }
        if let Expect::OneOf(expected) = &self.audience {
            let ok = claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.iter().any(|a| expected.iter().any(|e| e == a)));
            if !ok {
                return Err(Error::InvalidAudience {
                    expected: expected.clone(),
                    found: claims
                        .aud
                        .as_ref()
                        .map(|a| a.iter().map(str::to_owned).collect())
                        .unwrap_or_default(),
                });
            }
        }
        if let Some(expected) = &self.subject {
            if claims.sub.as_deref() != Some(expected.as_str()) {
                return Err(Error::InvalidSubject {
                    expected: expected.clone(),
                    found: claims.sub.as_deref().map(str::to_owned),
                });
            }
        }
        for (name, found) in self.required.iter().zip(found_required) {
            if !found {
                return Err(Error::MissingClaim {
                    claim: name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The custom checks, over the payload object.
    pub(crate) fn run_checks(&self, payload: &Map<String, Value>) -> Result<(), Error> {
        for (name, check) in &self.checks {
            check(payload).map_err(|reason| Error::CheckFailed {
                check: name.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

fn push(expect: &mut Expect, value: String) {
    match expect {
        Expect::OneOf(values) => values.push(value),
        _ => *expect = Expect::OneOf(vec![value]),
    }
}

/// RFC 7515 §4.1.9: `typ` values are media types, compared
/// case-insensitively, and `application/` may be left out.
fn media_type_eq(a: &str, b: &str) -> bool {
    fn strip(s: &str) -> &str {
        match s.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &s[12..],
            _ => s,
        }
    }
    strip(a).eq_ignore_ascii_case(strip(b))
}

impl fmt::Debug for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validation")
            .field("jws", &self.jws)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("subject", &self.subject)
            .field("typ", &self.typ)
            .field("require_exp", &self.require_exp)
            .field("leeway", &self.leeway)
            .field("max_age", &self.max_age)
            .field("required", &self.required)
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_compare_loosely_but_exactly() {
        assert!(media_type_eq("at+jwt", "application/at+JWT"));
        assert!(media_type_eq("JWT", "jwt"));
        assert!(!media_type_eq("jwt", "at+jwt"));
        assert!(!media_type_eq("application/", "at+jwt"));
        assert!(!media_type_eq("é", "e"));
    }

    #[test]
    fn unset_issuer_or_audience_is_a_config_error() {
        let v = Validation::new();
        assert!(matches!(v.check_config(), Err(Error::InvalidConfig { .. })));
        let v = Validation::new().issuer("i");
        assert!(matches!(v.check_config(), Err(Error::InvalidConfig { .. })));
        let v = Validation::new().issuer("i").any_audience();
        assert!(v.check_config().is_ok());
        let v = v.leeway(Duration::from_secs(301));
        assert!(matches!(v.check_config(), Err(Error::InvalidConfig { .. })));
    }
}

//! JWT claims validation: every rule, at its boundary, with a set clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_jose::jws::Header;
use tessera_jose::{
    jwt, Algorithm, Claims, Error, FixedClock, NumericDate, SigningKey, Validation, VerifyingKey,
};

const NOW: i64 = 1_800_000_000;

struct Fixture {
    key: SigningKey,
    vk: VerifyingKey,
    clock: FixedClock,
}

impl Fixture {
    fn new() -> Fixture {
        let key = SigningKey::generate(Algorithm::HS256).unwrap();
        let vk = key.verifying_key().unwrap();
        Fixture {
            key,
            vk,
            clock: FixedClock::new(NumericDate::from_seconds(NOW)),
        }
    }

    fn validation(&self) -> Validation {
        Validation::new()
            .issuer("https://issuer")
            .audience("api")
            .clock(self.clock.clone())
    }

    fn claims(&self) -> Claims {
        Claims::new()
            .issuer("https://issuer")
            .audience("api")
            .issued_at(NumericDate::from_seconds(NOW))
            .expires_at(NumericDate::from_seconds(NOW + 600))
    }

    fn check<T: Serialize>(
        &self,
        claims: &Claims<T>,
        validation: &Validation,
    ) -> Result<(), Error> {
        let token = jwt::sign(claims, &self.key).unwrap();
        let owned = jwt::verify::<Value>(&token, &self.vk, validation).map(|_| ());
        // The borrowing entry point decides every rule the same way.
        let mut buffer = Vec::new();
        let borrowed =
            jwt::verify_borrowed::<Value>(&token, &self.vk, validation, &mut buffer).map(|_| ());
        assert_eq!(
            owned.as_ref().map_err(Error::code),
            borrowed.as_ref().map_err(Error::code)
        );
        owned
    }
}

/// Describing a time error never overflows, whatever the dates (a
/// trusted signer's `exp` of `i64::MIN`, a clock far in the future).
#[test]
fn time_errors_describe_any_dates() {
    for (a, b) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (i64::MIN, 0)] {
        let errors = [
            Error::Expired {
                exp: at(a),
                now: at(b),
                leeway: 0,
            },
            Error::NotYetValid {
                nbf: at(a),
                now: at(b),
                leeway: 0,
            },
            Error::IssuedInFuture {
                iat: at(a),
                now: at(b),
                leeway: 0,
            },
            Error::TooOld {
                iat: at(a),
                now: at(b),
                max_age: 0,
            },
        ];
        for e in errors {
            assert!(e.to_string().contains("day"), "{e}");
        }
    }
}

fn at(secs: i64) -> NumericDate {
    NumericDate::from_seconds(secs)
}

#[test]
fn expiry_respects_leeway_to_the_second() {
    let f = Fixture::new();
    let claims = f.claims().issued_at(at(NOW - 10)).expires_at(at(NOW));
    let v = f.validation();
    // Valid while now < exp + leeway (60 s by default).
    f.clock.set(at(NOW + 59));
    f.check(&claims, &v).unwrap();
    f.clock.set(at(NOW + 60));
    let err = f.check(&claims, &v).unwrap_err();
    assert!(matches!(err, Error::Expired { leeway: 60, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "token expired at 2027-01-15T08:00:00Z, 1 minute ago (leeway 60s)"
    );
    let strict = f.validation().leeway(Duration::ZERO);
    f.clock.set(at(NOW));
    assert!(matches!(
        f.check(&claims, &strict),
        Err(Error::Expired { .. })
    ));
    f.clock.set(at(NOW - 1));
    f.check(&claims, &strict).unwrap();
}

#[test]
fn exp_is_required_unless_waived() {
    let f = Fixture::new();
    let mut claims = f.claims();
    claims.exp = None;
    assert!(
        matches!(f.check(&claims, &f.validation()), Err(Error::MissingClaim { claim }) if claim == "exp")
    );
    f.check(&claims, &f.validation().allow_missing_exp())
        .unwrap();
}

#[test]
fn not_before_and_issued_at_cannot_be_in_the_future() {
    let f = Fixture::new();
    let v = f.validation();
    f.check(&f.claims().not_before(at(NOW + 60)), &v).unwrap();
    let err = f
        .check(&f.claims().not_before(at(NOW + 61)), &v)
        .unwrap_err();
    assert!(matches!(err, Error::NotYetValid { .. }));
    assert_eq!(
        err.to_string(),
        "token is not valid before 2027-01-15T08:01:01Z, 1 minute from now (leeway 60s)"
    );
    f.check(&f.claims().issued_at(at(NOW + 60)), &v).unwrap();
    assert!(matches!(
        f.check(&f.claims().issued_at(at(NOW + 3600)), &v),
        Err(Error::IssuedInFuture { .. })
    ));
}

#[test]
fn a_fractional_not_before_is_not_reached_before_its_fraction() {
    let f = Fixture::new();
    let exact = f.validation().leeway(Duration::ZERO);
    let fractional = |nbf: f64| {
        Claims::with_custom(serde_json::json!({ "nbf": nbf }))
            .issuer("https://issuer")
            .audience("api")
            .expires_at(at(NOW + 600))
    };
    #[allow(clippy::cast_precision_loss)]
    let now = NOW as f64;
    assert!(matches!(
        f.check(&fractional(now + 0.5), &exact),
        Err(Error::NotYetValid { .. })
    ));
    f.check(&fractional(now - 0.5), &exact).unwrap();
    f.check(&fractional(now), &exact).unwrap();
}

#[test]
fn maximum_age_needs_iat() {
    let f = Fixture::new();
    let v = f
        .validation()
        .max_age(Duration::from_secs(300))
        .leeway(Duration::ZERO);
    f.check(&f.claims().issued_at(at(NOW - 300)), &v).unwrap();
    let err = f
        .check(&f.claims().issued_at(at(NOW - 301)), &v)
        .unwrap_err();
    assert!(matches!(err, Error::TooOld { max_age: 300, .. }), "{err}");
    let mut no_iat = f.claims();
    no_iat.iat = None;
    assert!(matches!(f.check(&no_iat, &v), Err(Error::MissingClaim { claim }) if claim == "iat"));
}

#[test]
fn issuer_must_match_exactly() {
    let f = Fixture::new();
    let v = f.validation();
    for iss in ["https://issuer/", "https://ISSUER", "https://evil", ""] {
        let err = f.check(&f.claims().issuer(iss), &v).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidIssuer { found: Some(found), .. } if found == iss),
            "{err}"
        );
    }
    let mut none = f.claims();
    none.iss = None;
    assert!(matches!(
        f.check(&none, &v),
        Err(Error::InvalidIssuer { found: None, .. })
    ));
    // Several accepted issuers.
    f.check(
        &f.claims().issuer("https://other"),
        &v.clone().issuer("https://other"),
    )
    .unwrap();
    // An explicit opt-out accepts anything.
    f.check(&none, &f.validation().any_issuer()).unwrap();
}

#[test]
fn audience_as_string_or_array() {
    let f = Fixture::new();
    let v = f.validation();
    f.check(
        &f.claims()
            .audience(vec!["other".to_owned(), "api".to_owned()]),
        &v,
    )
    .unwrap();
    let err = f
        .check(
            &f.claims().audience(vec!["a".to_owned(), "b".to_owned()]),
            &v,
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidAudience { found, .. } if found == &["a", "b"]),
        "{err}"
    );
    assert!(matches!(
        f.check(&f.claims().audience("API"), &v),
        Err(Error::InvalidAudience { .. })
    ));
    let mut none = f.claims();
    none.aud = None;
    assert!(matches!(
        f.check(&none, &v),
        Err(Error::InvalidAudience { .. })
    ));
    assert!(matches!(
        f.check(&f.claims().audience(Vec::<String>::new()), &v),
        Err(Error::InvalidAudience { .. })
    ));
    f.check(&none, &f.validation().any_audience()).unwrap();
}

#[test]
fn subject_type_and_required_claims() {
    let f = Fixture::new();
    let v = f.validation().subject("alice");
    f.check(&f.claims().subject("alice"), &v).unwrap();
    assert!(matches!(
        f.check(&f.claims().subject("bob"), &v),
        Err(Error::InvalidSubject { .. })
    ));
    assert!(matches!(
        f.check(&f.claims(), &v),
        Err(Error::InvalidSubject { found: None, .. })
    ));

    let needs_jti = f.validation().require("jti").require("client_id");
    let err = f.check(&f.claims().jwt_id("1"), &needs_jti).unwrap_err();
    assert!(
        matches!(&err, Error::MissingClaim { claim } if claim == "client_id"),
        "{err}"
    );
    #[derive(Serialize)]
    struct Client {
        client_id: String,
    }
    let with_client = Claims::with_custom(Client {
        client_id: "c".into(),
    })
    .issuer("https://issuer")
    .audience("api")
    .expires_at(at(NOW + 60))
    .jwt_id("1");
    f.check(&with_client, &needs_jti).unwrap();
    // A claim required twice is required, not missing.
    f.check(&with_client, &needs_jti.clone().require("jti"))
        .unwrap();
    // A required claim written as null is missing: an `Option` field
    // reads it as absent.
    let null_client = Claims::with_custom(serde_json::json!({ "client_id": null }))
        .issuer("https://issuer")
        .audience("api")
        .expires_at(at(NOW + 60))
        .jwt_id("1");
    let err = f.check(&null_client, &needs_jti).unwrap_err();
    assert!(
        matches!(&err, Error::MissingClaim { claim } if claim == "client_id"),
        "{err}"
    );

    let at_jwt = f.validation().typ("at+jwt");
    let token = jwt::sign(&f.claims(), &f.key).unwrap();
    let err = jwt::verify::<Value>(&token, &f.vk, &at_jwt).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidType { found: Some(t), .. } if t == "JWT"),
        "{err}"
    );
    let header = Header::for_key(&f.key).typ("application/at+jwt");
    let token = jwt::sign_with_header(&header, &f.claims(), &f.key).unwrap();
    jwt::verify::<Value>(&token, &f.vk, &at_jwt).unwrap();
}

#[test]
fn custom_checks_and_custom_claims() {
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Access {
        scope: String,
        #[serde(default)]
        roles: Vec<String>,
    }
    let f = Fixture::new();
    let claims = Claims::with_custom(Access {
        scope: "items:read items:write".into(),
        roles: vec!["editor".into()],
    })
    .issuer("https://issuer")
    .audience("api")
    .expires_at(at(NOW + 60));
    let token = jwt::sign(&claims, &f.key).unwrap();
    let got = jwt::verify::<Access>(&token, &f.vk, &f.validation()).unwrap();
    assert_eq!(got.claims.custom, claims.custom);
    assert_eq!(got.claims.iss.as_deref(), Some("https://issuer"));

    let needs_admin = f.validation().check("admin role", |payload| {
        let roles = payload.get("roles").and_then(Value::as_array);
        if roles.is_some_and(|r| r.iter().any(|x| x == "admin")) {
            Ok(())
        } else {
            Err("roles lack \"admin\"".to_owned())
        }
    });
    let err = jwt::verify::<Access>(&token, &f.vk, &needs_admin).unwrap_err();
    assert_eq!(
        err.to_string(),
        "check \"admin role\" failed: roles lack \"admin\""
    );

    // A payload that does not fit the caller's type is a clear error.
    #[derive(Debug, Deserialize)]
    struct Strict {
        #[allow(dead_code)]
        tenant: u64,
    }
    assert!(matches!(
        jwt::verify::<Strict>(&token, &f.vk, &f.validation()),
        Err(Error::InvalidClaims { .. })
    ));
}

#[test]
fn signing_refuses_claims_that_would_repeat_a_member() {
    #[derive(Serialize)]
    struct Sneaky {
        exp: u64,
    }
    let f = Fixture::new();
    let claims = Claims::with_custom(Sneaky { exp: 1 }).expires_at(at(NOW));
    let err = jwt::sign(&claims, &f.key).unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateMember { name, .. } if name == "exp"),
        "{err}"
    );
    // And a header whose alg differs from the key's is refused.
    let header = Header::new(Algorithm::HS384);
    assert!(matches!(
        jwt::sign_with_header(&header, &f.claims(), &f.key),
        Err(Error::AlgorithmMismatch { .. })
    ));
    let header = Header::for_key(&f.key).member("alg", "none");
    assert!(matches!(
        jwt::sign_with_header(&header, &f.claims(), &f.key),
        Err(Error::InvalidHeader { .. })
    ));
    // An unencoded payload (RFC 7797) is promised but not written.
    let header = Header::for_key(&f.key).member("b64", false).crit(["b64"]);
    assert!(matches!(
        jwt::sign_with_header(&header, &f.claims(), &f.key),
        Err(Error::InvalidHeader { .. })
    ));
}

/// A registered claim the custom part writes instead of the typed field
/// is read as a verifier reads it: of the wrong type, it is refused here;
/// of the right one, the token verifies.
#[test]
fn signing_refuses_registered_claims_of_the_wrong_type() {
    let f = Fixture::new();
    for custom in [
        serde_json::json!({ "exp": "never" }),
        serde_json::json!({ "aud": 5 }),
        serde_json::json!({ "iss": null }),
        serde_json::json!({ "nbf": 1e300 }),
        serde_json::json!({ "iat": 18446744073709551615u64 }),
        serde_json::json!({ "jti": ["a"] }),
        serde_json::json!({ "sub": 5 }),
    ] {
        let claims = Claims::with_custom(custom.clone());
        let err = jwt::sign(&claims, &f.key).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_CLAIM_TYPE", "{custom}: {err}");
    }
    // Nested, the names are the custom claims' own business.
    let nested = Claims::with_custom(serde_json::json!({ "x": { "exp": "never", "sub": 5 } }));
    jwt::sign(&nested, &f.key).unwrap();
    let claims = Claims::with_custom(serde_json::json!({
        "exp": NOW + 60, "iss": "https://issuer", "aud": ["api"], "sub": "alice"
    }));
    let token = jwt::sign(&claims, &f.key).unwrap();
    let verified = jwt::verify::<Value>(&token, &f.vk, &f.validation()).unwrap();
    assert_eq!(verified.claims.exp.map(|e| e.seconds()), Some(NOW + 60));
}

#[test]
fn insecure_configurations_fail_loudly() {
    let f = Fixture::new();
    let token = jwt::sign(&f.claims(), &f.key).unwrap();
    for v in [
        Validation::new(),
        Validation::new().issuer("https://issuer"),
        Validation::new().audience("api"),
        f.validation().leeway(Duration::from_secs(3600)),
    ] {
        let err = jwt::verify::<Value>(&token, &f.vk, &v).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_CONFIG", "{err}");
    }
}

#[test]
fn tokens_under_one_header_share_it_and_others_do_not() {
    let f = Fixture::new();
    let v = f.validation();
    let first = jwt::verify::<Value>(&jwt::sign(&f.claims(), &f.key).unwrap(), &f.vk, &v).unwrap();
    let claims = f.claims().subject("someone else");
    let second = jwt::verify::<Value>(&jwt::sign(&claims, &f.key).unwrap(), &f.vk, &v).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first.header, &second.header));
    assert_eq!(second.claims.sub.as_deref(), Some("someone else"));
    // Any other header byte for byte is its own.
    let header = Header::for_key(&f.key).typ("at+jwt");
    let token = jwt::sign_with_header(&header, &f.claims(), &f.key).unwrap();
    let third = jwt::verify::<Value>(&token, &f.vk, &v).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first.header, &third.header));
    assert_eq!(third.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(first.header.typ.as_deref(), Some("JWT"));
    // An owned header, when one is wanted.
    let owned: Header = std::sync::Arc::unwrap_or_clone(third.header);
    assert_eq!(owned, header);
}

#[test]
fn borrowed_claims_point_into_the_buffer() {
    #[derive(Deserialize)]
    struct Access<'a> {
        scope: &'a str,
        groups: Vec<&'a str>,
        #[serde(borrow)]
        note: std::borrow::Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Strict<'a> {
        #[allow(dead_code)]
        note: &'a str,
    }
    let f = Fixture::new();
    let sign = |note: &str, groups: usize| {
        let custom = serde_json::json!({
            "scope": "orders:read",
            "groups": (0..groups).map(|i| format!("/g{i}")).collect::<Vec<_>>(),
            "note": note,
        });
        let claims = Claims::with_custom(custom)
            .issuer("https://issuer")
            .audience("api")
            .expires_at(at(NOW + 600));
        jwt::sign(&claims, &f.key).unwrap()
    };
    let mut buffer = Vec::new();
    let token = sign("plain", 3);
    // Once to size the buffer: the second verification decodes into the
    // same bytes.
    drop(jwt::verify_borrowed::<Access<'_>>(&token, &f.vk, &f.validation(), &mut buffer).unwrap());
    let decoded = buffer.as_ptr_range();
    let verified =
        jwt::verify_borrowed::<Access<'_>>(&token, &f.vk, &f.validation(), &mut buffer).unwrap();
    let custom = &verified.claims.custom;
    assert_eq!(custom.scope, "orders:read");
    assert_eq!(custom.groups, ["/g0", "/g1", "/g2"]);
    assert!(matches!(custom.note, std::borrow::Cow::Borrowed("plain")));
    assert_eq!(verified.claims.iss.as_deref(), Some("https://issuer"));
    // The registered claims borrow as well.
    let iss = verified.claims.iss.as_ref().unwrap();
    assert!(matches!(iss, std::borrow::Cow::Borrowed(_)));
    assert!(
        decoded.contains(&iss.as_ptr()),
        "iss points into the buffer"
    );
    assert!(verified
        .claims
        .aud
        .as_ref()
        .is_some_and(|a| a.contains("api")));
    // Borrowed from the decoded payload, not copied.
    let inside = |s: &str| decoded.contains(&s.as_ptr());
    assert!(inside(custom.scope) && custom.groups.iter().all(|g| inside(g)));
    drop(verified);

    // The buffer is reused, whatever the next token's size.
    let token = sign("line\nbreak", 200);
    let verified =
        jwt::verify_borrowed::<Access<'_>>(&token, &f.vk, &f.validation(), &mut buffer).unwrap();
    assert_eq!(verified.claims.custom.groups.len(), 200);
    // A string with escapes is unescaped into an owned Cow...
    assert!(
        matches!(verified.claims.custom.note, std::borrow::Cow::Owned(ref n) if n == "line\nbreak")
    );
    drop(verified);
    // ...and refused by a `&str` field, as a claims error.
    let err = jwt::verify_borrowed::<Strict<'_>>(&token, &f.vk, &f.validation(), &mut buffer)
        .err()
        .unwrap();
    assert_eq!(err.code(), "ERR_INVALID_CLAIMS", "{err}");

    // Forgeries fail before anything is borrowed: another key, an altered
    // payload, no signature.
    let other = SigningKey::generate(Algorithm::HS256).unwrap();
    let forged = jwt::sign(
        &Claims::with_custom(serde_json::json!({"scope": "admin", "groups": [], "note": ""}))
            .issuer("https://issuer")
            .audience("api")
            .expires_at(at(NOW + 600)),
        &other,
    )
    .unwrap();
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.rsplit_once('.').unwrap();
    let altered = format!("{head}.{}.{signature}", forged.split('.').nth(1).unwrap());
    for bad in [
        forged.as_str(),
        altered.as_str(),
        &format!("{head}.{}.", forged.split('.').nth(1).unwrap()),
    ] {
        let err = jwt::verify_borrowed::<Access<'_>>(bad, &f.vk, &f.validation(), &mut buffer)
            .err()
            .unwrap();
        assert!(
            matches!(err.code(), "ERR_INVALID_SIGNATURE" | "ERR_MALFORMED"),
            "{bad}: {err}"
        );
    }
}

//! From nothing to a signed, verified token.
//!
//! Run it with `cargo run --release -p tessera-jose --example quickstart`.
//! It makes an ES256 key, publishes its JWKS, signs an access token, then
//! verifies it through the JWKS the way a resource server would, and shows
//! a tampered token and a confused-algorithm token being refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_jose::jws::Header;
use tessera_jose::{b64, jwt, Algorithm, Claims, JwkSet, KeySet, SigningKey, Validation};

#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    client_id: String,
    scope: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The authorization server: a key whose kid is its RFC 7638 thumbprint.
    let key = SigningKey::generate(Algorithm::ES256)?.with_thumbprint_kid()?;
    let public = key.verifying_key()?.to_public_jwk()?;
    let jwks = JwkSet::new(vec![public]).to_json();
    println!("JWKS published by the server:\n{jwks}\n");

    // 2. It issues an RFC 9068 access token.
    let claims = Claims::with_custom(AccessClaims {
        client_id: "store-frontend".into(),
        scope: "items:read items:write".into(),
    })
    .issuer("https://auth.example.com")
    .subject("alice")
    .audience("store-api")
    .valid_for(Duration::from_secs(15 * 60))
    .random_jwt_id()?;
    let token = jwt::sign_with_header(&Header::for_key(&key).typ("at+jwt"), &claims, &key)?;
    println!("Access token:\n{token}\n");

    // 3. The resource server knows only the JWKS.
    let keys = KeySet::from_jwks(&JwkSet::from_json(&jwks)?)?;
    let validation = Validation::new()
        .issuer("https://auth.example.com")
        .audience("store-api")
        .typ("at+jwt")
        .algorithms([Algorithm::ES256]);
    let verified = jwt::verify::<AccessClaims>(&token, &keys, &validation)?;
    println!(
        "Verified: sub={:?} client_id={:?} scope={:?} expires {}\n",
        verified.claims.sub.as_deref().unwrap_or("-"),
        verified.claims.custom.client_id,
        verified.claims.custom.scope,
        verified
            .claims
            .exp
            .map(|e| e.to_string())
            .unwrap_or_default(),
    );

    // 4. Attacks fail with a reason.
    let (head, rest) = token.split_once('.').ok_or("token has no dots")?;
    let (_, signature) = rest.split_once('.').ok_or("token has one dot")?;
    let forged_payload = b64::encode(
        r#"{"iss":"https://auth.example.com","aud":"store-api","sub":"admin","exp":4102444800}"#,
    );
    let tampered = format!("{head}.{forged_payload}.{signature}");
    match jwt::verify::<AccessClaims>(&tampered, &keys, &validation) {
        Ok(_) => return Err("a tampered token was accepted".into()),
        Err(e) => println!("Tampered token refused: {e} [{}]", e.code()),
    }
    let none = format!("{}.{forged_payload}.", b64::encode(r#"{"alg":"none"}"#));
    match jwt::verify::<AccessClaims>(&none, &keys, &validation) {
        Ok(_) => return Err("an unsigned token was accepted".into()),
        Err(e) => println!("Unsigned token refused: {e} [{}]", e.code()),
    }
    Ok(())
}

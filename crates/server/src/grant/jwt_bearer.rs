//! `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): a
//! verified assertion names the subject.

use super::client_auth::Assertion;
use super::{client_credentials, Granted, Refusal, TokenRequest};
use crate::db::Db;
use crate::store::audit::{AuditQueue, Event};
use crate::store::{users, Scopes};

/// The assertion's `subject` (verified by the caller, issued by the
/// request's client) is the client itself or an enabled user.
///
/// The assertion is spent last, once the request is known to be granted:
/// a request refused for anything else (a scope the user lacks) leaves it
/// for the corrected one.
pub async fn grant(
    request: &TokenRequest<'_>,
    assertion: &Assertion,
    db: &Db,
    audit: &AuditQueue,
) -> Result<Granted, Refusal> {
    let client = request.client;
    if assertion.subject == client.client_id {
        let granted = client_credentials::grant(request)?;
        spend(assertion, db).await?;
        return Ok(granted);
    }
    let user = users::find(db, &assertion.subject)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            Refusal::InvalidGrant("the assertion's subject is not an enabled user".into())
        })?;
    let user_scopes = Scopes::parse(&user.scopes)?;
    let scope = request.scopes_within(&client.scopes.intersection(&user_scopes))?;
    spend(assertion, db).await?;
    audit.push(
        Event::new("assertion_accepted")
            .client(&client.client_id)
            .subject(&user.username)
            .remote(request.remote()),
    );
    Ok(Granted {
        subject: user.id,
        username: Some(user.username),
        scope,
        // The user did not authenticate here: a resource server that
        // asks for a recent login (`max_age`, RFC 9470) must not take an
        // assertion for one.
        auth_time: None,
        refresh_token: None,
        family: None,
        sid: None,
        sign_in: None,
    })
}

async fn spend(assertion: &Assertion, db: &Db) -> Result<(), Refusal> {
    assertion.spend(db).await?.map_err(Refusal::InvalidGrant)
}

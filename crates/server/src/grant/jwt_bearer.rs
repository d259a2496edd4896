//! `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): a
//! verified assertion names the subject.

use super::{client_credentials, Granted, Refusal, TokenRequest};
use crate::db::Db;
use crate::store::audit::{AuditQueue, Event};
use crate::store::{users, Scopes};

/// The assertion's `subject` (verified by the caller, issued by the
/// request's client) is the client itself or an enabled user.
pub async fn grant(
    request: &TokenRequest<'_>,
    subject: &str,
    db: &Db,
    audit: &AuditQueue,
) -> Result<Granted, Refusal> {
    let client = request.client;
    if subject == client.client_id {
        return client_credentials::grant(request);
    }
    let user = users::find(db, subject)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            Refusal::InvalidGrant("the assertion's subject is not an enabled user".into())
        })?;
    audit.push(
        Event::new("assertion_accepted")
            .client(&client.client_id)
            .subject(&user.username)
            .remote(request.remote()),
    );
    let user_scopes = Scopes::parse(&user.scopes)?;
    Ok(Granted {
        subject: user.id,
        username: Some(user.username),
        scope: request.scopes_within(&client.scopes.intersection(&user_scopes))?,
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

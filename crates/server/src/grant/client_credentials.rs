//! `client_credentials` (RFC 6749 §4.4): a client asks for itself.

use super::{Granted, Refusal, TokenRequest};

/// The client is the subject; it gets the scopes it asked for, within
/// its own.
pub fn grant(request: &TokenRequest<'_>) -> Result<Granted, Refusal> {
    Ok(Granted {
        subject: request.client.client_id.clone(),
        username: None,
        scope: request.scopes_within(&request.client.scopes)?,
        auth_time: None,
        refresh_token: None,
        family: None,
        sid: None,
        sign_in: None,
    })
}

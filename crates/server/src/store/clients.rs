//! OAuth clients: who may ask for tokens, with which grants and scopes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_jose::{Algorithm, JwkSet, KeySet};
use zeroize::Zeroizing;

use crate::db::{on_pool, Db};
use crate::secret::{random_id, random_token, token_digest};
use crate::store::audit::{record_in, InChange};
use crate::store::revocation::{self, append_revocation, Keep};
use crate::store::{added_after_all, check_name, now, transaction_id, ScopeChange, Scopes};
use crate::Error;

/// An OAuth 2.0 grant type this server implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum GrantType {
    /// `password` (RFC 6749 §4.3).
    #[serde(rename = "password")]
    Password,
    /// `client_credentials` (RFC 6749 §4.4).
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// `refresh_token` (RFC 6749 §6).
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): a
    /// JWT signed with the client's registered keys names the subject.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:jwt-bearer")]
    JwtBearer,
    /// `authorization_code` (RFC 6749 §4.1, with PKCE): people sign in
    /// through the authorization endpoint.
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
}

impl GrantType {
    /// Every grant type, in the order metadata lists them.
    pub const ALL: [GrantType; 5] = [
        GrantType::AuthorizationCode,
        GrantType::ClientCredentials,
        GrantType::Password,
        GrantType::RefreshToken,
        GrantType::JwtBearer,
    ];

    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::Password => "password",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::RefreshToken => "refresh_token",
            GrantType::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
            GrantType::AuthorizationCode => "authorization_code",
        }
    }

    /// Parse a `grant_type` value (`jwt-bearer` is accepted for short on
    /// the command line, never at the token endpoint).
    pub fn parse(text: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == text)
    }

    /// Parse a grant named on the command line.
    pub fn parse_short(text: &str) -> Option<GrantType> {
        match text {
            "jwt-bearer" => Some(GrantType::JwtBearer),
            _ => GrantType::parse(text),
        }
    }
}

/// A client as stored.
#[derive(Clone, sqlx::FromRow)]
pub(crate) struct ClientRow {
    client_id: String,
    name: String,
    secret_hash: Option<Vec<u8>>,
    grants: String,
    scopes: String,
    audiences: String,
    jwks: Option<String>,
    access_ttl: Option<i64>,
    created_at: i64,
    redirect_uris: String,
    post_logout_redirect_uris: String,
    backchannel_logout_uri: Option<String>,
    id_token_alg: Option<String>,
    first_party: bool,
}

/// A client, parsed.
#[derive(Clone)]
pub struct Client {
    /// `client_id`.
    pub client_id: String,
    /// A label for people.
    pub name: String,
    /// SHA-256 of the secret; `None` for public clients and
    /// `private_key_jwt` clients.
    pub secret_hash: Option<Vec<u8>>,
    /// Allowed grants.
    pub grants: Vec<GrantType>,
    /// Allowed scopes.
    pub scopes: Scopes,
    /// The `aud` of its access tokens (the issuer when empty).
    pub audiences: Vec<String>,
    /// Public keys for `private_key_jwt`.
    pub jwks: Option<String>,
    /// Access-token lifetime in seconds (`None`: server default).
    pub access_ttl: Option<i64>,
    /// When it was added.
    pub created_at: i64,
    /// Where the authorization endpoint may send people back.
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send people back.
    pub post_logout_redirect_uris: Vec<String>,
    /// Where back-channel logout tokens are POSTed.
    pub backchannel_logout_uri: Option<String>,
    /// The algorithm of its ID tokens (`None`: RS256).
    pub id_token_alg: Option<Algorithm>,
    /// The operator's own application: consent is implied.
    pub first_party: bool,
    /// `jwks` parsed, once per loaded client: an assertion costs its
    /// signature, not a key set's parsing and point checks.
    pub(crate) verify_keys: std::sync::OnceLock<Arc<KeySet>>,
}

#[cfg(test)]
impl Client {
    /// A confidential `client_credentials` client named `id`, for unit
    /// tests; change what a test needs with `..Client::for_tests(id)`.
    pub(crate) fn for_tests(id: &str) -> Client {
        Client {
            client_id: id.to_owned(),
            name: id.to_owned(),
            secret_hash: Some(vec![1; 32]),
            grants: vec![GrantType::ClientCredentials],
            scopes: Scopes::default(),
            audiences: Vec::new(),
            jwks: None,
            access_ttl: None,
            created_at: 0,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            id_token_alg: None,
            first_party: false,
            verify_keys: std::sync::OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field(
                "secret_hash",
                &self.secret_hash.as_ref().map(|_| "[REDACTED]"),
            )
            .field("grants", &self.grants)
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("redirect_uris", &self.redirect_uris)
            .field("first_party", &self.first_party)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// How the client authenticates (RFC 8414 names).
    pub fn auth_method(&self) -> &'static str {
        if self.jwks.is_some() {
            "private_key_jwt"
        } else if self.secret_hash.is_some() {
            "client_secret_basic"
        } else {
            "none"
        }
    }

    /// Whether the client may use `grant`.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grants.contains(&grant)
    }

    /// Whether the client has no credentials (RFC 6749 §2.1 public client).
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none() && self.jwks.is_none()
    }

    /// The keys its assertions are verified with (`private_key_jwt`,
    /// the jwt-bearer grant), parsed from `jwks` on first use; `None`
    /// when it registered none.
    pub fn verify_keys(&self) -> Result<Option<Arc<KeySet>>, Error> {
        let Some(jwks) = self.jwks.as_deref() else {
            return Ok(None);
        };
        if let Some(keys) = self.verify_keys.get() {
            return Ok(Some(Arc::clone(keys)));
        }
        let keys = Arc::new(JwkSet::from_json(jwks).and_then(|set| KeySet::from_jwks(&set))?);
        Ok(Some(Arc::clone(self.verify_keys.get_or_init(|| keys))))
    }

    /// The algorithm its ID tokens are signed with (OpenID Connect Core
    /// §15.1: RS256 unless the client registered another).
    pub fn id_token_alg(&self) -> Algorithm {
        self.id_token_alg.unwrap_or(Algorithm::RS256)
    }
}

/// A client as listed.
#[derive(Clone, Debug, Serialize)]
pub struct ClientInfo {
    /// `client_id`.
    pub client_id: String,
    /// Label.
    pub name: String,
    /// `client_secret_basic`, `private_key_jwt` or `none`.
    pub auth_method: &'static str,
    /// Grants.
    pub grants: Vec<GrantType>,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Access-token lifetime in seconds, when not the default.
    pub access_ttl: Option<i64>,
    /// When it was added.
    pub created_at: i64,
    /// Registered redirect URIs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Back-channel logout URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
    /// ID token algorithm, when registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<&'static str>,
    /// Whether consent is implied.
    pub first_party: bool,
}

impl From<&Client> for ClientInfo {
    fn from(c: &Client) -> ClientInfo {
        ClientInfo {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            auth_method: c.auth_method(),
            grants: c.grants.clone(),
            scopes: c.scopes.to_string(),
            audiences: c.audiences.clone(),
            access_ttl: c.access_ttl,
            created_at: c.created_at,
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            backchannel_logout_uri: c.backchannel_logout_uri.clone(),
            id_token_signed_response_alg: c.id_token_alg.map(Algorithm::as_str),
            first_party: c.first_party,
        }
    }
}

/// The items of a space-separated list.
fn words(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

impl TryFrom<ClientRow> for Client {
    type Error = Error;

    fn try_from(row: ClientRow) -> Result<Client, Error> {
        let grants = row
            .grants
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(|g| {
                GrantType::parse(g).ok_or_else(|| {
                    Error::Database(format!("client {}: unknown grant {g:?}", row.client_id))
                })
            })
            .collect::<Result<_, _>>()?;
        let id_token_alg = row
            .id_token_alg
            .as_deref()
            .map(|a| {
                a.parse::<Algorithm>().map_err(|_| {
                    Error::Database(format!("client {}: unknown algorithm {a:?}", row.client_id))
                })
            })
            .transpose()?;
        // The server's own row: a scope it cannot read is its failure,
        // never the caller's request (`Invalid` would answer 400).
        let scopes = Scopes::parse(&row.scopes).map_err(|e| {
            Error::Database(format!("client {}: stored scopes: {e}", row.client_id))
        })?;
        Ok(Client {
            scopes,
            audiences: words(&row.audiences),
            redirect_uris: words(&row.redirect_uris),
            post_logout_redirect_uris: words(&row.post_logout_redirect_uris),
            backchannel_logout_uri: row.backchannel_logout_uri,
            id_token_alg,
            first_party: row.first_party,
            client_id: row.client_id,
            name: row.name,
            secret_hash: row.secret_hash,
            grants,
            jwks: row.jwks,
            access_ttl: row.access_ttl,
            created_at: row.created_at,
            verify_keys: std::sync::OnceLock::new(),
        })
    }
}

/// What `client add` asks for.
#[derive(Clone, Debug, Default)]
pub struct NewClient {
    /// Label.
    pub name: String,
    /// Grants (default: `client_credentials`).
    pub grants: Vec<GrantType>,
    /// Scopes.
    pub scopes: Scopes,
    /// Audiences.
    pub audiences: Vec<String>,
    /// A public client: no secret (only grants that suit one).
    pub public: bool,
    /// Public keys for `private_key_jwt` instead of a secret.
    pub jwks: Option<String>,
    /// Access-token lifetime in seconds.
    pub access_ttl: Option<i64>,
    /// Redirect URIs (the authorization code grant needs one at least).
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send people back.
    pub post_logout_redirect_uris: Vec<String>,
    /// Where back-channel logout tokens go.
    pub backchannel_logout_uri: Option<String>,
    /// ID token algorithm (`None`: RS256).
    pub id_token_alg: Option<Algorithm>,
    /// The operator's own application: no consent page.
    pub first_party: bool,
}

/// A client just added: its id and, once, its secret (which `Debug`
/// does not show).
pub struct Added {
    /// The new `client_id`.
    pub client_id: String,
    /// The generated secret; shown once, stored only as a digest.
    pub client_secret: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Added {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Added")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Add a client. The rules that depend on the server (which redirect
/// URIs and ID token algorithms it accepts) are the admin service's to
/// check first (`crate::admin`). `recorded`'s event, made of the new
/// client's id, is written in the same transaction.
pub async fn add(
    db: &Db,
    mut new: NewClient,
    mut recorded: InChange<'_, str>,
) -> Result<Added, Error> {
    crate::store::check_display_name("client name", &new.name)?;
    let mut grants = std::mem::take(&mut new.grants);
    if grants.is_empty() {
        grants.push(GrantType::ClientCredentials);
    }
    // A value given twice is stored once (an audience twice in every
    // token's `aud`, a grant listed twice).
    first_of_each(&mut grants);
    first_of_each(&mut new.redirect_uris);
    first_of_each(&mut new.post_logout_redirect_uris);
    first_of_each(&mut new.audiences);
    if new.public && new.jwks.is_some() {
        return Err(Error::Invalid(
            "a public client has no keys: give public (--public) or jwks (--jwks), not both".into(),
        ));
    }
    if grants.contains(&GrantType::JwtBearer) && new.jwks.is_none() {
        return Err(Error::Invalid(
            "the jwt-bearer grant needs the keys that sign the assertions: give jwks (--jwks)"
                .into(),
        ));
    }
    if new.public && grants.contains(&GrantType::ClientCredentials) {
        return Err(Error::Invalid(
            "client_credentials needs a confidential client (RFC 6749 §4.4): drop public (--public)".into(),
        ));
    }
    if let Some(jwks) = &new.jwks {
        let set = tessera_jose::JwkSet::from_json(jwks)?;
        let usable = tessera_jose::KeySet::from_jwks(&set)?;
        if set.keys.iter().any(|k| k.is_private() || k.is_symmetric()) {
            return Err(Error::Invalid(
                "jwks (--jwks) must hold public keys only (no private or secret keys)".into(),
            ));
        }
        // A key that could never verify an assertion (an RSA key without
        // `alg`, a curve this server does not know) is said now, not found
        // out at the client's first assertion, refused as `no matching
        // key` with nothing to tell the admin why.
        if let Some(skipped) = usable.skipped().first() {
            return Err(Error::Invalid(format!(
                "jwks (--jwks) key {} ({}) cannot verify assertions: {}",
                skipped.index,
                skipped.kid.as_deref().unwrap_or("no kid"),
                skipped.reason
            )));
        }
        if usable.keys().is_empty() {
            return Err(Error::Invalid(
                "jwks (--jwks) holds no key: give the public keys that sign the client's assertions"
                    .into(),
            ));
        }
    }
    let code_flow = grants.contains(&GrantType::AuthorizationCode);
    if code_flow && new.redirect_uris.is_empty() {
        return Err(Error::Invalid(
            "the authorization_code grant needs at least one redirect URI (redirect_uris, --redirect-uri)".into(),
        ));
    }
    if !code_flow
        && (!new.redirect_uris.is_empty()
            || !new.post_logout_redirect_uris.is_empty()
            || new.backchannel_logout_uri.is_some())
    {
        return Err(Error::Invalid(
            "redirect and logout URIs are for clients of the authorization_code grant: add it to grants (--grant authorization_code)".into(),
        ));
    }
    if new
        .redirect_uris
        .iter()
        .chain(&new.post_logout_redirect_uris)
        .any(|u| u.contains(' '))
        || new
            .backchannel_logout_uri
            .as_ref()
            .is_some_and(|u| u.contains(' '))
    {
        return Err(Error::Invalid("a URI holds a space".into()));
    }
    for aud in &new.audiences {
        check_name("audience", aud)?;
        if aud.contains(' ') {
            return Err(Error::Invalid(format!("audience {aud:?} holds a space")));
        }
    }
    let client_id = random_id()?;
    let secret = if new.public || new.jwks.is_some() {
        None
    } else {
        Some(random_token()?)
    };
    let at = now();
    let grant_text = grants
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let xid;
    let written = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        xid = transaction_id!(db, &mut *tx);
        sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, grants, scopes, audiences, jwks, access_ttl, created_at, updated_at, \
             redirect_uris, post_logout_redirect_uris, backchannel_logout_uri, id_token_alg, first_party) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14)"
        )
        .bind(&client_id).bind(&new.name).bind(secret.as_ref().map(|s| token_digest(s)))
        .bind(&grant_text).bind(new.scopes.to_string()).bind(new.audiences.join(" "))
        .bind(&new.jwks).bind(new.access_ttl).bind(at)
        .bind(new.redirect_uris.join(" ")).bind(new.post_logout_redirect_uris.join(" "))
        .bind(&new.backchannel_logout_uri).bind(new.id_token_alg.map(Algorithm::as_str))
        .bind(new.first_party)
        .execute(&mut *tx).await?;
        record_in!(tx, recorded, client_id.as_str());
        tx.commit().await
    })
    .map_err(Error::from);
    if let Err(failed) = written {
        added_after_all(
            db,
            failed,
            xid,
            "SELECT COUNT(*) FROM clients WHERE client_id = $1",
            &client_id,
            || {
                format!(
                    "client {:?} ({client_id}) (`tessera client list` shows it if it was)",
                    new.name
                )
            },
        )
        .await?;
    }
    Ok(Added {
        client_id,
        client_secret: secret,
    })
}

/// The ID-token algorithms clients registered (`id_token_alg`), each
/// with how many clients use it.
pub async fn id_token_algorithms_in_use(db: &Db) -> Result<Vec<(String, i64)>, Error> {
    let rows = on_pool!(db.read(), p => sqlx::query_as::<_, (String, i64)>(
        "SELECT id_token_alg, COUNT(*) FROM clients WHERE id_token_alg IS NOT NULL GROUP BY id_token_alg"
    ).fetch_all(p).await)?;
    Ok(rows)
}

const COLUMNS: &str = "client_id, name, secret_hash, grants, scopes, audiences, jwks, access_ttl, \
     created_at, redirect_uris, post_logout_redirect_uris, backchannel_logout_uri, id_token_alg, first_party";

/// The client whose id is `client_id`.
pub async fn find(db: &Db, client_id: &str) -> Result<Option<Client>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM clients WHERE client_id = $1");
    let row = on_pool!(db.read(), p => sqlx::query_as::<_, ClientRow>(&sql)
        .bind(client_id).fetch_optional(p).await)?;
    row.map(Client::try_from).transpose()
}

/// Clients, oldest first, from the one after `after` (its `created_at` and
/// `client_id`); `limit` at most. Each with where it stands in the list
/// (its `created_at` and `client_id`), and read, or why it could not be (a
/// grant or algorithm a newer version stored): one such row must not hide
/// every other client from the listing.
pub async fn list(
    db: &Db,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<((i64, String), Result<Client, Error>)>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM clients \
         WHERE (created_at, client_id) > (COALESCE($1, CAST(-1 AS BIGINT)), COALESCE($2, '')) \
         ORDER BY created_at, client_id LIMIT $3"
    );
    let (after_time, after_id) = after.unzip();
    let rows = on_pool!(db.read(), p => sqlx::query_as::<_, ClientRow>(&sql)
        .bind(after_time).bind(after_id).bind(limit).fetch_all(p).await)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let at = (row.created_at, row.client_id.clone());
            (at, Client::try_from(row))
        })
        .collect())
}

/// Keep the first of each value of `list`, in order.
fn first_of_each<T: PartialEq>(list: &mut Vec<T>) {
    let mut i = 0;
    while i < list.len() {
        if list[..i].contains(&list[i]) {
            list.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Delete a client; its refresh token families go with it, and its access
/// tokens are revoked (the revocation feed). `recorded`'s event is written
/// in the same transaction.
pub async fn delete(
    db: &Db,
    client_id: &str,
    keep: Keep,
    mut recorded: InChange<'_>,
) -> Result<(), Error> {
    let at = now();
    let changed = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        if db.is_postgres() {
            // Codes, then refresh tokens, then (by cascade) families: the
            // order a replayed code's revocation and a rotation lock them.
            sqlx::query(crate::store::codes::LOCK_CODES_OF_CLIENT)
                .bind(client_id).execute(&mut *tx).await?;
            sqlx::query(crate::store::refresh::LOCK_TOKENS_OF_CLIENT)
                .bind(client_id).execute(&mut *tx).await?;
        }
        let changed = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id).execute(&mut *tx).await?.rows_affected();
        if changed > 0 {
            append_revocation!(db, tx, keep.client(client_id, now()), at);
            record_in!(tx, recorded, &());
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(changed)
    })?;
    if changed == 0 {
        return Err(Error::NotFound {
            kind: "client",
            name: client_id.to_owned(),
        });
    }
    Ok(())
}

/// Give a confidential client a new secret; the old one stops working,
/// and so do the access tokens issued before (the revocation feed): a
/// secret is rotated because it may have leaked, and whoever held it may
/// hold tokens too.
pub async fn rotate_secret(
    db: &Db,
    client_id: &str,
    keep: Keep,
    mut recorded: InChange<'_>,
) -> Result<Zeroizing<String>, Error> {
    let secret = random_token()?;
    let at = now();
    let changed = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let changed = sqlx::query(
            "UPDATE clients SET secret_hash = $1, updated_at = $2 \
             WHERE client_id = $3 AND secret_hash IS NOT NULL"
        ).bind(token_digest(&secret)).bind(at).bind(client_id).execute(&mut *tx).await?.rows_affected();
        if changed > 0 {
            append_revocation!(db, tx, keep.client(client_id, now()), at);
            record_in!(tx, recorded, &());
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(changed)
    })?;
    if changed == 0 {
        return match find(db, client_id).await? {
            Some(_) => Err(Error::Invalid(format!(
                "client {client_id:?} has no secret to rotate (public or private_key_jwt)"
            ))),
            None => Err(Error::NotFound {
                kind: "client",
                name: client_id.to_owned(),
            }),
        };
    }
    Ok(secret)
}

/// Change a client's scopes ([`ScopeChange`], made against the scopes as
/// this transaction reads them); the scopes it has now. When one is taken away, the access tokens
/// issued to the client before are refused (its cut-off, through the
/// revocation log; other instances drop it from their caches) and its
/// refresh families revoked, in the same transaction: else what was
/// issued with the scope would keep it until it ended.
pub async fn set_scopes(
    db: &Db,
    client_id: &str,
    change: &ScopeChange,
    keep: Keep,
    mut recorded: InChange<'_, Scopes>,
) -> Result<Scopes, Error> {
    let at = now();
    let scopes = on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        let read = if db.is_postgres() {
            "SELECT scopes FROM clients WHERE client_id = $1 FOR NO KEY UPDATE"
        } else {
            "SELECT scopes FROM clients WHERE client_id = $1"
        };
        let old: Option<(String,)> = sqlx::query_as(read).bind(client_id).fetch_optional(&mut *tx).await?;
        let Some((old,)) = old else {
            tx.rollback().await?;
            return Err(Error::NotFound {
                kind: "client",
                name: client_id.to_owned(),
            });
        };
        let (scopes, taken_away) = match change.applied_to(&old) {
            Ok(applied) => applied,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        sqlx::query("UPDATE clients SET scopes = $1, updated_at = $2 WHERE client_id = $3")
            .bind(scopes.to_string()).bind(at).bind(client_id).execute(&mut *tx).await?;
        if taken_away {
            sqlx::query(
                "UPDATE refresh_families SET revoked_at = $1, revoked_reason = 'client scopes taken away' \
                 WHERE client_id = $2 AND revoked_at IS NULL",
            ).bind(at).bind(client_id).execute(&mut *tx).await?;
            append_revocation!(db, tx, keep.client(client_id, now()), at);
        }
        record_in!(tx, recorded, &scopes);
        tx.commit().await?;
        Ok::<_, sqlx::Error>(scopes)
    })?;
    Ok(scopes)
}

/// Entries a [`ClientCache`] holds at most before it starts over.
const CACHE_CAPACITY: usize = 10_000;

/// Recently used clients, so the token endpoint does not read the database
/// for the client on every request.
///
/// An entry lives `ttl`. A secret rotated or a client deleted elsewhere
/// (another instance, the command line) is an event of the revocation
/// log, and the sync that reads it here forgets the client; so, once the
/// cache follows that log ([`ClientCache::follow`]), an entry is trusted
/// only while this instance's copy of the log has been read through within
/// [`revocation::TRUSTED_FOR`]. Otherwise (the database unreachable, the
/// follower behind) the row is read again: a cached old secret would mint
/// tokens after the change's cut-off, which no revocation then reaches.
/// Changes made through this instance's admin API take effect at once.
/// Unknown client ids are never cached. A row read while a change was
/// being forgotten is not cached either: it may predate the change.
#[derive(Debug)]
pub struct ClientCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Arc<Client>, Instant)>>,
    /// Bumped by every [`ClientCache::forget`], under the entries' lock.
    forgets: std::sync::atomic::AtomicU64,
    /// When the revocation log this cache learns of changes from was
    /// last read through.
    synced: std::sync::OnceLock<revocation::Synced>,
}

impl ClientCache {
    /// A cache whose entries live `ttl` (zero: no caching).
    pub fn new(ttl: Duration) -> ClientCache {
        ClientCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
            forgets: std::sync::atomic::AtomicU64::new(0),
            synced: std::sync::OnceLock::new(),
        }
    }

    /// Trust entries only while the revocation log whose syncs forget
    /// changed clients ([`revocation::Revocations::when_client_cut`]) has
    /// been read through lately. Set once; later calls are ignored.
    pub fn follow(&self, synced: revocation::Synced) {
        let _ = self.synced.set(synced);
    }

    /// The client `client_id`, from the cache or the database.
    pub async fn find(&self, db: &Db, client_id: &str) -> Result<Option<Arc<Client>>, Error> {
        let now = Instant::now();
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some((client, loaded)) = entries.get(client_id) {
                let current = || {
                    self.synced
                        .get()
                        .is_none_or(|s| s.within(revocation::TRUSTED_FOR))
                };
                if now.duration_since(*loaded) < self.ttl && current() {
                    return Ok(Some(Arc::clone(client)));
                }
            }
        }
        let forgets = self.forgets.load(std::sync::atomic::Ordering::Acquire);
        let Some(client) = find(db, client_id).await? else {
            // Unknown now (nothing to forget but a stale entry): not a
            // change, so other lookups in flight may still cache theirs.
            self.entries
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(client_id);
            return Ok(None);
        };
        let client = Arc::new(client);
        self.keep(client_id, &client, forgets, now);
        Ok(Some(client))
    }

    /// Cache `client`, read when [`ClientCache::forget`] had been called
    /// `forgets` times: not if it has been called since (the row may
    /// predate the change that was forgotten).
    fn keep(&self, client_id: &str, client: &Arc<Client>, forgets: u64, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.forgets.load(std::sync::atomic::Ordering::Acquire) != forgets {
            return;
        }
        if entries.len() >= CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(client_id.to_owned(), (Arc::clone(client), now));
    }

    /// Drop `client_id` after a change.
    pub fn forget(&self, client_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.remove(client_id);
        self.forgets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_keys_are_parsed_once_and_shared() {
        let key = tessera_jose::SigningKey::generate(Algorithm::ES256).unwrap();
        let jwk = key.verifying_key().unwrap().to_public_jwk().unwrap();
        let signer = Client {
            jwks: Some(JwkSet::new(vec![jwk]).to_json()),
            ..Client::for_tests("signer")
        };
        let first = signer.verify_keys().unwrap().unwrap();
        let again = signer.verify_keys().unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "parsed again");
        assert!(Client::for_tests("plain").verify_keys().unwrap().is_none());
        let broken = Client {
            jwks: Some("{\"keys\":".into()),
            ..Client::for_tests("broken")
        };
        assert!(
            broken.verify_keys().is_err(),
            "a stored key set that does not parse is an error"
        );
    }

    fn client(id: &str) -> Arc<Client> {
        Arc::new(Client::for_tests(id))
    }

    #[test]
    fn a_row_read_across_a_forget_is_not_cached() {
        let cache = ClientCache::new(Duration::from_secs(10));
        let cached = |id: &str| cache.entries.read().unwrap().contains_key(id);
        // Read before a rotation commits, forgotten by the rotation, then
        // handed to the cache: the old secret must not stay for the ttl.
        let before = cache.forgets.load(std::sync::atomic::Ordering::Acquire);
        cache.forget("app");
        cache.keep("app", &client("app"), before, Instant::now());
        assert!(!cached("app"));
        // A read with no forget meanwhile is cached.
        let now = cache.forgets.load(std::sync::atomic::Ordering::Acquire);
        cache.keep("app", &client("app"), now, Instant::now());
        assert!(cached("app"));
    }
}

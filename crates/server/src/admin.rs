//! The admin operations on users, clients, sessions and keys: one set of
//! rules for the command line (`tessera user|client|session|keys …`) and
//! the admin HTTP API
//! (`/admin/…`), which are thin callers. Every change is recorded in the
//! audit trail with who made it.

use std::time::Duration;

use serde::Serialize;
use tessera_jose::Algorithm;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::db::Db;
use crate::keys::{KeyInfo, KeyState};
use crate::password::Passwords;
use crate::store::audit::{self, Event, InChange};
use crate::store::clients::{self, Added, ClientCache, ClientInfo, GrantType, NewClient};
use crate::store::revocation::Revocations;
use crate::store::sessions;
use crate::store::users::{self, Profile, UserInfo};
use crate::store::{ScopeChange, Scopes};
use crate::Error;

/// One page of a listing (the admin API's `limit` and `after`): at most
/// [`Page::size`] items, after the cursor the page before ended on
/// ([`Listed::next`]). Listings are read page by page, never whole: a
/// busy server has millions of users or sessions.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Items asked for: 100 unless given, 1 to 1,000.
    pub limit: Option<i64>,
    /// Where the page before ended.
    pub after: Option<String>,
}

impl Page {
    /// The most items the page holds.
    pub fn size(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }

    /// The first page of `size` items.
    pub fn first(size: i64) -> Page {
        Page {
            limit: Some(size),
            after: None,
        }
    }

    /// `after` as a listing ordered by a time and an id writes it
    /// (`TIME.ID`).
    fn after_time_and_id(&self) -> Result<Option<(i64, &str)>, Error> {
        let Some(after) = &self.after else {
            return Ok(None);
        };
        after
            .split_once('.')
            .and_then(|(time, id)| Some((time.parse().ok()?, id)))
            .map(Some)
            .ok_or_else(not_a_cursor)
    }
}

fn not_a_cursor() -> Error {
    Error::Invalid("after is not a cursor this listing gave (the Link header's)".into())
}

/// A page of a listing, and the cursor of the next page when there is
/// more.
#[derive(Debug)]
pub struct Listed<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// The next page's `after`.
    pub next: Option<String>,
}

impl<T> Listed<T> {
    /// The page of `rows` (read one past `size`, to know whether more
    /// follow), the next page's cursor written by `cursor` from its last
    /// item.
    fn of(mut rows: Vec<T>, size: i64, cursor: impl Fn(&T) -> String) -> Listed<T> {
        let size = usize::try_from(size).unwrap_or(0);
        let more = rows.len() > size;
        rows.truncate(size);
        let next = if more { rows.last().map(cursor) } else { None };
        Listed { items: rows, next }
    }
}

/// The scopes of an audit event's detail, quoted: a scope may hold `=`
/// (RFC 6749 §3.3), and unquoted, the scopes `a` and `by=root` would read
/// as `scope=a by=root`, someone else's change. A scope holds no `"` or
/// `\`, so the quotes hold.
fn scope_detail(scopes: &impl std::fmt::Display) -> String {
    format!("scope={:?}", scopes.to_string())
}

/// Who makes a change, as the audit trail records it.
#[derive(Clone, Debug)]
pub enum Actor {
    /// The command line, run by this operating-system user.
    Cli {
        /// `$USER`.
        os_user: String,
    },
    /// The admin API, called with an access token for this subject.
    Token {
        /// The token's `sub`.
        subject: String,
        /// The user's login name, for a user's token.
        username: Option<String>,
        /// The client the token was issued to.
        client_id: Option<String>,
        /// The address the call came from.
        remote: Option<String>,
    },
}

impl Actor {
    fn detail(&self) -> String {
        match self {
            Actor::Cli { os_user } => format!("by=cli user={os_user}"),
            Actor::Token {
                subject,
                username: Some(username),
                ..
            } => format!("by={subject} user={username:?}"),
            Actor::Token { subject, .. } => format!("by={subject}"),
        }
    }

    /// The event, with who acted and from where.
    fn on(&self, event: Event) -> Event {
        match self {
            Actor::Cli { .. } => event,
            Actor::Token {
                client_id, remote, ..
            } => {
                let event = event.remote(remote.clone());
                match client_id {
                    Some(id) => event.client(id.clone()),
                    None => event,
                }
            }
        }
    }
}

/// The name of the scope the admin API needs.
pub const ADMIN_SCOPE: &str = "tessera:admin";

/// The scope that reads the admin API (users, clients, sessions, keys,
/// the audit trail) and changes nothing.
pub const ADMIN_READ_SCOPE: &str = "tessera:admin:read";

/// Whether `scopes` hold either admin scope: tokens for this server
/// alone (their audience the issuer, whatever else the client's is).
pub fn administers(scopes: &Scopes) -> bool {
    scopes.contains(ADMIN_SCOPE) || scopes.contains(ADMIN_READ_SCOPE)
}

/// Why a public client with an admin scope may not redirect to `uri`: its
/// codes need no secret to redeem, so a program on an administrator's
/// device listening on that port, or claiming that scheme, would get an
/// admin token from a link the administrator opened (silently, for a
/// first-party client or a remembered consent, with `prompt=none`).
fn open_redirect_for_admin(uri: &str) -> Error {
    Error::Invalid(format!(
        "redirect URI {uri:?}: a public client with the {ADMIN_SCOPE} or {ADMIN_READ_SCOPE} \
         scope redirects to https on a host other than loopback only (a loopback port, https too, \
         or a private-use scheme is open to any program on the device): register the admin tool \
         with an https redirect URI on the network, or as a confidential client"
    ))
}

/// A client to register, as an operator describes it.
#[derive(Clone, Debug, Default)]
pub struct ClientRequest {
    /// Display name.
    pub name: String,
    /// Grants by their short names (`client_credentials`, `password`,
    /// `refresh_token`, `jwt-bearer`).
    pub grants: Vec<String>,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// `aud` of its access tokens (the issuer when empty).
    pub audiences: Vec<String>,
    /// Public (no secret) or confidential.
    pub public: bool,
    /// A JWK set for `private_key_jwt` and the jwt-bearer grant.
    pub jwks: Option<String>,
    /// Its access-token lifetime.
    pub access_ttl: Option<Duration>,
    /// Redirect URIs (the authorization code grant).
    pub redirect_uris: Vec<String>,
    /// Post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Back-channel logout URI.
    pub backchannel_logout_uri: Option<String>,
    /// ID token algorithm (`None`: RS256).
    pub id_token_alg: Option<String>,
    /// The operator's own application: no consent page.
    pub first_party: bool,
}

/// One signing key as listed by `tessera keys list --json` and
/// `GET /admin/keys`.
#[derive(Clone, Debug, Serialize)]
pub struct ListedKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// Announced, active, retired or unreadable.
    pub state: KeyState,
    /// Rotation number.
    pub generation: i64,
    /// When it was stored.
    pub created_at: i64,
    /// When it signs (or signed) from.
    pub activate_at: i64,
}

/// The listing form of keys with their states.
pub fn listed_keys(keys: Vec<(KeyInfo, KeyState)>) -> Vec<ListedKey> {
    keys.into_iter()
        .map(|(info, state)| ListedKey {
            kid: info.kid,
            alg: info.alg,
            state,
            generation: info.generation,
            created_at: info.created_at,
            activate_at: info.activate_at,
        })
        .collect()
}

/// The admin operations, for one actor.
#[derive(Debug)]
pub struct AdminService<'a> {
    /// The database.
    pub db: &'a Db,
    /// The password hasher.
    pub passwords: &'a Passwords,
    /// The server's configuration (token lifetimes, issuer, ID token
    /// algorithms).
    pub config: &'a Config,
    /// The running server's client cache, to forget changed clients at
    /// once (`None` from the command line: other processes see the change
    /// within their `client_cache_ttl`).
    pub clients: Option<&'a ClientCache>,
    /// The running server's revocation log, to apply a revocation at once
    /// (`None` from the command line: servers read it within a second).
    pub revocations: Option<&'a Revocations>,
    /// Who acts.
    pub actor: Actor,
}

impl AdminService<'_> {
    /// A revocation committed: apply it to this server's log now.
    async fn revoked(&self) {
        if let Some(log) = self.revocations {
            log.catch_up(self.db).await;
        }
    }

    /// The audit event `name` of a change to `about`, with who acted and
    /// `more` (made of what the change leaves: the scopes it set), for the
    /// store to write in the change's own transaction: an answered change
    /// always has its event, and a change that failed has none.
    fn in_change<T: ?Sized>(
        &self,
        name: &'static str,
        about: &str,
        more: impl FnOnce(&T) -> String + Send + 'static,
    ) -> InChange<'static, T> {
        let about = about.to_owned();
        self.in_change_about(name, move |left: &T| (about, more(left)))
    }

    /// [`AdminService::in_change`] of a change whose subject it makes
    /// itself (a new client's id): `says` gives subject and more.
    fn in_change_about<T: ?Sized>(
        &self,
        name: &'static str,
        says: impl FnOnce(&T) -> (String, String) + Send + 'static,
    ) -> InChange<'static, T> {
        let actor = self.actor.clone();
        InChange::of(move |left: &T| {
            let (about, more) = says(left);
            let detail = match more.as_str() {
                "" => actor.detail(),
                more => format!("{} {more}", actor.detail()),
            };
            actor.on(Event::new(name).subject(about).detail(detail))
        })
    }

    /// [`AdminService::in_change`] with nothing more to say.
    fn in_change_of(&self, name: &'static str, about: &str) -> InChange<'static> {
        self.in_change(name, about, |_: &()| String::new())
    }

    /// Refuse what [`AdminService::add_user`] would refuse for these
    /// (a bad name, scope or profile claim, a username taken), before the
    /// password is asked for: an administrator typing it twice for a user
    /// that already exists learned so only afterwards.
    pub async fn check_new_user(
        &self,
        username: &str,
        scopes: &[String],
        profile: &Profile,
    ) -> Result<(), Error> {
        Scopes::from_list(scopes)?;
        users::check_new(self.db, username, profile).await
    }

    /// Add a user with a password (Argon2id), scopes and profile claims.
    pub async fn add_user(
        &self,
        username: &str,
        password: Zeroizing<String>,
        scopes: &[String],
        profile: &Profile,
    ) -> Result<UserInfo, Error> {
        self.check_new_user(username, scopes, profile).await?;
        let scopes = Scopes::from_list(scopes)?;
        let hash = self.passwords.hash(password).await?;
        let recorded = self.in_change("user_added", username, |user: &UserInfo| {
            format!("id={} {}", user.id, scope_detail(&user.scopes))
        });
        users::add(self.db, username, &hash, &scopes, profile, recorded).await
    }

    /// The user `username`, as listed.
    pub async fn user(&self, username: &str) -> Result<UserInfo, Error> {
        users::info(self.db, username)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "user",
                name: username.to_owned(),
            })
    }

    /// Change a user's profile claims.
    pub async fn set_profile(&self, username: &str, profile: &Profile) -> Result<(), Error> {
        let recorded = self.in_change_of("user_profile_changed", username);
        users::set_profile(self.db, username, profile, recorded).await
    }

    /// Change a user's scopes (in full, or some added and some taken
    /// away, against the scopes as they are when it is written); taking
    /// one away ends the user's sessions and refuses the tokens issued
    /// before ([`users::set_scopes`]). The user's scopes now.
    pub async fn set_scopes(&self, username: &str, change: &ScopeChange) -> Result<Scopes, Error> {
        let recorded = self.in_change("user_scopes_changed", username, scope_detail);
        let keep = self.config.revocation_keep();
        let scopes = users::set_scopes(self.db, username, change, keep, recorded).await?;
        self.revoked().await;
        Ok(scopes)
    }

    /// Change a user's profile claims and scopes, either or both (the
    /// command line's `user set`, the API's `PATCH`). Everything that can
    /// be refused is before anything is written: the claims checked, then
    /// the scopes changed (a change the stored scopes refuse writes
    /// nothing), then the profile; what can still fail after the scopes
    /// (the user deleted meanwhile, the database) leaves a change that
    /// the same request, made again, makes again to the same end. A change
    /// of nothing writes nothing, and says whether the user exists.
    pub async fn change_user(
        &self,
        username: &str,
        profile: &Profile,
        scopes: Option<&ScopeChange>,
    ) -> Result<(), Error> {
        if !profile.changes_anything() && scopes.is_none() {
            return self.user(username).await.map(drop);
        }
        profile.check()?;
        if let Some(scopes) = scopes {
            self.set_scopes(username, scopes).await?;
        }
        if profile.changes_anything() {
            self.set_profile(username, profile).await?;
        }
        Ok(())
    }

    /// A page of the sign-in sessions `kept` names, of one user or all,
    /// newest first; [`Error::NotFound`] for a user no one has.
    pub async fn sessions(
        &self,
        username: Option<&str>,
        kept: sessions::Kept,
        page: &Page,
    ) -> Result<Listed<sessions::Listed>, Error> {
        let size = page.size();
        let rows = sessions::page(
            self.db,
            username,
            self.config.sessions,
            kept,
            page.after_time_and_id()?,
            size.saturating_add(1),
        )
        .await?;
        // No sessions: a user without any, or a name no user has, which
        // is said (`--user` mistyped is not "signed in nowhere").
        if let (true, Some(username)) = (rows.is_empty(), username) {
            if users::find(self.db, username).await?.is_none() {
                return Err(Error::NotFound {
                    kind: "user",
                    name: username.to_owned(),
                });
            }
        }
        Ok(Listed::of(rows, size, |s| {
            format!("{}.{}", s.created_at, s.sid)
        }))
    }

    /// End a sign-in session as a logout does: its refresh tokens are
    /// revoked, and its clients are told through back-channel logout.
    pub async fn end_session(&self, sid: &str) -> Result<(), Error> {
        match sessions::end(
            self.db,
            sid,
            "session ended by an admin",
            self.config.revocation_keep(),
            self.in_change_about("session_ended", |ended: &sessions::Ended| {
                (
                    ended.session.user_id.clone(),
                    format!("sid={} reason=admin", ended.session.sid),
                )
            }),
        )
        .await?
        {
            Some(_) => {
                self.revoked().await;
                Ok(())
            }
            None => Err(Error::NotFound {
                kind: "session",
                name: sid.to_owned(),
            }),
        }
    }

    /// A page of the users, by username.
    pub async fn users(&self, page: &Page) -> Result<Listed<UserInfo>, Error> {
        let size = page.size();
        let rows = users::list(self.db, page.after.as_deref(), size.saturating_add(1)).await?;
        Ok(Listed::of(rows, size, |u| u.username.clone()))
    }

    /// Disable or enable a user (disabling revokes the user's sessions).
    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), Error> {
        let event = if disabled {
            "user_disabled"
        } else {
            "user_enabled"
        };
        let recorded = self.in_change_of(event, username);
        let keep = self.config.revocation_keep();
        users::set_disabled(self.db, username, disabled, keep, recorded).await?;
        self.revoked().await;
        Ok(())
    }

    /// Delete a user and the user's sessions.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let recorded = self.in_change_of("user_deleted", username);
        users::delete(self.db, username, self.config.revocation_keep(), recorded).await?;
        self.revoked().await;
        Ok(())
    }

    /// Set a user's password (the user must exist before anything is
    /// hashed).
    pub async fn change_password(
        &self,
        username: &str,
        password: Zeroizing<String>,
    ) -> Result<(), Error> {
        if users::find(self.db, username).await?.is_none() {
            return Err(Error::NotFound {
                kind: "user",
                name: username.to_owned(),
            });
        }
        let hash = self.passwords.hash(password).await?;
        let recorded = self.in_change_of("user_password_changed", username);
        let keep = self.config.revocation_keep();
        users::set_password(self.db, username, &hash, keep, recorded).await?;
        self.revoked().await;
        Ok(())
    }

    /// Register a client: known grants, an access-token lifetime between
    /// one second and `max_access_ttl`.
    pub async fn add_client(&self, request: ClientRequest) -> Result<Added, Error> {
        let grants = request
            .grants
            .iter()
            .map(|g| {
                GrantType::parse_short(g).ok_or_else(|| {
                    Error::Invalid(format!(
                        "unknown grant {g:?}: use authorization_code, client_credentials, refresh_token, jwt-bearer or password"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let access_ttl = match request.access_ttl {
            // Whole seconds, as `exp` counts them: 500ms would make tokens
            // that expire as they are issued, and 1500ms is not 1s.
            Some(ttl)
                if ttl < std::time::Duration::from_secs(1)
                    || ttl.subsec_nanos() != 0
                    || ttl > self.config.max_access_ttl =>
            {
                return Err(Error::Invalid(format!(
                    "access_ttl must be whole seconds, between 1s and the server's max_access_ttl ({})",
                    humantime::format_duration(self.config.max_access_ttl)
                )))
            }
            Some(ttl) => Some(crate::store::secs(ttl)),
            None => None,
        };
        let on_http = self.config.on_http();
        for uri in request
            .redirect_uris
            .iter()
            .chain(&request.post_logout_redirect_uris)
        {
            crate::signin::redirect::check_registered(uri, request.public, on_http)?;
        }
        if let Some(uri) = &request.backchannel_logout_uri {
            crate::signin::redirect::check_backchannel(uri, on_http)?;
        }
        let supported = &self.config.keys.id_token_algorithms;
        let id_token_alg = match request.id_token_alg.as_deref() {
            None => None,
            Some(text) => {
                let alg: Algorithm = text.parse()?;
                if !supported.contains(&alg) {
                    return Err(Error::Invalid(format!(
                        "ID tokens are signed with {} here (keys.id_token_algorithms), not {alg}",
                        supported
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(alg)
            }
        };
        // An administrator's tokens are for this server alone: with another
        // audience, every token the client asked for (one asking for no
        // scope gets them all) would administer this server from the
        // hands of that API, or of whatever logs its requests.
        let issuer = self.config.issuer.trim_end_matches('/');
        let scopes = Scopes::from_list(&request.scopes)?;
        if administers(&scopes)
            && request
                .audiences
                .iter()
                .any(|a| a.trim_end_matches('/') != issuer)
        {
            return Err(Error::Invalid(format!(
                "a client with the {ADMIN_SCOPE} or {ADMIN_READ_SCOPE} scope has no audience but \
                 this server's issuer: register the API's client apart"
            )));
        }
        if request.public && administers(&scopes) {
            if let Some(uri) = request
                .redirect_uris
                .iter()
                .find(|u| !crate::signin::redirect::reaches_only_its_owner(u))
            {
                return Err(open_redirect_for_admin(uri));
            }
        }
        // Where its codes and tokens may go, too: a first-party client
        // registered with an attacker's redirect URI collects codes
        // without a consent page, and once deleted it would leave no
        // trace of where they went.
        let said = format!(
            "name={:?} grants={:?} {} first_party={} public={} audiences={:?} \
             redirect_uris={:?} post_logout_redirect_uris={:?} backchannel_logout_uri={:?} \
             jwks={}",
            request.name,
            grants
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            scope_detail(&scopes),
            request.first_party,
            request.public,
            request.audiences.join(" "),
            request.redirect_uris.join(" "),
            request.post_logout_redirect_uris.join(" "),
            request.backchannel_logout_uri.as_deref().unwrap_or(""),
            request.jwks.is_some(),
        );
        let recorded = self.in_change_about("client_added", move |client_id: &str| {
            (client_id.to_owned(), said)
        });
        clients::add(
            self.db,
            NewClient {
                name: request.name,
                grants,
                scopes,
                audiences: request.audiences,
                public: request.public,
                jwks: request.jwks,
                access_ttl,
                redirect_uris: request.redirect_uris,
                post_logout_redirect_uris: request.post_logout_redirect_uris,
                backchannel_logout_uri: request.backchannel_logout_uri,
                id_token_alg,
                first_party: request.first_party,
            },
            recorded,
        )
        .await
    }

    /// The client `client_id`, as listed.
    pub async fn client(&self, client_id: &str) -> Result<ClientInfo, Error> {
        match clients::find(self.db, client_id).await? {
            Some(client) => Ok(ClientInfo::from(&client)),
            None => Err(Error::NotFound {
                kind: "client",
                name: client_id.to_owned(),
            }),
        }
    }

    /// A page of the clients, oldest first.
    pub async fn clients(&self, page: &Page) -> Result<Listed<ClientInfo>, Error> {
        let size = page.size();
        let rows =
            clients::list(self.db, page.after_time_and_id()?, size.saturating_add(1)).await?;
        // Paged by the rows read, those that could not be read included
        // (left out of the page, and said in the log).
        let listed = Listed::of(rows, size, |((at, id), _)| format!("{at}.{id}"));
        let items = listed
            .items
            .into_iter()
            .filter_map(|((_, id), client)| match client {
                Ok(client) => Some(ClientInfo::from(&client)),
                Err(e) => {
                    tracing::error!(client_id = %id, error = %e, "a stored client cannot be read: left out of the listing");
                    None
                }
            })
            .collect();
        Ok(Listed {
            items,
            next: listed.next,
        })
    }

    /// A page of the audit trail, of one event or all, newest first.
    pub async fn audit(
        &self,
        event: Option<&str>,
        page: &Page,
    ) -> Result<Listed<audit::Record>, Error> {
        if let Some(event) = event.filter(|e| !audit::EVENTS.contains(e)) {
            return Err(Error::Invalid(format!(
                "no audit event is called {event:?}: the events are {}",
                audit::EVENTS.join(", ")
            )));
        }
        let size = page.size();
        let before = match &page.after {
            Some(after) => Some(after.parse::<i64>().map_err(|_| not_a_cursor())?),
            None => None,
        };
        let rows = audit::page(self.db, event, before, size.saturating_add(1)).await?;
        Ok(Listed::of(rows, size, |r| r.id.to_string()))
    }

    /// Delete a client and its sessions.
    pub async fn delete_client(&self, client_id: &str) -> Result<(), Error> {
        let recorded = self.in_change_of("client_deleted", client_id);
        clients::delete(self.db, client_id, self.config.revocation_keep(), recorded).await?;
        self.revoked().await;
        if let Some(cache) = self.clients {
            cache.forget(client_id);
        }
        Ok(())
    }

    /// Start a rotation by hand: one new key per algorithm in use
    /// ([`crate::keys::Keys::rotate`]), published now, signing after the
    /// announce period. Their ids, the access tokens' first.
    pub async fn rotate_keys(&self, keys: &crate::keys::Keys) -> Result<Vec<String>, Error> {
        let recorded = self.in_change_about("key_rotation_started", |kids: &[String]| {
            (kids.join(" "), String::new())
        });
        keys.rotate(recorded).await
    }

    /// Revoke signing key `kid` at once (it leaked): see
    /// [`crate::keys::Keys::revoke`]. The key that replaces it, if it
    /// signed.
    pub async fn revoke_key(
        &self,
        keys: &crate::keys::Keys,
        kid: &str,
    ) -> Result<Option<String>, Error> {
        let replaced_by = keys
            .revoke(kid, self.in_change_of("key_revoked", kid))
            .await?;
        self.revoked().await;
        Ok(replaced_by)
    }

    /// Record that a backup of the database was written to `path`: it
    /// holds every password hash and sealed signing key.
    /// The backup stays whether or not its event could be written.
    pub async fn backed_up(&self, path: &str) -> Result<(), Error> {
        let event = self.in_change_of("backup_written", path).take(&());
        match event {
            Some(event) => audit::record(self.db, event).await,
            None => Ok(()),
        }
    }

    /// Change a client's scopes (in full, or some added and some taken
    /// away, against the scopes as they are when it is written); taking
    /// one away refuses the tokens issued to it before
    /// ([`clients::set_scopes`]). The admin scope only for a client with
    /// no audience but the issuer and, if public, redirecting to https
    /// only, as at registration. The client's scopes now.
    pub async fn set_client_scopes(
        &self,
        client_id: &str,
        change: &ScopeChange,
    ) -> Result<Scopes, Error> {
        if change.may_give(ADMIN_SCOPE) || change.may_give(ADMIN_READ_SCOPE) {
            let issuer = self.config.issuer.trim_end_matches('/');
            if let Some(client) = clients::find(self.db, client_id).await? {
                if client
                    .audiences
                    .iter()
                    .any(|a| a.trim_end_matches('/') != issuer)
                {
                    return Err(Error::Invalid(format!(
                        "a client with the {ADMIN_SCOPE} or {ADMIN_READ_SCOPE} scope has no \
                         audience but this server's issuer"
                    )));
                }
                let open = client
                    .redirect_uris
                    .iter()
                    .find(|u| !crate::signin::redirect::reaches_only_its_owner(u));
                if let (true, Some(uri)) = (client.is_public(), open) {
                    return Err(open_redirect_for_admin(uri));
                }
            }
        }
        let recorded = self.in_change("client_scopes_changed", client_id, scope_detail);
        let keep = self.config.revocation_keep();
        let scopes = clients::set_scopes(self.db, client_id, change, keep, recorded).await?;
        self.revoked().await;
        if let Some(cache) = self.clients {
            cache.forget(client_id);
        }
        Ok(scopes)
    }

    /// Give a confidential client a new secret; the old one stops working.
    pub async fn rotate_secret(&self, client_id: &str) -> Result<Zeroizing<String>, Error> {
        let recorded = self.in_change_of("client_secret_rotated", client_id);
        let keep = self.config.revocation_keep();
        let secret = clients::rotate_secret(self.db, client_id, keep, recorded).await?;
        self.revoked().await;
        if let Some(cache) = self.clients {
            cache.forget(client_id);
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::scope_detail;
    use crate::store::Scopes;

    /// A scope may hold `=`: quoted, it cannot pass for another word of
    /// the detail (`by=…`, who made the change).
    #[test]
    fn a_scope_cannot_forge_words_of_the_audit_detail() {
        let scopes = Scopes::parse("read by=root").unwrap();
        assert_eq!(scope_detail(&scopes), r#"scope="by=root read""#);
    }
}

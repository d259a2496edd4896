//! Remembered consent: the scopes a user allowed a client, so the consent
//! page is skipped next time for the same scopes or fewer.

use crate::db::{on_pool, Db};
use crate::store::{now, Scopes};
use crate::Error;

/// The scopes `user_id` has allowed `client_id`, if any.
pub async fn find(db: &Db, user_id: &str, client_id: &str) -> Result<Option<Scopes>, Error> {
    let row: Option<(String,)> = on_pool!(db.read(), p => sqlx::query_as(
        "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2"
    ).bind(user_id).bind(client_id).fetch_optional(p).await)?;
    row.map(|(scope,)| Scopes::parse(&scope)).transpose()
}

/// Remember that `user_id` allowed `client_id` these scopes (added to
/// what was allowed before).
pub async fn remember(
    db: &Db,
    user_id: &str,
    client_id: &str,
    scope: &Scopes,
) -> Result<(), Error> {
    let before = find(db, user_id, client_id).await?.unwrap_or_default();
    let all = before.union(scope);
    on_pool!(db.write(), p => sqlx::query(
        "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at"
    ).bind(user_id).bind(client_id).bind(all.to_string()).bind(now())
    .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

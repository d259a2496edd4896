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
///
/// Two consents at once (two tabs) must both count, so the union is made
/// in one transaction over the row it replaces: locked (`FOR UPDATE`) on
/// PostgreSQL; on SQLite the one writer runs such transactions one after
/// the other.
pub async fn remember(
    db: &Db,
    user_id: &str,
    client_id: &str,
    scope: &Scopes,
) -> Result<(), Error> {
    let current = if db.is_postgres() {
        "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2 FOR UPDATE"
    } else {
        "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2"
    };
    let at = now();
    on_pool!(db.write(), p => {
        let mut tx = p.begin_with(db.begin_write()).await?;
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, '', $3) \
             ON CONFLICT (user_id, client_id) DO NOTHING"
        ).bind(user_id).bind(client_id).bind(at).execute(&mut *tx).await?;
        let (before,): (String,) =
            sqlx::query_as(current).bind(user_id).bind(client_id).fetch_one(&mut *tx).await?;
        let all = Scopes::parse(&before)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            .union(scope);
        sqlx::query(
            "UPDATE consents SET scope = $1, granted_at = $2 WHERE user_id = $3 AND client_id = $4"
        ).bind(all.to_string()).bind(at).bind(user_id).bind(client_id).execute(&mut *tx).await?;
        tx.commit().await
    })?;
    Ok(())
}

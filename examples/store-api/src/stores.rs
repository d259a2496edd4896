//! `/stores`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tessera_guard::AccessToken;

use crate::body::{check_name, Valid, Validate};
use crate::items::Item;
use crate::page::Page;
use crate::{ApiError, ApiResult, Id, Params, ADMIN};

#[derive(Serialize, sqlx::FromRow)]
pub struct Store {
    id: i64,
    name: String,
}

#[derive(Serialize)]
pub struct StoreWithItems {
    #[serde(flatten)]
    store: Store,
    /// The first page of its items.
    items: Vec<Item>,
    /// Where the next page of its items is, when there are more.
    #[serde(skip_serializing_if = "Option::is_none")]
    items_next: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStore {
    name: String,
}

impl Validate for NewStore {
    fn problems(&self) -> BTreeMap<&'static str, String> {
        let mut problems = BTreeMap::new();
        check_name(&mut problems, &self.name);
        problems
    }
}

/// A page's place in a list.
#[derive(Deserialize)]
pub struct Paging {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /stores[?after=ID][&limit=N]` (items:read): a page
/// (`crate::page`).
pub async fn list(
    State(db): State<SqlitePool>,
    Params(paging): Params<Paging>,
) -> ApiResult<Response> {
    let page = Page::of(paging.after, paging.limit)?;
    let stores: Vec<Store> =
        sqlx::query_as("SELECT id, name FROM stores WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(page.after)
            .bind(page.fetch())
            .fetch_all(&db)
            .await?;
    Ok(page.answer(stores, |s| s.id, "/stores"))
}

/// `POST /stores` (items:write): a store the caller (the token's `sub`)
/// owns: only they, or `store:admin`, change its items.
pub async fn create(
    State(db): State<SqlitePool>,
    token: AccessToken,
    Valid(new): Valid<NewStore>,
) -> ApiResult<(StatusCode, Json<Store>)> {
    let owner = token.subject().ok_or_else(no_subject)?;
    let store =
        sqlx::query_as("INSERT INTO stores (name, owner) VALUES ($1, $2) RETURNING id, name")
            .bind(new.name.trim())
            .bind(owner)
            .fetch_one(&db)
            .await?;
    Ok((StatusCode::CREATED, Json(store)))
}

/// Whether `token` may change store `id`'s items: it owns the store, or
/// holds `store:admin`. `None` when there is no such store.
///
/// Scopes say what kind of thing a caller may do; the owner says to
/// which stores. Without it, anyone with `items:write` could rename,
/// reprice or move any other owner's items (OWASP API1, broken
/// object-level authorization).
pub(crate) async fn may_change(
    db: &SqlitePool,
    id: i64,
    token: &AccessToken,
) -> Result<Option<bool>, sqlx::Error> {
    let owner: Option<(Option<String>,)> = sqlx::query_as("SELECT owner FROM stores WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(owner.map(|(owner,)| {
        token.has_scope(ADMIN) || (owner.is_some() && owner.as_deref() == token.subject())
    }))
}

/// A token that names nobody cannot own a store.
fn no_subject() -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "forbidden",
        "the access token has no subject (sub) to own the store".into(),
    )
}

/// 403 for a store someone else owns (the catalogue is readable by
/// anyone with `items:read`, so its existence is no secret).
pub(crate) fn not_yours(id: i64) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("store {id} is not yours: only its owner or store:admin changes its items"),
    )
}

/// `GET /stores/{id}` (items:read): the store and the first page of its
/// items (`items_next` says where the rest are).
pub async fn get(State(db): State<SqlitePool>, Id(id): Id) -> ApiResult<Json<StoreWithItems>> {
    let store: Store = sqlx::query_as("SELECT id, name FROM stores WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await?
        .ok_or_else(|| ApiError::not_found("store", id))?;
    let (items, items_next) = crate::items::of_store(&db, id).await?;
    Ok(Json(StoreWithItems {
        store,
        items,
        items_next,
    }))
}

/// `DELETE /stores/{id}` (store:admin): the store and its items.
pub async fn delete(State(db): State<SqlitePool>, Id(id): Id) -> ApiResult<StatusCode> {
    let deleted = sqlx::query("DELETE FROM stores WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("store", id));
    }
    Ok(StatusCode::NO_CONTENT)
}

//! `/items`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tessera_guard::AccessToken;

use crate::body::{check_name, Valid, Validate};
use crate::page::Page;
use crate::stores::{may_change, not_yours};
use crate::{ApiError, ApiResult, Id, Params};

#[derive(Serialize, sqlx::FromRow)]
pub struct Item {
    id: i64,
    store_id: i64,
    name: String,
    /// In cents, so money never meets floating point.
    price_cents: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    store_id: i64,
    name: String,
    price_cents: i64,
}

impl Validate for ItemBody {
    fn problems(&self) -> BTreeMap<&'static str, String> {
        let mut problems = BTreeMap::new();
        check_name(&mut problems, &self.name);
        if !(0..=100_000_000).contains(&self.price_cents) {
            problems.insert("price_cents", "0 to 100000000".into());
        }
        problems
    }
}

#[derive(Deserialize)]
pub struct Filter {
    store_id: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

const COLUMNS: &str = "id, store_id, name, price_cents";

/// The first [`crate::DEFAULT_LIMIT`] items of a store, and where the
/// rest are listed (`/items?store_id=…&after=…`) when there are more.
pub(crate) async fn of_store(
    db: &SqlitePool,
    store_id: i64,
) -> Result<(Vec<Item>, Option<String>), sqlx::Error> {
    let page = Page {
        after: 0,
        limit: crate::DEFAULT_LIMIT,
    };
    let mut items: Vec<Item> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM items WHERE store_id = $1 ORDER BY id LIMIT $2"
    ))
    .bind(store_id)
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    let next = page.cut(&mut items, |i| i.id, &format!("/items?store_id={store_id}"));
    Ok((items, next))
}

fn unknown_store(id: i64) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        format!("store_id: no store {id}"),
    )
}

/// `GET /items[?store_id=N][&after=ID][&limit=N]` (items:read): a page
/// (`crate::page`).
pub async fn list(
    State(db): State<SqlitePool>,
    Params(filter): Params<Filter>,
) -> ApiResult<Response> {
    let page = Page::of(filter.after, filter.limit)?;
    let items: Vec<Item> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM items WHERE ($1 IS NULL OR store_id = $1) AND id > $2 \
         ORDER BY id LIMIT $3"
    ))
    .bind(filter.store_id)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&db)
    .await?;
    let path = match filter.store_id {
        Some(store) => format!("/items?store_id={store}"),
        None => "/items".to_owned(),
    };
    Ok(page.answer(items, |i| i.id, &path))
}

/// `POST /items` (items:write), into a store of the caller's (or any,
/// with store:admin).
pub async fn create(
    State(db): State<SqlitePool>,
    token: AccessToken,
    Valid(body): Valid<ItemBody>,
) -> ApiResult<(StatusCode, Json<Item>)> {
    match may_change(&db, body.store_id, &token).await? {
        None => return Err(unknown_store(body.store_id)),
        Some(false) => return Err(not_yours(body.store_id)),
        Some(true) => {}
    }
    let item = sqlx::query_as(&format!(
        "INSERT INTO items (store_id, name, price_cents) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(body.store_id)
    .bind(body.name.trim())
    .bind(body.price_cents)
    .fetch_one(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(item)))
}

/// `GET /items/{id}` (items:read).
pub async fn get(State(db): State<SqlitePool>, Id(id): Id) -> ApiResult<Json<Item>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM items WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("item", id))
}

/// `PUT /items/{id}` (items:write): replace the item, in a store of the
/// caller's, and moved (if at all) to another of theirs (any store, with
/// store:admin).
pub async fn update(
    State(db): State<SqlitePool>,
    token: AccessToken,
    Id(id): Id,
    Valid(body): Valid<ItemBody>,
) -> ApiResult<Json<Item>> {
    let current: (i64,) = sqlx::query_as("SELECT store_id FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await?
        .ok_or_else(|| ApiError::not_found("item", id))?;
    if may_change(&db, current.0, &token).await? != Some(true) {
        return Err(not_yours(current.0));
    }
    // Moved to another store: that one must be the caller's too.
    if body.store_id != current.0 {
        match may_change(&db, body.store_id, &token).await? {
            None => return Err(unknown_store(body.store_id)),
            Some(false) => return Err(not_yours(body.store_id)),
            Some(true) => {}
        }
    }
    // Only while it is still in the store checked (moved meanwhile by
    // someone else, it is not this caller's to change).
    sqlx::query_as(&format!(
        "UPDATE items SET store_id = $1, name = $2, price_cents = $3 \
         WHERE id = $4 AND store_id = $5 RETURNING {COLUMNS}"
    ))
    .bind(body.store_id)
    .bind(body.name.trim())
    .bind(body.price_cents)
    .bind(id)
    .bind(current.0)
    .fetch_optional(&db)
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("item", id))
}

/// `DELETE /items/{id}` (store:admin).
pub async fn delete(State(db): State<SqlitePool>, Id(id): Id) -> ApiResult<StatusCode> {
    let deleted = sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("item", id));
    }
    Ok(StatusCode::NO_CONTENT)
}

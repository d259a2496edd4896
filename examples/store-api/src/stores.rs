//! `/stores`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

use crate::body::{check_name, Valid, Validate};
use crate::items::Item;
use crate::page::Page;
use crate::{ApiError, ApiResult, Id, Params};

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

/// `POST /stores` (items:write).
pub async fn create(
    State(db): State<SqlitePool>,
    Valid(new): Valid<NewStore>,
) -> ApiResult<(StatusCode, Json<Store>)> {
    let store = sqlx::query_as("INSERT INTO stores (name) VALUES ($1) RETURNING id, name")
        .bind(new.name.trim())
        .fetch_one(&db)
        .await?;
    Ok((StatusCode::CREATED, Json(store)))
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

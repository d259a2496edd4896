//! Lists a page at a time: `?limit=N` (1 to [`MAX_LIMIT`], default
//! [`DEFAULT_LIMIT`]) and `?after=ID` (the last id of the page before),
//! ids ascending; a full page says where the next one is in a `Link:
//! <…>; rel="next"` header (RFC 8288), as GitHub's API does. A list that
//! grew to a million rows is not answered in one response.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::ApiError;

/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 100;

/// The most rows a page holds.
pub const MAX_LIMIT: i64 = 1000;

/// Where a page starts and how long it is, checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Page {
    /// Rows with ids above this one.
    pub(crate) after: i64,
    /// At most this many.
    pub(crate) limit: i64,
}

impl Page {
    /// From the query's `after` and `limit`.
    pub(crate) fn of(after: Option<i64>, limit: Option<i64>) -> Result<Page, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid_request(format!(
                "limit: 1 to {MAX_LIMIT}"
            )));
        }
        Ok(Page {
            after: after.unwrap_or(0),
            limit,
        })
    }

    /// How many rows to ask for: one more than the page, to know whether
    /// another follows.
    pub(crate) fn fetch(self) -> i64 {
        self.limit + 1
    }

    /// Cut `rows` (fetched with [`Page::fetch`]) to the page; the address
    /// of the next page when another follows. `path` is the list's path
    /// with the query that filters it (`/items?store_id=2`).
    pub(crate) fn cut<T>(
        self,
        rows: &mut Vec<T>,
        id: impl Fn(&T) -> i64,
        path: &str,
    ) -> Option<String> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() <= limit {
            return None;
        }
        rows.truncate(limit);
        let last = rows.last().map(id)?;
        let joiner = if path.contains('?') { '&' } else { '?' };
        Some(format!("{path}{joiner}after={last}&limit={}", self.limit))
    }

    /// The answer for `rows` (fetched with [`Page::fetch`]): the page as
    /// a JSON array, with a `Link` to the next when there is one.
    pub(crate) fn answer<T: Serialize>(
        self,
        mut rows: Vec<T>,
        id: impl Fn(&T) -> i64,
        path: &str,
    ) -> Response {
        let next = self.cut(&mut rows, id, path);
        let mut response = Json(rows).into_response();
        if let Some(next) = next {
            if let Ok(value) = HeaderValue::try_from(format!("<{next}>; rel=\"next\"")) {
                response.headers_mut().insert(header::LINK, value);
            }
        }
        response
    }
}

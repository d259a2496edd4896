//! JSON bodies, validated: malformed JSON, wrong types and broken rules
//! all answer 422 with what to fix; a body over the size limit is 413.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

/// A body of type `T` that passed `T::validate`.
#[derive(Debug)]
pub struct Valid<T>(pub T);

/// Field rules beyond the types.
pub trait Validate {
    /// The broken rules, by field.
    fn problems(&self) -> BTreeMap<&'static str, String>;
}

/// A refused body.
#[derive(Debug)]
pub struct Invalid(Response);

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        self.0
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequest<S> for Valid<T> {
    type Rejection = Invalid;

    async fn from_request(req: Request, state: &S) -> Result<Valid<T>, Invalid> {
        let unprocessable = |body: serde_json::Value| {
            Invalid((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        };
        let Json(value) = Json::<T>::from_request(req, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    let body =
                        json!({ "error": "body_too_large", "message": rejection.body_text() });
                    return Invalid((status, Json(body)).into_response());
                }
                unprocessable(json!({ "error": "invalid_body", "message": rejection.body_text() }))
            })?;
        let problems = value.problems();
        if !problems.is_empty() {
            return Err(unprocessable(
                json!({ "error": "validation_failed", "fields": problems }),
            ));
        }
        Ok(Valid(value))
    }
}

/// The rule for names: 1 to 100 characters, not only spaces.
pub fn check_name(problems: &mut BTreeMap<&'static str, String>, name: &str) {
    if name.trim().is_empty() || name.chars().count() > 100 {
        problems.insert("name", "1 to 100 characters, not only spaces".into());
    } else if name.chars().any(hidden) {
        problems.insert(
            "name",
            "no control, format (direction-changing, zero-width) or unassigned characters (a \
             name shown to others must read as it is)"
                .into(),
        );
    }
}

/// A character that changes how a name reads without showing itself:
/// control characters and the Unicode line and paragraph separators (a
/// line break forges a line of a log), format characters (the
/// bidirectional marks and controls that reorder the text around them,
/// CVE-2021-42574 "Trojan Source"; zero-width spaces and joiners, the
/// soft hyphen, the byte-order mark, tags: `Acme` and `Acme` + U+200B
/// are two stores that look like one), and code points that are private
/// or unassigned (shown as whatever a font makes of them).
fn hidden(c: char) -> bool {
    use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
    c.general_category_group() == GeneralCategoryGroup::Other
        || matches!(
            c.general_category(),
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

//! `GET /openapi.json` (OpenAPI 3.1, bearer scheme) and `GET /docs`
//! (Swagger UI, loaded by the browser from a CDN).

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Value};

fn op(summary: &str, scope: &str, ok: &str, body: Option<&str>, id: bool) -> Value {
    let mut op = json!({
        "summary": summary,
        "security": [{ "bearer": [scope] }],
        "responses": {
            ok: { "description": "Success" },
            "401": { "description": "Missing or invalid token (WWW-Authenticate: Bearer error=\"invalid_token\")" },
            "403": { "description": format!("The token lacks the {scope} scope") }
        }
    });
    if let Some(schema) = body {
        op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
        op["responses"]["422"] = json!({ "description": "Invalid body: what to fix, by field" });
    }
    if id {
        op["parameters"] = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }]);
        op["responses"]["404"] = json!({ "description": "No such resource" });
    }
    op
}

/// `op` for a list, a page at a time (`crate::page`), with `extra`
/// parameters.
fn list_op(summary: &str, extra: &[Value]) -> Value {
    let mut op = op(summary, crate::READ, "200", None, false);
    let mut parameters = extra.to_vec();
    parameters.extend([
        json!({ "name": "after", "in": "query", "description": "The last id of the page before",
                "schema": { "type": "integer" } }),
        json!({ "name": "limit", "in": "query", "description": "Rows in the page",
                "schema": { "type": "integer", "minimum": 1, "maximum": crate::MAX_LIMIT,
                            "default": crate::DEFAULT_LIMIT } }),
    ]);
    op["parameters"] = Value::Array(parameters);
    op["responses"]["200"] = json!({
        "description": "A page, ids ascending",
        "headers": { "Link": { "description": "<…>; rel=\"next\" when another page follows",
                               "schema": { "type": "string" } } }
    });
    op["responses"]["400"] =
        json!({ "description": "A parameter that is not a number, or a limit out of range" });
    op
}

/// Authorization: none.
pub async fn document() -> Response {
    let mut create_store = op(
        "Create a store",
        crate::WRITE,
        "201",
        Some("NewStore"),
        false,
    );
    create_store["responses"]["409"] = json!({ "description": "A store with this name exists" });
    // Items are changed only in the caller's own stores (store:admin:
    // any).
    let owned = |mut op: Value| {
        op["responses"]["403"] = json!({ "description": format!(
            "The token lacks the {} scope, or the store is not the caller's (the token's sub \
             made it; store:admin changes any)",
            crate::WRITE
        ) });
        op
    };
    let doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Store API (tessera example)", "version": "0.1.0",
                  "description": "Stores and items. Tokens come from tessera serve; reads need items:read, writes items:write (items only in the caller's own stores: the token's sub that made them), deletes store:admin." },
        "paths": {
            "/stores": {
                "get": list_op("List stores", &[]),
                "post": create_store
            },
            "/stores/{id}": {
                "get": op("A store with the first page of its items (items_next: the rest, when there are more)", crate::READ, "200", None, true),
                "delete": op("Delete a store and its items", crate::ADMIN, "204", None, true)
            },
            "/items": {
                "get": list_op(
                    "List items (of one store with store_id)",
                    &[json!({ "name": "store_id", "in": "query", "schema": { "type": "integer" } })],
                ),
                "post": owned(op("Create an item in one of the caller's stores", crate::WRITE, "201", Some("Item"), false))
            },
            "/items/{id}": {
                "get": op("An item", crate::READ, "200", None, true),
                "put": owned(op("Replace an item of one of the caller's stores", crate::WRITE, "200", Some("Item"), true)),
                "delete": op("Delete an item", crate::ADMIN, "204", None, true)
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "NewStore": { "type": "object", "required": ["name"], "additionalProperties": false,
                              "properties": { "name": { "type": "string", "minLength": 1, "maxLength": 100 } } },
                "Item": { "type": "object", "required": ["store_id", "name", "price_cents"], "additionalProperties": false,
                          "properties": { "store_id": { "type": "integer" },
                                          "name": { "type": "string", "minLength": 1, "maxLength": 100 },
                                          "price_cents": { "type": "integer", "minimum": 0, "maximum": 100000000 } } }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

/// Authorization: none.
///
/// Swagger UI from a CDN, pinned to one version and checked by the
/// browser against its hash (Subresource Integrity): people paste bearer
/// tokens into this page, so a changed or compromised file on the CDN
/// must not run here. To move to another version, take the files'
/// `sha384` from the npm package (`npm pack swagger-ui-dist@VERSION`,
/// then `openssl dgst -sha384 -binary FILE | base64`).
pub async fn page() -> Response {
    let page = Html(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Store API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5.35.0/swagger-ui.css"
 integrity="sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I" crossorigin="anonymous"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5.35.0/swagger-ui-bundle.js"
 integrity="sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9" crossorigin="anonymous"></script>
<script>SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui" });</script>
</body></html>"##,
    );
    (
        [
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Not framed, no <base> or plugins; what Swagger UI itself
            // needs is left to it.
            (
                header::CONTENT_SECURITY_POLICY,
                "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
            ),
        ],
        page,
    )
        .into_response()
}

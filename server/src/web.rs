//! The captions page (`server/web/`, compiled into the binary: no build step, no files to
//! install) and `GET /v1/info`, what the page offers: models, caption sources, languages.
//! The page itself talks to the WebSocket door ([`crate::ws`], docs/WEBSOCKET.md). Also the
//! CORS policy for pages served elsewhere (`--cors-allow-origin`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};
use transcribe_core::language::LANGUAGES;
use transcribe_proto::json::to_json;

use crate::error::RequestError;
use crate::rest::{TokenQuery, authorize};
use crate::service;
use crate::state::AppState;

/// The page's files: path, content type, content.
const FILES: [(&str, &str, &str); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "/web/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "/web/worklet.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/worklet.js"),
    ),
    (
        "/web/style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new().route("/v1/info", get(info));
    for (path, content_type, body) in FILES {
        router = router.route(path, get(move || file(content_type, body)));
    }
    router.with_state(state)
}

async fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // The page loads only its own files and talks only to this server.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                     style-src 'self'; script-src 'self'; worker-src 'self' blob:",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

async fn info(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if let Err(error) = authorize(&state, &headers, query.token.as_deref()) {
        state.count_refusal(&error);
        return crate::rest::error_response(&error, None);
    }
    match info_json(&state) {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => crate::rest::error_response(&error, None),
    }
}

fn info_json(state: &AppState) -> Result<Value, RequestError> {
    let parse = |text: String| {
        serde_json::from_str::<Value>(&text).map_err(|e| RequestError::internal(e.to_string()))
    };
    let json_of = |e: transcribe_proto::json::JsonError| RequestError::internal(e.to_string());
    let models = parse(to_json(&service::list_models(state)).map_err(json_of)?)?;
    let sources = state
        .captions
        .hubs()
        .map(|hub| parse(to_json(&hub.source()).map_err(json_of)?))
        .collect::<Result<Vec<_>, _>>()?;
    let languages: Vec<Value> = LANGUAGES
        .iter()
        .map(|(code, name)| json!({"code": code, "name": name}))
        .collect();
    Ok(json!({"models": models, "sources": sources, "languages": languages}))
}

/// How long a browser may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS policy for `origins` (`--cors-allow-origin`; `*` for any), or none when empty:
/// then browsers refuse cross-origin calls, as without the layer. gRPC-Web needs its headers
/// allowed and its trailers-in-headers exposed.
pub(crate) fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().cloned())
    };
    let name = header::HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                name("x-grpc-web"),
                name("x-user-agent"),
                name("grpc-timeout"),
            ])
            .expose_headers([
                name("grpc-status"),
                name("grpc-message"),
                name("grpc-status-details-bin"),
                name("x-request-id"),
                header::RETRY_AFTER,
            ])
            .max_age(CORS_MAX_AGE),
    )
}

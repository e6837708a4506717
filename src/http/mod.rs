//! The HTTP layer: axum only, and thin. Handlers parse (through [`ruma::Ruma`]), check access,
//! call one domain function and shape the reply.

pub mod auth;
pub mod client;
pub mod federation;
mod guest;
mod health;
pub mod response;
pub mod ruma;
mod summaries;

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::{Error, Result};
use response::LoggedError;

/// The whole HTTP surface, client and federation, for one listener.
pub fn router(state: AppState) -> Router {
    let r = Router::new();
    let r = client::routes(r);
    let r = federation::routes(r);
    let r = health::routes(r);
    r.fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(refuse_nul_in_uri))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::map_response(matrix_error_body))
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// The last line of defence: a handler that panicked still answers, with a Matrix 500, and
/// the request's log line says so. Nothing reachable from input should get here.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    Error::internal(format!("handler panicked: {what}")).into_response()
}

/// Every error answer carries a Matrix body. Our own errors already do (they are marked
/// with [`LoggedError`]); one written by a layer or extractor we do not own (an axum
/// rejection, a tower layer) gets an errcode chosen by its status, keeping its status.
async fn matrix_error_body(mut response: Response) -> Response {
    let status = response.status();
    // A body refused as too large is left unread, so the connection cannot carry another
    // request: say so, or a client may send its next request on it and find it closed.
    // (HTTP/2 has no such header; hyper leaves it out there.)
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error())
        || is_json
        || response.extensions().get::<LoggedError>().is_some()
    {
        return response;
    }
    use ::ruma::api::error::ErrorKind as K;
    let kind = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => K::Unrecognized,
        StatusCode::PAYLOAD_TOO_LARGE => K::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => K::BadJson,
        StatusCode::UNAUTHORIZED => K::MissingToken,
        StatusCode::FORBIDDEN => K::Forbidden,
        _ => K::Unknown,
    };
    let message = status.canonical_reason().unwrap_or("Request refused");
    let mut answer = Error::new(kind, message).into_response();
    *answer.status_mut() = status;
    answer.headers_mut().extend(
        response
            .headers()
            .get(http::header::CONNECTION)
            .map(|v| (http::header::CONNECTION, v.clone())),
    );
    if let Some(logged) = answer.extensions_mut().get_mut::<LoggedError>() {
        logged.internal = status.is_server_error();
    }
    answer
}

async fn unrecognized() -> Error {
    Error::unrecognized("Unrecognized request")
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// CORS as the client-server spec asks: every response allows any origin, and OPTIONS
/// (pre-flight) is answered directly for every path.
async fn cors(req: Request, next: Next) -> Response {
    let mut response = if req.method() == Method::OPTIONS {
        (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    response
}

/// One span per request; one line when it ends, at a level set by the outcome.
async fn trace_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let span = tracing::info_span!(
        "request",
        %method,
        route = %route,
        peer = ?peer,
        user = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status);
    let _enter = span.enter();
    match response.extensions().get::<LoggedError>() {
        Some(e) if e.internal => {
            tracing::error!(status, latency_ms, errcode = %e.errcode, detail = %e.detail, "request failed")
        }
        Some(e) => {
            tracing::info!(status, latency_ms, errcode = %e.errcode, detail = %e.detail, "request refused")
        }
        None => tracing::debug!(status, latency_ms, "request done"),
    }
    response
}

/// Read a whole body, refusing more than `limit` bytes with 413 M_TOO_LARGE.
pub async fn read_body(
    headers: &http::HeaderMap,
    body: Body,
    limits: &crate::config::LimitsConfig,
) -> Result<bytes::Bytes> {
    let limit = limits.max_request_body;
    let too_large = || Error::too_large(format!("Request body is larger than {limit} bytes"));
    // A declared length over the limit is refused before a byte of the body is read: the
    // client is not kept waiting, nor the connection held, for a body never to be used.
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timeout = std::time::Duration::from_secs(limits.body_read_timeout_secs);
    let read = axum::body::to_bytes(body, limit);
    let Ok(read) = tokio::time::timeout(timeout, read).await else {
        return Err(Error::bad_request(format!(
            "Request body not received within {} s",
            limits.body_read_timeout_secs
        )));
    };
    read.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if over {
            too_large()
        } else {
            Error::bad_json(format!("Could not read request body: {e}"))
        }
    })
}

/// Parse a JSON body: invalid JSON is `M_NOT_JSON`, valid JSON of the wrong shape `M_BAD_JSON`,
/// text that cannot be stored (see [`check_storable_json`]) `M_BAD_JSON`.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let parsed = serde_json::from_slice(bytes).map_err(|e| json_error(&e, bytes))?;
    check_storable_json(bytes)?;
    Ok(parsed)
}

/// Refuse a JSON text whose strings hold `\u0000` or a lone surrogate (`\ud800` unpaired).
/// Both are valid JSON but neither can be stored: Postgres refuses NUL in text and `jsonb`,
/// and a lone surrogate is not Unicode, so it would fail deep in a handler as a 500 after part
/// of the work was done. Checked once, on the raw bytes, for every body a client sends.
pub fn check_storable_json(bytes: &[u8]) -> Result<()> {
    // Outside strings a backslash is a syntax error that the parser reports, so every
    // backslash met here starts an escape; `\\` is skipped whole so `\\u0000` is text.
    let hex4 = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        i += offset;
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        match hex4(i + 2) {
            Some(0) => return Err(Error::bad_json("JSON strings may not contain \\u0000")),
            Some(0xD800..=0xDBFF) => {
                let trail = (bytes.get(i + 6..i + 8) == Some(&b"\\u"[..]))
                    .then(|| hex4(i + 8))
                    .flatten();
                if !matches!(trail, Some(0xDC00..=0xDFFF)) {
                    return Err(Error::bad_json(
                        "JSON strings may not contain a lone surrogate",
                    ));
                }
                i += 12;
            }
            Some(0xDC00..=0xDFFF) => {
                return Err(Error::bad_json(
                    "JSON strings may not contain a lone surrogate",
                ));
            }
            _ => i += 2,
        }
    }
    Ok(())
}

/// Refuse a request whose path or query string carries an encoded NUL (`%00`): no ID, type,
/// key or name may hold one, and Postgres cannot store it. One check here instead of one per
/// parameter; a real NUL byte is already refused by the HTTP parser.
async fn refuse_nul_in_uri(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return Error::invalid_param("Path and query parameters may not contain NUL")
            .into_response();
    }
    next.run(req).await
}

/// The errcode for a body that failed to deserialize.
pub fn json_error(e: &serde_json::Error, bytes: &[u8]) -> Error {
    // JSON is UTF-8; skipping values over (IgnoredAny) does not check their strings' bytes.
    if std::str::from_utf8(bytes).is_err()
        || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
    {
        Error::not_json("Request body is not valid JSON")
    } else {
        Error::bad_json(format!("Request body has the wrong shape: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn errors_from_layers_we_do_not_own_get_a_matrix_body() {
        let app: Router = Router::new()
            .route(
                "/typed/{n}",
                axum::routing::get(
                    |axum::extract::Path(n): axum::extract::Path<u32>| async move { n.to_string() },
                ),
            )
            .route(
                "/plain",
                axum::routing::get(|| async { (StatusCode::UNSUPPORTED_MEDIA_TYPE, "nope") }),
            )
            .layer(middleware::map_response(matrix_error_body));
        for (uri, status, errcode) in [
            ("/typed/x", StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            ("/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE, "M_BAD_JSON"),
            ("/nowhere", StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
        ] {
            let response = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{uri}");
            let logged = response.extensions().get::<LoggedError>().cloned();
            assert_eq!(logged.map(|l| l.internal), Some(false), "{uri}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["errcode"], errcode, "{uri}");
            assert!(json["error"].is_string(), "{uri}");
        }
        let ok = app
            .oneshot(Request::get("/typed/7").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[test]
    fn unstorable_json_text_is_found_only_in_escapes() {
        let refused = |s: &str| check_storable_json(s.as_bytes()).is_err();
        assert!(refused(r#"{"a":"\u0000"}"#));
        assert!(refused(r#"{"\u0000":1}"#));
        assert!(refused(r#"{"a":"x\ud800"}"#));
        assert!(refused(r#"{"a":"\uDBFF\u0041"}"#));
        assert!(refused(r#"{"a":"\udc00"}"#));
        assert!(refused(r#"{"a":"\ud800"#));
        assert!(!refused(r#"{"a":"\ud83d\ude00","b":"\\u0000 \\ud800 \\"}"#));
        assert!(!refused(r#"{"a":"\u0001\n\"\u00e9"}"#));
        assert!(!refused("trailing backslash \\"));
    }

    #[tokio::test]
    async fn a_panicking_handler_still_answers_with_a_matrix_error() {
        let app: Router = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    let v: Vec<&'static str> = Vec::new();
                    v[1]
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errcode"], "M_UNKNOWN");
        assert_eq!(json["error"], "Internal server error");
    }
}

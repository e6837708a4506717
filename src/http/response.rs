//! The one place an error body is written.

use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use ruma::api::OutgoingResponseExt;
use ruma::api::client::uiaa::UiaaResponse;
use ruma::api::error::{ErrorBody, ErrorKind, StandardErrorBody};

use crate::error::Error;

/// Attached to error responses so the request span logs what went wrong (the body only
/// carries the sanitised message).
#[derive(Clone, Debug)]
pub struct LoggedError {
    pub errcode: String,
    pub detail: String,
    pub internal: bool,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let logged = LoggedError {
            errcode: self.kind().errcode().to_string(),
            detail: self.to_string(),
            internal: self.is_internal(),
        };
        let ruma_response = match self {
            Error::Uiaa(info) => UiaaResponse::AuthResponse(*info),
            other => {
                let kind = other.kind();
                let body = StandardErrorBody::new(kind.clone(), other.client_message());
                let body = match (&kind, serde_json::to_value(&body)) {
                    // Clients expect `soft_logout` spelled out even when false, as Synapse does.
                    (ErrorKind::UnknownToken(_), Ok(serde_json::Value::Object(mut map))) => {
                        map.entry("soft_logout")
                            .or_insert(serde_json::Value::Bool(false));
                        ErrorBody::Json(serde_json::Value::Object(map))
                    }
                    _ => ErrorBody::Standard(body),
                };
                UiaaResponse::MatrixError(body.into_error(status))
            }
        };
        let mut response = match ruma_response.try_into_http_response::<BytesMut>() {
            Ok(r) => r.map(|b| axum::body::Body::from(b.freeze())),
            Err(_) => {
                let mut r = Response::new(axum::body::Body::from(
                    r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#,
                ));
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        response.extensions_mut().insert(logged);
        response
    }
}

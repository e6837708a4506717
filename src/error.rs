//! The one error type of the server.
//!
//! Every failure that can reach a client or a peer server becomes an [`Error`]; its errcode
//! ([`ErrorKind`]) and HTTP status are decided here and nowhere else. Internal failures
//! (database, I/O) keep their source for the log but answer with a generic message, so
//! database text never leaves the server.

use std::time::Duration;

use http::StatusCode;
use ruma::api::client::uiaa::UiaaInfo;
use ruma::api::error::{ErrorKind, LimitExceededErrorData, RetryAfter, UnknownTokenErrorData};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Matrix error meant for the caller, with its errcode and a human message.
    #[error("{kind:?}: {message}")]
    Matrix { kind: ErrorKind, message: String },

    /// A request we cannot act on that has no more specific errcode (400 M_UNKNOWN).
    #[error("bad request: {0}")]
    BadRequest(String),

    /// Another server failed us (502 M_UNKNOWN); the detail stays in our logs.
    #[error("upstream failure: {0}")]
    Upstream(String),

    /// The request conflicts with what exists (409 M_UNKNOWN), e.g. an alias already taken.
    #[error("conflict: {0}")]
    Conflict(String),

    /// The endpoint exists but not for this HTTP method (405 M_UNRECOGNIZED).
    #[error("method not allowed")]
    MethodNotAllowed,

    /// An Authorization header in the X-Matrix scheme that cannot be read (a field missing, a
    /// server name that is not one): 400 M_UNAUTHORIZED, as Synapse answers, where a missing
    /// or unverifiable signature is 401.
    #[error("malformed authorization: {0}")]
    MalformedAuthorization(String),

    /// User-interactive authentication must continue: answers 401 with the flows.
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The database could not be reached (503): what a [`database_unavailable`] failure
    /// becomes when it is passed on to several callers ([`Error::duplicate`]).
    #[error("database unavailable: {0}")]
    Unavailable(String),

    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Matrix {
            kind,
            message: message.into(),
        }
    }

    /// The same failure for another caller (several requests can share one failed commit):
    /// caller-facing errors keep their errcode and message, internal ones their text.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Matrix { kind, message } => Error::Matrix {
                kind: kind.clone(),
                message: message.clone(),
            },
            Error::BadRequest(m) => Error::BadRequest(m.clone()),
            Error::Upstream(m) => Error::Upstream(m.clone()),
            Error::Conflict(m) => Error::Conflict(m.clone()),
            Error::MethodNotAllowed => Error::MethodNotAllowed,
            Error::MalformedAuthorization(m) => Error::MalformedAuthorization(m.clone()),
            Error::Uiaa(info) => Error::Uiaa(info.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            Error::Database(e) if database_unavailable(e) => Error::Unavailable(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Whether this is the caller-facing M_NOT_FOUND (something simply is not there).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Matrix {
                kind: ErrorKind::NotFound,
                ..
            }
        )
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }

    pub fn unrecognized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unrecognized, message)
    }

    pub fn missing_token() -> Self {
        Self::new(ErrorKind::MissingToken, "Missing access token")
    }

    pub fn unknown_token() -> Self {
        Self::new(
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown or revoked access token",
        )
    }

    /// An access token that expired: the client refreshes it, or logs in again keeping its
    /// device and keys (`soft_logout`).
    pub fn soft_logout() -> Self {
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = true;
        Self::new(ErrorKind::UnknownToken(data), "Access token has expired")
    }

    /// A sliding sync `pos` the server does not know (never handed out, or expired): the
    /// client starts its connection again.
    pub fn unknown_pos() -> Self {
        Self::new(
            ErrorKind::UnknownPos,
            "Unknown or expired position: start the connection again without pos",
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(ErrorKind::LimitExceeded(data), "Too many requests")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// The errcode this error answers with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Matrix { kind, .. } => kind.clone(),
            Error::MethodNotAllowed => ErrorKind::Unrecognized,
            Error::MalformedAuthorization(_) => ErrorKind::Unauthorized,
            Error::BadRequest(_) | Error::Upstream(_) | Error::Conflict(_) => ErrorKind::Unknown,
            Error::Uiaa(_) => ErrorKind::Forbidden,
            Error::Database(_)
            | Error::Unavailable(_)
            | Error::Migrate(_)
            | Error::Io(_)
            | Error::Internal(_) => ErrorKind::Unknown,
        }
    }

    /// The HTTP status for this error, per the client-server and server-server specs.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadRequest(_) | Error::MalformedAuthorization(_) => StatusCode::BAD_REQUEST,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Uiaa(_) => StatusCode::UNAUTHORIZED,
            // The database cannot be reached (down, restarting): the request may succeed
            // later, and the client should be told so rather than of a failure of ours.
            Error::Database(e) if database_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) | Error::Migrate(_) | Error::Io(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::Matrix { kind, .. } => status_for_kind(kind),
        }
    }

    /// The message a caller may see. Internal failures are summarised, never described.
    pub fn client_message(&self) -> String {
        match self {
            Error::Matrix { message, .. }
            | Error::BadRequest(message)
            | Error::MalformedAuthorization(message)
            | Error::Conflict(message) => message.clone(),
            Error::MethodNotAllowed => "Method not allowed for this endpoint".to_owned(),
            Error::Upstream(_) => "A remote server could not be reached or failed".to_owned(),
            Error::Uiaa(_) => "User-interactive authentication required".to_owned(),
            Error::Database(e) if database_unavailable(e) => {
                "The database is unavailable; try again shortly".to_owned()
            }
            Error::Unavailable(_) => "The database is unavailable; try again shortly".to_owned(),
            Error::Database(_) | Error::Migrate(_) | Error::Io(_) | Error::Internal(_) => {
                "Internal server error".to_owned()
            }
        }
    }

    /// Whether the failure is ours (worth an error-level log line) rather than the caller's.
    pub fn is_internal(&self) -> bool {
        self.status_code().is_server_error()
    }
}

/// Whether a database error means the database could not be reached at all (rather than
/// that a statement failed): no connection, a connection lost, none free in time.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Postgres ending sessions as it shuts down or restarts (admin_shutdown,
        // crash_shutdown, cannot_connect_now).
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

fn status_for_kind(kind: &ErrorKind) -> StatusCode {
    use ErrorKind as K;
    match kind {
        K::Forbidden
        | K::GuestAccessForbidden
        | K::UserDeactivated
        | K::ThreepidDenied
        | K::UserLocked
        | K::UserSuspended
        | K::InviteBlocked => StatusCode::FORBIDDEN,
        K::MissingToken | K::UnknownToken(_) | K::Unauthorized => StatusCode::UNAUTHORIZED,
        K::NotFound | K::Unrecognized => StatusCode::NOT_FOUND,
        // A third-party identifier session that is not validated: a 400, as Synapse answers
        // /account/3pid/add and registration with one.
        K::ThreepidAuthFailed => StatusCode::BAD_REQUEST,
        K::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        K::WrongRoomKeysVersion(_) => StatusCode::FORBIDDEN,
        K::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        K::CannotOverwriteMedia => StatusCode::CONFLICT,
        K::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
        K::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        // MSC4186: an expired sliding sync connection is a 400, not a 404.
        K::UnknownPos => StatusCode::BAD_REQUEST,
        K::ConnectionFailed | K::ConnectionTimeout => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(
            Error::missing_token().status_code(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Error::unknown_token().status_code(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(Error::forbidden("x").status_code(), StatusCode::FORBIDDEN);
        assert_eq!(
            Error::unrecognized("x").status_code(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            Error::MethodNotAllowed.status_code(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            Error::too_large("x").status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            Error::limit_exceeded(Duration::from_secs(1)).status_code(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(Error::unknown_pos().status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(
            Error::new(ErrorKind::UserInUse, "x").status_code(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn internal_text_is_hidden() {
        let e = Error::internal("connection to 10.0.0.3 refused");
        assert_eq!(e.client_message(), "Internal server error");
        assert!(e.is_internal());
    }
}

//! The bridge between axum and ruma's endpoint types.
//!
//! [`Ruma<T>`] extracts a ruma request type `T` from an axum request: it authenticates the
//! caller as `T`'s metadata demands, reads the body within the configured limit, and parses it
//! with ruma, turning every failure into the Matrix error the spec asks for. [`route`]
//! registers a handler on every path of `T`'s path history with `T`'s method, so paths and
//! methods come from ruma metadata, never from strings of our own.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use bytes::BytesMut;
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
    path_builder::PathBuilder,
};

use super::auth::Authenticate;
use crate::app::AppState;
use crate::error::{Error, Result};

/// A parsed, authenticated ruma request.
pub struct Ruma<T: IncomingRequest>
where
    T::Authentication: Authenticate,
{
    pub body: T,
    /// What authentication established: the user for access-token endpoints, the origin
    /// server for signed federation requests, `()` for open endpoints.
    pub auth: <T::Authentication as Authenticate>::Output,
    /// The peer address of the connection (rate limits, device last-seen).
    pub client_ip: Option<IpAddr>,
    /// The raw query string, for unstable parameters ruma does not model.
    pub query: Option<String>,
    /// The body as read, for fields ruma does not model (shares the parsed buffer).
    pub raw_body: bytes::Bytes,
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let path_args = path_args(&mut parts, state).await?;
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let query = parts.uri.query().map(str::to_owned);
        let bytes = super::read_body(&parts.headers, body, &state.config.limits).await?;
        let auth = T::Authentication::authenticate(state, &parts, &bytes).await?;
        if T::Authentication::is_guest(&auth) && !super::guest::allowed::<T>() {
            return Err(super::guest::forbidden());
        }
        let bytes = match parts.extensions.get::<BodyDefaults>() {
            Some(defaults) => defaults.apply(bytes),
            None => bytes,
        };
        let body = parse_request::<T>(parts, &bytes, &path_args)?;
        Ok(Ruma {
            body,
            auth,
            client_ip,
            query,
            raw_body: bytes,
        })
    }
}

/// Parse `T` from a request whose body was read and whose caller was authenticated: the
/// checks every body gets, then ruma's parser (again on a lenient reading of the body when
/// ruma refused it), every failure as the Matrix error the spec names. `path_args` are the
/// matched route's path parameters, in order.
pub fn parse_request<T: IncomingRequest + 'static>(
    parts: http::request::Parts,
    bytes: &[u8],
    path_args: &[String],
) -> Result<T> {
    check_object_body(bytes)?;
    if !carries_signed_pdus::<T>() {
        super::check_storable_json(bytes)?;
    }
    let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
    let retry = may_be_lenient(bytes).then(|| parts.clone());
    let mut parsed = parse::<T>(http::Request::from_parts(parts, bytes), &args)?;
    if let (
        Err(FromHttpRequestError::Deserialization(DeserializationError::Json(_))),
        Some(parts),
        Some(lenient),
    ) = (&parsed, retry, lenient_body(bytes))
    {
        let again = parse::<T>(http::Request::from_parts(parts, &lenient[..]), &args)?;
        if again.is_ok() {
            parsed = again;
        }
    }
    parsed.map_err(|e| precise_parse_error::<T>(bytes).unwrap_or_else(|| parse_error(e, bytes)))
}

/// Every request body of the client-server and server-server APIs is a JSON object, but a
/// generated struct parser also takes an array of its fields (and an empty array where every
/// field is optional), so a body like `[]` would pass as `{}`. An empty body is left to the
/// parser and [`lenient_body`].
fn check_object_body(bytes: &[u8]) -> Result<()> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => Ok(()),
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() => {
            Err(Error::bad_json("Request body must be a JSON object"))
        }
        Some(_) => Err(Error::not_json("Request body is not valid JSON")),
    }
}

/// Whether `T`'s body carries PDUs signed by other servers. Their content is canonical JSON,
/// where `\u0000` is allowed, and refusing the whole body would refuse every other event in
/// it; the PDU pipeline judges each event on its own instead.
fn carries_signed_pdus<T: 'static>() -> bool {
    use ruma::api::federation::membership::{
        create_invite, create_join_event, create_knock_event, create_leave_event,
    };
    use ruma::api::federation::transactions::send_transaction_message;
    use std::any::TypeId;
    [
        TypeId::of::<send_transaction_message::v1::Request>(),
        TypeId::of::<create_join_event::v2::Request>(),
        TypeId::of::<create_leave_event::v2::Request>(),
        TypeId::of::<create_knock_event::v1::Request>(),
        TypeId::of::<create_invite::v2::Request>(),
        TypeId::of::<create_invite::v1::Request>(),
        TypeId::of::<crate::federation::legacy_api::SendJoinV1>(),
        TypeId::of::<crate::federation::legacy_api::SendLeaveV1>(),
    ]
    .contains(&TypeId::of::<T>())
}

/// For endpoints whose spec names a more precise error than the parser's for a body it
/// refused: the required keys a `/pushers/set` body lacks answer `M_MISSING_PARAM`.
fn precise_parse_error<T: 'static>(bytes: &[u8]) -> Option<Error> {
    use ruma::api::client::push::set_pusher;
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<set_pusher::v3::Request>() {
        return super::client::missing_set_pusher_params(bytes);
    }
    None
}

/// ruma's parser for `T`. Parsers are not all panic-free on hostile input (a login body
/// without `type` reached a map index in one), and no input from the network may reach a
/// panic: a parser that panics has met a malformed request, answered `400 M_BAD_JSON`.
fn parse<T: IncomingRequest>(
    request: http::Request<&[u8]>,
    args: &[&str],
) -> Result<Result<T, FromHttpRequestError>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        T::try_from_http_request(request, args)
    }))
    .map_err(|_| {
        tracing::warn!(
            endpoint = std::any::type_name::<T>(),
            "request parser panicked on its input"
        );
        Error::bad_json("Malformed request")
    })
}

/// The path parameters of a matched route, in order.
async fn path_args(parts: &mut http::request::Parts, state: &AppState) -> Result<Vec<String>> {
    Ok(RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| Error::invalid_param(format!("Invalid path parameter: {e}")))?
        .iter()
        .map(|(_, v)| v.to_owned())
        .chain(
            parts
                .extensions
                .get::<FilledLastParam>()
                .map(|p| p.0.to_owned()),
        )
        .collect())
}

/// A ruma request whose body is streamed instead of read (media uploads): `body` is parsed
/// from the path, query and headers with an empty body, and `stream` is the real body.
/// Authentication sees no body, so this is only for access-token endpoints.
pub struct RumaStream<T: IncomingRequest>
where
    T::Authentication: Authenticate,
{
    pub body: T,
    pub auth: <T::Authentication as Authenticate>::Output,
    pub stream: axum::body::Body,
    /// The declared body length, to refuse an oversized upload before reading it.
    pub content_length: Option<u64>,
}

impl<T> FromRequest<AppState> for RumaStream<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let (mut parts, stream) = req.into_parts();
        let path_args = path_args(&mut parts, state).await?;
        let auth = T::Authentication::authenticate(state, &parts, &[]).await?;
        if T::Authentication::is_guest(&auth) && !super::guest::allowed::<T>() {
            return Err(super::guest::forbidden());
        }
        let content_length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let request = http::Request::from_parts(parts, &[][..]);
        let body = parse::<T>(request, &args)?.map_err(|e| parse_error(e, &[]))?;
        Ok(RumaStream {
            body,
            auth,
            stream,
            content_length,
        })
    }
}

/// Whether [`lenient_body`] might read `bytes` differently (cheap: no parsing).
fn may_be_lenient(bytes: &[u8]) -> bool {
    bytes.is_empty() || bytes.windows(4).any(|w| w == b"null")
}

/// A second reading of a body ruma refused, for optional fields that clients leave out in
/// ways ruma does not take: no body at all (ruma's generated endpoints read it as `{}`, its
/// hand-written ones such as join by ID or alias do not; matrix-nio POSTs /join with none),
/// and top-level fields set to `null` (matrix-nio's unthreaded receipt sends
/// `"thread_id": null`), read as absent. `None` when there is nothing to read differently.
fn lenient_body(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.is_empty() {
        return Some(b"{}".to_vec());
    }
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).ok()?;
    let before = object.len();
    object.retain(|_, v| !v.is_null());
    if object.len() == before {
        return None;
    }
    serde_json::to_vec(&object).ok()
}

/// Map a ruma parse failure to the errcode the spec names for it.
fn parse_error(e: FromHttpRequestError, body: &[u8]) -> Error {
    match e {
        FromHttpRequestError::MethodMismatch { .. } => Error::MethodNotAllowed,
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            super::json_error(&e, body)
        }
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(_)) => {
            Error::not_json("Request body is not valid UTF-8")
        }
        FromHttpRequestError::Deserialization(e) => {
            Error::invalid_param(format!("Invalid request parameter: {e}"))
        }
        other => Error::bad_json(format!("Malformed request: {other}")),
    }
}

/// A ruma response, written as the spec shapes it.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        write_response(self.0, None)
    }
}

/// A change to a response's JSON body after ruma wrote it, for a field ruma leaves out that
/// other servers or clients need spelled out (see [`route_patched`]).
pub type BodyPatch = fn(&mut serde_json::Value);

fn write_response<R: OutgoingResponse>(response: R, patch: Option<BodyPatch>) -> Response {
    let written = response
        .try_into_http_response::<BytesMut>()
        .map_err(|e| Error::internal(format!("response serialization failed: {e}")))
        .and_then(|res| {
            let Some(patch) = patch else {
                return Ok(res.map(BytesMut::freeze));
            };
            let (parts, body) = res.into_parts();
            let mut json: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Error::internal(format!("response body is not JSON: {e}")))?;
            patch(&mut json);
            let body = serde_json::to_vec(&json)
                .map_err(|e| Error::internal(format!("response serialization failed: {e}")))?;
            Ok(http::Response::from_parts(parts, body.into()))
        });
    match written {
        Ok(res) => res.map(axum::body::Body::from).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Register `handler` for ruma endpoint `T` on all of its paths (every spec version's).
pub fn route<T, H, Fut>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    route_with(router, handler, None)
}

/// Like [`route`], with `patch` applied to the JSON body of every successful answer.
pub fn route_patched<T, H, Fut>(
    router: Router<AppState>,
    handler: H,
    patch: BodyPatch,
) -> Router<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    route_with(router, handler, Some(patch))
}

fn route_with<T, H, Fut>(
    router: Router<AppState>,
    handler: H,
    patch: Option<BodyPatch>,
) -> Router<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        router = router.route(path, method_router(handler.clone(), patch));
    }
    router
}

/// An axum method router for `T`'s method that runs `handler` on the parsed request.
fn method_router<T, H, Fut>(
    handler: H,
    patch: Option<BodyPatch>,
) -> axum::routing::MethodRouter<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    method_router_on(method_filter(&T::METHOD), handler, patch)
}

/// An axum method router for `method` that runs `handler` on the request parsed as `T`.
fn method_router_on<T, H, Fut>(
    method: MethodFilter,
    handler: H,
    patch: Option<BodyPatch>,
) -> axum::routing::MethodRouter<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    let h = move |State(state): State<AppState>, req: Ruma<T>| {
        let handler = handler.clone();
        async move {
            handler(state, req)
                .await
                .map(|response| write_response(response, patch))
        }
    };
    on(method, h)
}

/// Register `handler` on every path of ruma endpoint `T` with `T`'s method, for handlers
/// that take the request through their own extractor `X` (such as [`RumaStream`]) or write
/// their own response (streamed files).
pub fn route_raw<T, X, H, Fut>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    T: IncomingRequest + 'static,
    X: FromRequest<AppState> + Send + 'static,
    H: Fn(AppState, X) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    let h = move |State(state): State<AppState>, req: X| {
        let handler = handler.clone();
        async move { handler(state, req).await }
    };
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        router = router.route(path, on(method_filter(&T::METHOD), h.clone()));
    }
    router
}

/// Fills in fields of a request body that the spec lets clients leave out but ruma's type
/// requires (see [`route_with_body_defaults`]).
pub type BodyDefault = fn(&mut serde_json::Map<String, serde_json::Value>);

/// The [`BodyDefault`] of the route a request came through, as a request extension.
#[derive(Clone, Copy)]
struct BodyDefaults(BodyDefault);

impl BodyDefaults {
    /// The body with the defaults filled in; as it was when it is no JSON object (the parser
    /// then reports what is wrong with it) or nothing was missing.
    fn apply(self, bytes: bytes::Bytes) -> bytes::Bytes {
        let Ok(mut object) =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        else {
            return bytes;
        };
        let before = object.clone();
        (self.0)(&mut object);
        if object == before {
            return bytes;
        }
        serde_json::to_vec(&object).map_or(bytes, bytes::Bytes::from)
    }
}

/// Like [`route`], with `defaults` filling in the body's optional fields before ruma reads
/// it (after authentication, which may sign the body as sent).
pub fn route_with_body_defaults<T, H, Fut>(
    router: Router<AppState>,
    handler: H,
    defaults: BodyDefault,
) -> Router<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        let mark = axum::middleware::map_request(move |mut req: Request| async move {
            req.extensions_mut().insert(BodyDefaults(defaults));
            req
        });
        router = router.route(path, method_router(handler.clone(), None).layer(mark));
    }
    router
}

/// Marks a request routed through a path without its endpoint's last parameter: its value
/// for the parser (see [`route_allowing_empty_last`] and [`route_without_last`]).
#[derive(Clone, Copy)]
struct FilledLastParam(&'static str);

/// Register `handler` on the paths of ruma endpoint `T` without their last parameter, for
/// `method`: the old forms of endpoints taking a transaction id (`POST /send/{eventType}`,
/// `POST /redact/{eventId}`), which clients still use and Synapse still serves. The request
/// is parsed as `T` with `placeholder` as the last parameter, which the handler must not
/// take for the client's.
pub fn route_without_last<T, H, Fut>(
    router: Router<AppState>,
    method: MethodFilter,
    placeholder: &'static str,
    handler: H,
) -> Router<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        let Some((prefix, last)) = path.rsplit_once('/') else {
            continue;
        };
        if !last.starts_with('{') {
            continue;
        }
        // After routing, the request is made the one ruma's parser expects.
        let as_t = axum::middleware::map_request(move |mut req: Request| async move {
            *req.method_mut() = T::METHOD;
            req.extensions_mut().insert(FilledLastParam(placeholder));
            req
        });
        router = router.route(
            prefix,
            method_router_on(method, handler.clone(), None).layer(as_t),
        );
    }
    router
}

/// Like [`route`], and also answers the paths with the last parameter left empty — with or
/// without the trailing slash — the way clients address state with an empty state key
/// (`/state/m.room.name/` or `/state/m.room.name`).
pub fn route_allowing_empty_last<T, H, Fut>(
    router: Router<AppState>,
    handler: H,
) -> Router<AppState>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
    T::OutgoingResponse: Send,
    H: Fn(AppState, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    let mut router = route(router, handler.clone());
    for path in T::PATH_BUILDER.all_paths() {
        let Some((prefix, last)) = path.rsplit_once('/') else {
            continue;
        };
        if !last.starts_with('{') {
            continue;
        }
        for short in [prefix.to_owned(), format!("{prefix}/")] {
            let mark = axum::middleware::map_request(|mut req: Request| async move {
                req.extensions_mut().insert(FilledLastParam(""));
                req
            });
            router = router.route(&short, method_router(handler.clone(), None).layer(mark));
        }
    }
    router
}

fn method_filter(method: &http::Method) -> MethodFilter {
    match *method {
        http::Method::GET => MethodFilter::GET,
        http::Method::POST => MethodFilter::POST,
        http::Method::PUT => MethodFilter::PUT,
        http::Method::DELETE => MethodFilter::DELETE,
        http::Method::PATCH => MethodFilter::PATCH,
        http::Method::HEAD => MethodFilter::HEAD,
        _ => MethodFilter::OPTIONS,
    }
}

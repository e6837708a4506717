//! `GET /_matrix/client/versions`, `/.well-known/matrix/{client,server}`, `/capabilities`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#server-discovery)

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use ruma::RoomVersionId;
use ruma::api::client::discovery::get_capabilities::v3::{
    Capabilities, RoomVersionStability, RoomVersionsCapability,
};
use ruma::api::client::discovery::{discover_homeserver, get_capabilities, get_supported_versions};
use ruma::api::federation::discovery::discover_homeserver as discover_server;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, RumaResponse, route, route_raw};

/// Spec versions this server speaks.
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

/// Unstable features this server implements, as clients look them up in `/versions`.
const UNSTABLE_FEATURES: &[&str] = &[
    // MSC3266 room summaries.
    "im.nheko.summary",
    // MSC4186 simplified sliding sync: Element X will not log in without it.
    "org.matrix.simplified_msc3575",
];

/// The room version new rooms get, as current Synapse.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = crate::room::create::DEFAULT_VERSION;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, versions_route);
    let r = route_raw::<discover_homeserver::Request, Request, _, _>(r, well_known_client_route);
    let r = route(r, well_known_server_route);
    route_raw::<get_capabilities::v3::Request, Ruma<get_capabilities::v3::Request>, _, _>(
        r,
        capabilities_route,
    )
}

/// # `GET /_matrix/client/versions`
async fn versions_route(
    _: AppState,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut res =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    res.unstable_features = UNSTABLE_FEATURES
        .iter()
        .map(|f| ((*f).to_owned(), true))
        .collect();
    Ok(res)
}

/// # `GET /.well-known/matrix/client`
///
/// The configured base URL (`well_known.client`, else `public_baseurl`); with neither, the
/// client listener as the client reached it (its `Host`), so a client given only the server
/// name still finds the API.
async fn well_known_client_route(state: AppState, req: Request) -> Result<Response> {
    let configured = state
        .config
        .well_known
        .client
        .clone()
        .or_else(|| state.config.public_baseurl.clone());
    let base_url = match configured {
        Some(url) => url,
        None => {
            let host = req
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| is_host(h))
                .ok_or_else(|| Error::not_found("No client well-known is configured"))?;
            let listener = &state.config.listeners.client;
            let scheme = match listener.tls_certificate.is_some() {
                true => "https",
                false => "http",
            };
            format!("{scheme}://{host}")
        }
    };
    Ok(RumaResponse(discover_homeserver::Response::new(
        discover_homeserver::HomeserverInfo::new(base_url),
    ))
    .into_response())
}

/// Whether a `Host` header is a host name or address with an optional port, and nothing
/// that could change the meaning of a URL built from it.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// # `GET /.well-known/matrix/server`
async fn well_known_server_route(
    state: AppState,
    _: Ruma<discover_server::Request>,
) -> Result<discover_server::Response> {
    let server = state
        .config
        .well_known
        .server
        .as_deref()
        .ok_or_else(|| Error::not_found("No server well-known is configured"))?;
    let server = server
        .try_into()
        .map_err(|_| Error::internal("well_known.server is not a valid server name"))?;
    Ok(discover_server::Response::new(server))
}

/// # `GET /_matrix/client/v3/capabilities`
///
/// Capabilities at their spec defaults are written out too: ruma leaves a default out
/// (absent means the default), but clients and test suites read these four as Synapse
/// sends them.
async fn capabilities_route(
    _: AppState,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<Response> {
    let available: BTreeMap<RoomVersionId, RoomVersionStability> = supported_room_versions()
        .into_iter()
        .map(|v| (v, RoomVersionStability::Stable))
        .collect();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(DEFAULT_ROOM_VERSION, available);
    let mut json =
        serde_json::to_value(&capabilities).map_err(|e| Error::internal(e.to_string()))?;
    if let Some(map) = json.as_object_mut() {
        for (name, enabled) in [
            ("m.change_password", true),
            ("m.set_displayname", true),
            ("m.set_avatar_url", true),
            // No identity server: third-party IDs cannot be added or removed.
            ("m.3pid_changes", false),
        ] {
            map.entry(name)
                .or_insert_with(|| serde_json::json!({ "enabled": enabled }));
        }
    }
    Ok(axum::Json(serde_json::json!({ "capabilities": json })).into_response())
}

/// Room versions clients may create rooms in (what createRoom accepts).
pub fn supported_room_versions() -> Vec<RoomVersionId> {
    crate::room::create::creatable_versions()
}

//! `GET /_matrix/client/v3/admin/whois/{userId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid)

use axum::Router;
use ruma::MilliSecondsSinceUnixEpoch;
use ruma::api::client::admin::get_user_info::v3::{self, ConnectionInfo, DeviceInfo, SessionInfo};
use serde_json::Value;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route_patched};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_patched(r, whois_route, every_device_has_a_session)
}

/// # `GET /_matrix/client/v3/admin/whois/{userId}`
///
/// Each device is one session (its access token). Trellis records per device only the
/// time and address of its login (`last_seen_ts`, `last_seen_ip`, as `GET /devices`
/// shows them), not each connection nor the user agent: so each session has at most one
/// connection, with `ip` and `last_seen` as recorded and `user_agent` null.
async fn whois_route(state: AppState, req: Ruma<v3::Request>) -> Result<v3::Response> {
    let target = req.body.user_id;
    let devices = state.accounts.whois(&req.auth.user_id, &target).await?;
    let mut response = v3::Response::new();
    for device in devices {
        let mut session = SessionInfo::new();
        if device.last_seen_ts.is_some() || device.last_seen_ip.is_some() {
            let mut connection = ConnectionInfo::new();
            connection.ip = device.last_seen_ip;
            connection.last_seen = device
                .last_seen_ts
                .and_then(|ts| ruma::UInt::try_from(ts).ok())
                .map(MilliSecondsSinceUnixEpoch);
            session.connections.push(connection);
        }
        let mut info = DeviceInfo::new();
        info.sessions.push(session);
        response.devices.insert(device.device_id, info);
    }
    response.user_id = Some(target);
    Ok(response)
}

/// ruma leaves out empty lists; clients and Synapse's answers have `sessions` and
/// `connections` always, and `devices` even for a user without any.
fn every_device_has_a_session(body: &mut Value) {
    let Some(object) = body.as_object_mut() else {
        return;
    };
    let devices = object
        .entry("devices")
        .or_insert_with(|| Value::Object(Default::default()));
    for device in devices
        .as_object_mut()
        .into_iter()
        .flat_map(|d| d.values_mut())
    {
        let Some(device) = device.as_object_mut() else {
            continue;
        };
        let sessions = device
            .entry("sessions")
            .or_insert_with(|| Value::Array(Vec::new()));
        for session in sessions.as_array_mut().into_iter().flatten() {
            if let Some(session) = session.as_object_mut() {
                session
                    .entry("connections")
                    .or_insert_with(|| Value::Array(Vec::new()));
            }
        }
    }
}

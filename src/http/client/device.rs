//! `GET /_matrix/client/v3/devices`, `GET/PUT/DELETE /devices/{deviceId}`, `POST /delete_devices`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#device-management)

use axum::Router;
use ruma::MilliSecondsSinceUnixEpoch;
use ruma::api::client::device::{
    Device, delete_device, delete_devices, get_device, get_devices, update_device,
};

use super::account::password_flows;
use crate::account::uiaa::Purpose;
use crate::app::AppState;
use crate::db::devices::DeviceRow;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_devices_route);
    let r = route(r, get_device_route);
    let r = route(r, update_device_route);
    let r = route(r, delete_device_route);
    route(r, delete_devices_route)
}

fn to_device(row: DeviceRow) -> Device {
    let mut d = Device::new(row.device_id.into());
    d.display_name = row.display_name;
    d.last_seen_ip = row.last_seen_ip;
    d.last_seen_ts = row
        .last_seen_ts
        .and_then(js_int_uint)
        .map(MilliSecondsSinceUnixEpoch);
    d
}

fn js_int_uint(v: i64) -> Option<ruma::UInt> {
    ruma::UInt::try_from(v).ok()
}

/// # `GET /_matrix/client/v3/devices`
async fn get_devices_route(
    state: AppState,
    req: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response> {
    let rows = state.accounts.devices(&req.auth.user_id).await?;
    Ok(get_devices::v3::Response::new(
        rows.into_iter().map(to_device).collect(),
    ))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
async fn get_device_route(
    state: AppState,
    req: Ruma<get_device::v3::Request>,
) -> Result<get_device::v3::Response> {
    let row = state
        .accounts
        .device(&req.auth.user_id, req.body.device_id.as_str())
        .await?;
    Ok(get_device::v3::Response::new(to_device(row)))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
async fn update_device_route(
    state: AppState,
    req: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    state
        .accounts
        .set_device_name(
            &req.auth.user_id,
            req.body.device_id.as_str(),
            req.body.display_name.as_deref(),
        )
        .await?;
    // The name is part of the device list other servers keep.
    state
        .e2e
        .share_device_change(&state.federation, &req.auth.user_id, &req.body.device_id)
        .await?;
    Ok(update_device::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
///
/// Asks for the password first, whichever device is named.
async fn delete_device_route(
    state: AppState,
    req: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    let user = req.auth;
    state
        .accounts
        .check_uiaa(
            Purpose::DeleteDevices,
            Some(&user.user_id),
            &password_flows(),
            req.body.auth.as_ref(),
        )
        .await?;
    // A device the user does not have (gone already, or another user's ID) is answered as
    // deleted, as the spec says and Synapse does; nothing else is touched.
    let deleted = state
        .accounts
        .delete_devices(&user.user_id, &[req.body.device_id.to_string()])
        .await?;
    state
        .e2e
        .share_device_changes(&state.federation, &user.user_id, &deleted, true)
        .await?;
    Ok(delete_device::v3::Response::new())
}

/// # `POST /_matrix/client/v3/delete_devices`
async fn delete_devices_route(
    state: AppState,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let user = req.auth;
    state
        .accounts
        .check_uiaa(
            Purpose::DeleteDevices,
            Some(&user.user_id),
            &password_flows(),
            req.body.auth.as_ref(),
        )
        .await?;
    let ids: Vec<String> = req.body.devices.iter().map(ToString::to_string).collect();
    let deleted = state.accounts.delete_devices(&user.user_id, &ids).await?;
    state
        .e2e
        .share_device_changes(&state.federation, &user.user_id, &deleted, true)
        .await?;
    Ok(delete_devices::v3::Response::new())
}

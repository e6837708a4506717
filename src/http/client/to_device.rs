//! `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid)

use axum::Router;
use ruma::api::client::to_device::send_event_to_device;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, send_to_device_route)
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
async fn send_to_device_route(
    state: AppState,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let body = &req.body;
    let not_object = |c: &&ruma::serde::Raw<_>| !c.json().get().trim_start().starts_with('{');
    if body
        .messages
        .values()
        .flat_map(|devices| devices.values())
        .any(|c| not_object(&c))
    {
        return Err(Error::bad_json("To-device content must be a JSON object"));
    }
    state
        .e2e
        .deliver_to_device(
            &state.federation,
            &req.auth,
            (&body.event_type, body.txn_id.as_str()),
            &body.messages,
        )
        .await?;
    Ok(send_event_to_device::v3::Response::new())
}

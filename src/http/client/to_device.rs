//! `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid)

use axum::Router;
use ruma::api::client::to_device::send_event_to_device;

use crate::app::AppState;
use crate::error::Result;
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
    let remote = state
        .e2e
        .send_to_device(
            &req.auth,
            &body.event_type,
            body.txn_id.as_str(),
            &body.messages,
        )
        .await?;
    if !remote.is_empty() {
        // Integration point for the outbound federation queue: each (destination, content)
        // pair goes to `state.federation.queue_edu(destination, Edu::DirectToDevice(content))`
        // once that exists. Until then these messages are not delivered.
        let messages: usize = remote
            .values()
            .flat_map(|c| c.messages.values())
            .map(|targets| targets.len())
            .sum();
        tracing::debug!(
            destinations = remote.len(),
            messages,
            "remote to-device messages await the outbound federation queue"
        );
    }
    Ok(send_event_to_device::v3::Response::new())
}

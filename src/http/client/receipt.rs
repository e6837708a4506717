//! `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#receipts),
//! [read markers](https://spec.matrix.org/latest/client-server-api/#fully-read-markers)

use axum::Router;
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt::v3;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, receipt_route);
    route(r, read_markers_route)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
///
/// `m.read` and `m.read.private` (optionally per thread) become receipts; `m.fully_read` moves
/// the fully-read marker, as the spec allows on this endpoint too.
async fn receipt_route(state: AppState, req: Ruma<v3::Request>) -> Result<v3::Response> {
    let body = &req.body;
    state
        .federation
        .receipt(
            (&state.rooms, &state.ephemeral),
            &req.auth.user_id,
            &body.room_id,
            &body.receipt_type,
            &body.thread,
            &body.event_id,
        )
        .await?;
    Ok(v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
async fn read_markers_route(
    state: AppState,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let body = &req.body;
    let markers = (
        body.fully_read.as_deref(),
        body.read_receipt.as_deref(),
        body.private_read_receipt.as_deref(),
    );
    state
        .federation
        .read_markers(
            (&state.rooms, &state.ephemeral),
            &req.auth.user_id,
            &body.room_id,
            markers,
        )
        .await?;
    Ok(set_read_marker::v3::Response::new())
}

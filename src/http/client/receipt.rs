//! `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#receipts),
//! [read markers](https://spec.matrix.org/latest/client-server-api/#fully-read-markers)

use axum::Router;
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt::v3::{self, ReceiptType};

use crate::app::AppState;
use crate::ephemeral::receipts::ReceiptKind;
use crate::error::{Error, Result};
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
    let user = &req.auth.user_id;
    let body = &req.body;
    let kind = match &body.receipt_type {
        ReceiptType::Read => ReceiptKind::Read,
        ReceiptType::ReadPrivate => ReceiptKind::ReadPrivate,
        ReceiptType::FullyRead => {
            state
                .ephemeral
                .set_read_markers(user, &body.room_id, Some(&body.event_id), None, None)
                .await?;
            return Ok(v3::Response::new());
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unsupported receipt type {}",
                other.as_str()
            )));
        }
    };
    state
        .ephemeral
        .set_receipt(user, &body.room_id, kind, &body.thread, &body.event_id)
        .await?;
    if kind == ReceiptKind::Read {
        state
            .federation
            .send_read_receipt(
                &state.rooms,
                &body.room_id,
                user,
                &body.event_id,
                &body.thread,
            )
            .await?;
    }
    Ok(v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
async fn read_markers_route(
    state: AppState,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let body = &req.body;
    state
        .ephemeral
        .set_read_markers(
            &req.auth.user_id,
            &body.room_id,
            body.fully_read.as_deref(),
            body.read_receipt.as_deref(),
            body.private_read_receipt.as_deref(),
        )
        .await?;
    if let Some(event_id) = body.read_receipt.as_deref() {
        state
            .federation
            .send_read_receipt(
                &state.rooms,
                &body.room_id,
                &req.auth.user_id,
                event_id,
                &ruma::events::receipt::ReceiptThread::Unthreaded,
            )
            .await?;
    }
    Ok(set_read_marker::v3::Response::new())
}

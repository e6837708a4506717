//! `POST /rooms/{roomId}/report/{eventId}`, `POST /rooms/{roomId}/report`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidreporteventid),
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidreport)

use axum::Router;
use ruma::api::client::room::{report_content, report_room};

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, report_event_route);
    route(r, report_room_route)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
async fn report_event_route(
    state: AppState,
    req: Ruma<report_content::v3::Request>,
) -> Result<report_content::v3::Response> {
    let b = &req.body;
    let reason = b.reason.as_deref().unwrap_or_default();
    state
        .rooms
        .report_event(&req.auth.user_id, &b.room_id, &b.event_id, reason)
        .await?;
    Ok(report_content::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
async fn report_room_route(
    state: AppState,
    req: Ruma<report_room::v3::Request>,
) -> Result<report_room::v3::Response> {
    let b = &req.body;
    state
        .rooms
        .report_room(&req.auth.user_id, &b.room_id, &b.reason)
        .await?;
    Ok(report_room::v3::Response::new())
}

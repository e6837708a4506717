//! `PUT /rooms/{roomId}/send/{eventType}/{txnId}`, `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`
//! (and their older `POST` forms without a transaction id),
//! `GET /rooms/{roomId}/messages`, `GET /rooms/{roomId}/event/{eventId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#sending-events-to-a-room)

use axum::Router;
use axum::routing::MethodFilter;
use ruma::api::Direction;
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::events::TimelineEventType;
use ruma::serde::Raw;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::federation::backfill::MessagesQuery;
use crate::http::ruma::{Ruma, route, route_without_last};
use crate::room::pdu::NewContent;
use crate::room::raw;
use crate::room::timeline::EventFilter;
use crate::room::write::TxnRef;

use super::position;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, send_route);
    let r = route_without_last(r, MethodFilter::POST, NO_TXN, send_without_txn_route);
    let r = route(r, redact_route);
    let r = route_without_last(r, MethodFilter::POST, NO_TXN, redact_without_txn_route);
    let r = route(r, messages_route);
    route(r, event_route)
}

/// The transaction id the forms without one are parsed with; never used as one.
const NO_TXN: &str = "-";

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send_route(
    state: AppState,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let txn_id = req.body.txn_id.clone();
    send(state, req, Some(&txn_id)).await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/send/{eventType}`
///
/// Not in the spec since r0, still used by clients: every call is a new event.
async fn send_without_txn_route(
    state: AppState,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    send(state, req, None).await
}

/// Send a message event; with a transaction id, a repeat answers the event sent first.
async fn send(
    state: AppState,
    req: Ruma<send_message_event::v3::Request>,
    txn_id: Option<&ruma::TransactionId>,
) -> Result<send_message_event::v3::Response> {
    let body = req.body;
    let content = body.body.json();
    if !content.get().trim_start().starts_with('{') {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    let kind = TimelineEventType::from(body.event_type.to_string());
    if matches!(kind, TimelineEventType::RoomRedaction) {
        return Err(Error::bad_json(
            "Redactions are sent through the /redact API",
        ));
    }
    let event_id = state
        .rooms
        .send(
            &req.auth.user_id,
            &body.room_id,
            NewContent {
                kind,
                state_key: None,
                content: content.to_owned(),
                redacts: None,
            },
            txn_id.map(|txn_id| TxnRef {
                device_id: req.auth.device_id.as_str(),
                txn_id: txn_id.as_str(),
            }),
        )
        .await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact_route(
    state: AppState,
    req: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let txn_id = req.body.txn_id.clone();
    redact(state, req, Some(&txn_id)).await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/redact/{eventId}`
///
/// Not in the spec since r0, still used by clients: every call is a new redaction.
async fn redact_without_txn_route(
    state: AppState,
    req: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    redact(state, req, None).await
}

/// Redact an event; with a transaction id, a repeat answers the redaction sent first.
async fn redact(
    state: AppState,
    req: Ruma<redact_event::v3::Request>,
    txn_id: Option<&ruma::TransactionId>,
) -> Result<redact_event::v3::Response> {
    let body = req.body;
    let event_id = state
        .rooms
        .redact(
            &req.auth.user_id,
            &body.room_id,
            &body.event_id,
            body.reason.as_deref(),
            txn_id.map(|txn_id| TxnRef {
                device_id: req.auth.device_id.as_str(),
                txn_id: txn_id.as_str(),
            }),
        )
        .await?;
    Ok(redact_event::v3::Response::new(event_id))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages_route(
    state: AppState,
    req: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let body = req.body;
    let forward = body.dir == Direction::Forward;
    let from = match body.from.as_deref() {
        Some(t) => Some(
            state
                .rooms
                .position(&body.room_id, position(t)?, forward)
                .await?,
        ),
        None => None,
    };
    let to = match body.to.as_deref() {
        Some(t) => Some(
            state
                .rooms
                .position(&body.room_id, position(t)?, false)
                .await?,
        ),
        None => None,
    };
    // The unstable `backfill=false` answers from local data only.
    let local_only = req
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "backfill=false"));
    let mut filter = EventFilter::from(&body.filter);
    filter.ignored = state.accounts.ignored_users(&req.auth.user_id).await?;
    let page = state
        .federation
        .messages(
            &state.rooms,
            (&req.auth).into(),
            &body.room_id,
            MessagesQuery {
                from,
                to,
                forward,
                limit: i64::try_from(u64::from(body.limit)).unwrap_or(i64::MAX),
                filter,
                backfill: !local_only,
            },
        )
        .await?;
    let mut response = get_message_events::v3::Response::new();
    // The spec: `start` is the `from` the client gave.
    response.start = body.from.clone().unwrap_or_else(|| page.start.to_string());
    response.end = page.end.map(|t| t.to_string());
    if !body.filter.lazy_load_options.is_disabled() {
        let members = state.rooms.page_members(&body.room_id, &page.chunk).await?;
        response.state = super::to_raw(&members)?;
    }
    response.chunk = super::to_raw(&page.chunk)?;
    Ok(response)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
async fn event_route(
    state: AppState,
    req: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let v = state
        .rooms
        .event(&req.auth, &req.body.room_id, &req.body.event_id)
        .await?;
    Ok(get_room_event::v3::Response::new(Raw::from_json(raw(&v)?)))
}

//! `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`,
//! `GET /rooms/{roomId}/threads`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidrelationseventid),
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidthreads)

use axum::Router;
use ruma::UInt;
use ruma::api::Direction;
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::api::client::threads::get_threads;

use super::{position, to_raw};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::relations::RelationsQuery;
use crate::room::timeline::TopoToken;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, relations_route);
    let r = route(r, relations_of_type_route);
    let r = route(r, relations_of_type_and_event_type_route);
    route(r, threads_route)
}

/// A handler of one form of `/relations`: the three forms differ only in the filters their
/// paths carry (`$filters`, from the request body `$b`), and share their query and answer.
macro_rules! relations_form {
    ($(#[$doc:meta])* $name:ident, $api:ident, |$b:ident| $filters:expr) => {
        $(#[$doc])*
        async fn $name(
            state: AppState,
            req: Ruma<$api::v1::Request>,
        ) -> Result<$api::v1::Response> {
            let $b = &req.body;
            let (rel_type, event_type): (Option<String>, Option<String>) = $filters;
            let q = RelationsQuery {
                rel_type,
                event_type,
                from: $b.from.as_deref().map(position).transpose()?,
                to: $b.to.as_deref().map(position).transpose()?,
                forward: $b.dir == Direction::Forward,
                limit: $b.limit.map(|l| i64::try_from(u64::from(l)).unwrap_or(i64::MAX)),
                recurse: $b.recurse,
            };
            let page = state
                .rooms
                .relations(&req.auth, &$b.room_id, &$b.event_id, &q)
                .await?;
            let mut r = $api::v1::Response::new(to_raw(&page.chunk)?);
            r.next_batch = page.next_batch.map(|t| t.to_string());
            r.prev_batch = page.prev_batch.map(|t| t.to_string());
            r.recursion_depth = page.recursion_depth.and_then(|d| UInt::try_from(d).ok());
            Ok(r)
        }
    };
}

relations_form!(
    /// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
    relations_route,
    get_relating_events,
    |_b| (None, None)
);

relations_form!(
    /// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
    relations_of_type_route,
    get_relating_events_with_rel_type,
    |b| (Some(b.rel_type.to_string()), None)
);

relations_form!(
    /// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
    relations_of_type_and_event_type_route,
    get_relating_events_with_rel_type_and_event_type,
    |b| (Some(b.rel_type.to_string()), Some(b.event_type.to_string()))
);

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
async fn threads_route(
    state: AppState,
    req: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let b = &req.body;
    let participated = match b.include.as_str() {
        "all" => false,
        "participated" => true,
        other => {
            return Err(Error::invalid_param(format!(
                "include must be \"all\" or \"participated\", not {other:?}"
            )));
        }
    };
    let from = b.from.as_deref().map(TopoToken::parse).transpose()?;
    let limit = b
        .limit
        .map(|l| i64::try_from(u64::from(l)).unwrap_or(i64::MAX));
    let page = state
        .rooms
        .threads(&req.auth, &b.room_id, participated, from, limit)
        .await?;
    let mut r = get_threads::v1::Response::new(to_raw(&page.chunk)?);
    r.next_batch = page.next_batch.map(|t| t.to_string());
    Ok(r)
}

//! `GET /rooms/{roomId}/state`, `GET/PUT /rooms/{roomId}/state/{eventType}/{stateKey}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidstate)

use axum::Router;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::api::error::ErrorKind;
use ruma::events::TimelineEventType;
use ruma::events::room::canonical_alias::RoomCanonicalAliasEventContent;
use ruma::serde::Raw;
use ruma::{RoomId, UserId};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route, route_allowing_empty_last};
use crate::room::pdu::NewContent;
use crate::room::raw;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_state_route);
    let r = route_allowing_empty_last(r, get_state_key_route);
    route_allowing_empty_last(r, put_state_route)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn get_state_route(
    state: AppState,
    req: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let events = state
        .rooms
        .current_state(&req.auth.user_id, &req.body.room_id)
        .await?;
    let events = events
        .iter()
        .map(|v| raw(v).map(Raw::from_json))
        .collect::<Result<Vec<_>>>()?;
    Ok(get_state_events::v3::Response::new(events))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
///
/// The event's content, or with `?format=event` the whole event in client format.
async fn get_state_key_route(
    state: AppState,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    use get_state_event_for_key::v3::StateEventFormat;
    let b = &req.body;
    let (user, kind) = (&req.auth.user_id, b.event_type.to_string());
    let answer = match &b.format {
        StateEventFormat::Content => {
            state
                .rooms
                .state_content(user, &b.room_id, &kind, &b.state_key)
                .await?
        }
        StateEventFormat::Event => {
            state
                .rooms
                .state_event(user, &b.room_id, &kind, &b.state_key)
                .await?
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown format {:?}: content or event",
                other.as_str()
            )));
        }
    };
    Ok(get_state_event_for_key::v3::Response::new(raw(&answer)?))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn put_state_route(
    state: AppState,
    req: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let b = req.body;
    let content = b.body.json();
    let value: serde_json::Value =
        serde_json::from_str(content.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !value.is_object() {
        return Err(Error::bad_json("State content must be a JSON object"));
    }
    let kind = TimelineEventType::from(b.event_type.to_string());
    validate_known_state(&kind, &value)?;
    if kind == TimelineEventType::RoomPowerLevels
        && let Some(levels) = value.as_object()
    {
        crate::room::power::check_integer_levels(levels)?;
    }
    if kind == TimelineEventType::RoomCanonicalAlias {
        check_canonical_aliases(&state, &req.auth.user_id, &b.room_id, &value).await?;
    }
    let event_id = state
        .rooms
        .send(
            &req.auth.user_id,
            &b.room_id,
            NewContent {
                kind,
                state_key: Some(b.state_key),
                content: content.to_owned(),
                redacts: None,
            },
            None,
        )
        .await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

/// Content of well-known state types must parse as the spec defines them (Synapse refuses
/// e.g. a name that is not a string).
fn validate_known_state(kind: &TimelineEventType, v: &serde_json::Value) -> Result<()> {
    use ruma::events::room;
    let json = v.to_string();
    let ok = match kind {
        TimelineEventType::RoomName => {
            serde_json::from_str::<room::name::RoomNameEventContent>(&json).is_ok()
        }
        TimelineEventType::RoomTopic => {
            serde_json::from_str::<room::topic::RoomTopicEventContent>(&json).is_ok()
        }
        TimelineEventType::RoomJoinRules => {
            serde_json::from_str::<room::join_rules::RoomJoinRulesEventContent>(&json).is_ok()
        }
        TimelineEventType::RoomPowerLevels => {
            serde_json::from_str::<room::power_levels::RoomPowerLevelsEventContent>(&json).is_ok()
        }
        TimelineEventType::RoomHistoryVisibility => serde_json::from_str::<
            room::history_visibility::RoomHistoryVisibilityEventContent,
        >(&json)
        .is_ok(),
        TimelineEventType::RoomMember => {
            serde_json::from_str::<room::member::RoomMemberEventContent>(&json).is_ok()
        }
        TimelineEventType::RoomCanonicalAlias => {
            serde_json::from_str::<room::canonical_alias::RoomCanonicalAliasEventContent>(&json)
                .is_ok()
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(format!("Invalid content for {kind}")))
    }
}

/// A canonical alias event may only name aliases that point to its room (as Synapse checks,
/// answering `M_BAD_ALIAS`): clients follow them to join. Only aliases the event adds are
/// checked, so an alias deleted since it was set does not block other changes.
async fn check_canonical_aliases(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
    content: &serde_json::Value,
) -> Result<()> {
    let aliases = |v: &serde_json::Value| {
        serde_json::from_value::<RoomCanonicalAliasEventContent>(v.clone())
            .map(|c| c.alias.into_iter().chain(c.alt_aliases).collect::<Vec<_>>())
            .map_err(|e| Error::bad_json(format!("Invalid canonical alias content: {e}")))
    };
    let before = match state
        .rooms
        .state_content(user, room_id, "m.room.canonical_alias", "")
        .await
    {
        // A stored event that no longer parses names nothing worth keeping.
        Ok(old) => aliases(&old).unwrap_or_default(),
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };
    for alias in aliases(content)? {
        if before.contains(&alias) {
            continue;
        }
        let resolved = if alias.server_name() == state.keys.server_name() {
            state.rooms.resolve_alias(&alias).await
        } else {
            state.federation.remote_alias(&alias).await
        };
        let points_here = match resolved {
            Ok((target, _)) => target == room_id,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        if !points_here {
            return Err(Error::new(
                ErrorKind::BadAlias,
                format!("Room alias {alias} does not point to the room"),
            ));
        }
    }
    Ok(())
}

//! `GET /_matrix/client/v3/sync`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3sync)

use std::time::Duration;

use axum::Router;
use ruma::api::client::filter::{FilterDefinition, LazyLoadOptions};
use ruma::api::client::sync::sync_events::v3::{
    self, Filter, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom, State,
    StateEvents, Timeline,
};
use ruma::serde::Raw;
use ruma::{OwnedUserId, UInt};
use serde_json::Value;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route_patched};
use crate::room::raw;
use crate::sync::e2e::E2eSync;
use crate::sync::filter::SyncFilter;
use crate::sync::token::SyncToken;
use crate::sync::{JoinedRoomSync, SyncRequest};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_patched(r, sync_route, spell_out_empty_sections)
}

/// Sections of a room clients read without checking they are there, as Synapse always
/// sends them: (membership, sections whose `events` list is written even when empty).
const ROOM_SECTIONS: [(&str, &[&str]); 2] = [
    ("join", &["state", "account_data", "ephemeral"]),
    ("leave", &["state", "account_data"]),
];

/// ruma leaves empty sections and `limited: false` out; clients (and the suites measuring
/// servers) expect each joined or left room to have its timeline with `events` and
/// `limited`, and its state, account data and (joined) ephemeral and summary objects, as
/// Synapse writes them.
fn spell_out_empty_sections(body: &mut Value) {
    fn object<'a>(
        parent: &'a mut serde_json::Map<String, Value>,
        key: &str,
    ) -> Option<&'a mut serde_json::Map<String, Value>> {
        parent
            .entry(key)
            .or_insert_with(|| Value::Object(Default::default()))
            .as_object_mut()
    }
    for (membership, sections) in ROOM_SECTIONS {
        let Some(rooms) = body
            .pointer_mut(&format!("/rooms/{membership}"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for room in rooms.values_mut().filter_map(Value::as_object_mut) {
            if let Some(timeline) = object(room, "timeline") {
                timeline
                    .entry("events")
                    .or_insert_with(|| Value::Array(Vec::new()));
                timeline.entry("limited").or_insert(Value::Bool(false));
            }
            for section in sections {
                // A client that asked for state after the timeline has that instead.
                if *section == "state" && room.contains_key("org.matrix.msc4222.state_after") {
                    continue;
                }
                if let Some(section) = object(room, section) {
                    section
                        .entry("events")
                        .or_insert_with(|| Value::Array(Vec::new()));
                }
            }
            if membership == "join" {
                object(room, "summary");
                object(room, "unread_notifications");
            }
        }
    }
}

/// Longest a sync request waits for news.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: i64 = 10;

/// # `GET /_matrix/client/v3/sync`
async fn sync_route(state: AppState, req: Ruma<v3::Request>) -> Result<v3::Response> {
    let user = req.auth;
    let body = req.body;
    let filter: FilterDefinition = match &body.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(f)) => f.clone(),
        Some(Filter::FilterId(id)) => {
            let raw = state.accounts.filter(&user.user_id, id).await?;
            serde_json::from_str(raw.get())
                .map_err(|e| Error::internal(format!("stored filter: {e}")))?
        }
        Some(_) => return Err(Error::invalid_param("Unsupported filter")),
    };
    crate::sync::filter::check_bounds(&filter)?;
    let since = body.since.as_deref().map(SyncToken::parse).transpose()?;
    let sync_filter = SyncFilter::from(&filter);
    let request = SyncRequest {
        since,
        device_id: user.device_id.clone(),
        timeline_limit: filter
            .room
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| {
                i64::try_from(u64::from(l)).unwrap_or(i64::MAX)
            }),
        full_state: body.full_state,
        include_leave: filter.room.include_leave,
        lazy_load_members: !filter.room.state.lazy_load_options.is_disabled(),
        include_redundant_members: matches!(
            filter.room.state.lazy_load_options,
            LazyLoadOptions::Enabled {
                include_redundant_members: true
            }
        ),
        timeout: body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
        timeline_select: sync_filter.timeline_select(),
        ignored_news: sync_filter.ignored_news(),
        filter: Some(sync_filter),
    };
    state
        .federation
        .presence_from_sync(&state.ephemeral, &user.user_id, &body.set_presence)
        .await?;
    let result = state.sync.sync(&user.user_id, request).await?;

    let per_thread = filter.room.timeline.unread_thread_notifications;
    let mut response = v3::Response::new(result.next_batch.to_string());
    for (room_id, r) in result.join {
        let mut joined = JoinedRoom::new();
        fill(&mut joined.timeline, &mut joined.state, &r)?;
        joined.account_data.events = raws(&r.account_data)?;
        if let Some(summary) = &r.summary {
            joined.summary.heroes = summary
                .heroes
                .iter()
                .filter_map(|h| OwnedUserId::try_from(h.as_str()).ok())
                .collect();
            joined.summary.joined_member_count = Some(UInt::new_saturating(
                u64::try_from(summary.joined).unwrap_or(0),
            ));
            joined.summary.invited_member_count = Some(UInt::new_saturating(
                u64::try_from(summary.invited).unwrap_or(0),
            ));
        }
        joined.ephemeral.events = raws(&r.ephemeral)?;
        set_unread(&mut joined, &r.unread, per_thread);
        response.rooms.join.insert(room_id, joined);
    }
    for (room_id, events) in result.invite {
        let mut invited = InvitedRoom::new();
        invited.invite_state = InviteState::from(raws(&events)?);
        response.rooms.invite.insert(room_id, invited);
    }
    for (room_id, events) in result.knock {
        let mut knocked = KnockedRoom::new();
        let mut knock_state = KnockState::new();
        knock_state.events = raws(&events)?;
        knocked.knock_state = knock_state;
        response.rooms.knock.insert(room_id, knocked);
    }
    for (room_id, r) in result.leave {
        let mut left = LeftRoom::new();
        fill(&mut left.timeline, &mut left.state, &r)?;
        response.rooms.leave.insert(room_id, left);
    }
    response.account_data.events = raws(&result.account_data)?;
    fill_e2e(&mut response, result.e2e)?;
    response.presence.events = raws(&result.presence)?;
    Ok(response)
}

fn fill(timeline: &mut Timeline, state: &mut State, r: &JoinedRoomSync) -> Result<()> {
    timeline.events = raws(&r.timeline)?;
    timeline.limited = r.limited;
    timeline.prev_batch = r.prev_batch.clone();
    let mut events = StateEvents::new();
    events.events = raws(&r.state)?;
    *state = State::Before(events);
    Ok(())
}

fn raws<T>(values: &[Value]) -> Result<Vec<Raw<T>>> {
    values.iter().map(|v| raw(v).map(Raw::from_json)).collect()
}

/// To-device messages, key counts and device-list changes.
fn fill_e2e(response: &mut v3::Response, e2e: E2eSync) -> Result<()> {
    response.to_device.events = raws(&e2e.to_device)?;
    response.device_one_time_keys_count = e2e.one_time_keys_count;
    // Always present, so clients know the server supports fallback keys.
    response.device_unused_fallback_key_types = Some(e2e.unused_fallback_key_types);
    response.device_lists.changed = e2e.changed;
    response.device_lists.left = e2e.left;
    Ok(())
}

/// Unread counts: per thread when the filter asks for it (the main timeline apart), else all
/// in one count, as the spec says.
fn set_unread(
    joined: &mut JoinedRoom,
    unread: &std::collections::BTreeMap<String, (i64, i64)>,
    per_thread: bool,
) {
    use ruma::api::client::sync::sync_events::UnreadNotificationsCount;
    let count = |n: i64| Some(UInt::new_saturating(u64::try_from(n).unwrap_or(0)));
    let (mut n, mut h) = (0, 0);
    for (thread, (tn, th)) in unread {
        if per_thread && thread != "main" {
            if let Ok(root) = ruma::OwnedEventId::try_from(thread.as_str()) {
                let mut c = UnreadNotificationsCount::new();
                c.notification_count = count(*tn);
                c.highlight_count = count(*th);
                joined.unread_thread_notifications.insert(root, c);
            }
        } else {
            n += tn;
            h += th;
        }
    }
    joined.unread_notifications.notification_count = count(n);
    joined.unread_notifications.highlight_count = count(h);
}

//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
//!
//! [MSC4186](https://github.com/matrix-org/matrix-spec-proposals/pull/4186): simplified
//! sliding sync.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use ruma::api::client::sync::sync_events::v5::{self, response};
use ruma::serde::Raw;
use ruma::{OwnedMxcUri, OwnedRoomId, UInt};
use serde_json::Value;

use super::to_raw;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::raw;
use crate::sync::sliding::request::{
    ExtensionsSpec, ListFilters, ListSpec, RequiredState, RoomConfig, SlidingRequest, ToDeviceSpec,
};
use crate::sync::sliding::{ExtensionsData, RoomData, SlidingResponse};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, sliding_sync_route)
}

/// Longest a request waits for news, as `/v3/sync`.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// # `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
async fn sliding_sync_route(state: AppState, req: Ruma<v5::Request>) -> Result<v5::Response> {
    let user = req.auth;
    let body = req.body;
    state
        .federation
        .presence_from_sync(&state.ephemeral, &user.user_id, &body.set_presence)
        .await?;
    let txn_id = body.txn_id.clone();
    let mut request = sliding_request(body);
    add_space_filters(&mut request, &req.raw_body)?;
    let result = state
        .sync
        .sliding_sync(&user.user_id, &user.device_id, request)
        .await?;
    let mut response = shape(result)?;
    response.txn_id = txn_id;
    Ok(response)
}

fn sliding_request(body: v5::Request) -> SlidingRequest {
    let number = |n: UInt| i64::try_from(u64::from(n)).unwrap_or(i64::MAX);
    let config = |limit: UInt, required: Vec<(ruma::events::StateEventType, String)>| RoomConfig {
        timeline_limit: number(limit),
        required_state: RequiredState {
            entries: required
                .into_iter()
                .map(|(t, k)| (t.to_string(), k))
                .collect(),
        },
    };
    let type_filter = |types: Vec<ruma::directory::RoomTypeFilter>| -> Vec<Option<String>> {
        types
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect()
    };
    let lists = body
        .lists
        .into_iter()
        .map(|(name, list)| {
            let filters = list.filters.unwrap_or_default();
            let spec = ListSpec {
                ranges: list
                    .ranges
                    .iter()
                    .map(|(a, b)| (u64::from(*a), u64::from(*b)))
                    .collect(),
                config: config(
                    list.room_details.timeline_limit,
                    list.room_details.required_state,
                ),
                filters: ListFilters {
                    is_dm: filters.is_dm,
                    is_encrypted: filters.is_encrypted,
                    is_invite: filters.is_invite,
                    room_types: type_filter(filters.room_types),
                    not_room_types: type_filter(filters.not_room_types),
                    spaces: None,
                },
            };
            (name, spec)
        })
        .collect();
    let subscriptions = body
        .room_subscriptions
        .into_iter()
        .map(|(room, sub)| (room, config(sub.timeline_limit, sub.required_state)))
        .collect();
    let e = body.extensions;
    let on = |enabled: Option<bool>| enabled == Some(true);
    SlidingRequest {
        conn_id: body.conn_id.unwrap_or_default(),
        pos: body.pos,
        timeout: body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
        lists,
        subscriptions,
        extensions: ExtensionsSpec {
            to_device: on(e.to_device.enabled).then(|| ToDeviceSpec {
                since: e.to_device.since.clone(),
                limit: e.to_device.limit.map(number),
            }),
            e2ee: on(e.e2ee.enabled),
            account_data: on(e.account_data.enabled),
            receipts: on(e.receipts.enabled),
            typing: on(e.typing.enabled),
        },
    }
}

/// The body's part ruma does not model: each list's `spaces` filter.
#[derive(serde::Deserialize)]
struct Unmodelled {
    #[serde(default)]
    lists: BTreeMap<String, UnmodelledList>,
}

#[derive(serde::Deserialize)]
struct UnmodelledList {
    #[serde(default)]
    filters: Option<UnmodelledFilters>,
}

#[derive(serde::Deserialize)]
struct UnmodelledFilters {
    #[serde(default)]
    spaces: Option<Vec<OwnedRoomId>>,
}

fn add_space_filters(request: &mut SlidingRequest, body: &[u8]) -> Result<()> {
    // Most requests have no such filter: they are not read a second time. (A key written
    // with escapes is not found, and the filter then not applied: no client writes it so.)
    if !body.windows(8).any(|w| w == b"\"spaces\"") {
        return Ok(());
    }
    let read: Unmodelled = serde_json::from_slice(body)
        .map_err(|e| Error::bad_json(format!("Invalid list filter: {e}")))?;
    for (name, list) in read.lists {
        let spaces = list.filters.and_then(|f| f.spaces);
        if let (Some(spec), Some(spaces)) = (request.lists.get_mut(&name), spaces) {
            spec.filters.spaces = Some(spaces);
        }
    }
    Ok(())
}

fn shape(result: SlidingResponse) -> Result<v5::Response> {
    let mut response = v5::Response::new(result.pos);
    for (name, count) in result.lists {
        let mut list = response::List::default();
        list.count = UInt::new_saturating(count);
        response.lists.insert(name, list);
    }
    for (room_id, data) in result.rooms {
        response.rooms.insert(room_id, room(data)?);
    }
    response.extensions = extensions(result.extensions)?;
    Ok(response)
}

fn count(n: i64) -> UInt {
    UInt::new_saturating(u64::try_from(n).unwrap_or(0))
}

fn room(data: RoomData) -> Result<response::Room> {
    let mut room = response::Room::new();
    room.name = data.name;
    room.avatar = match data.avatar {
        None => ruma::JsOption::Undefined,
        Some(None) => ruma::JsOption::Null,
        Some(Some(url)) => ruma::JsOption::Some(OwnedMxcUri::from(url)),
    };
    room.heroes = data.heroes.map(|heroes| {
        heroes
            .into_iter()
            .map(|h| {
                let mut hero = response::Hero::new(h.user_id);
                hero.name = h.displayname;
                hero.avatar = h.avatar_url.map(OwnedMxcUri::from);
                hero
            })
            .collect()
    });
    room.initial = data.initial.then_some(true);
    room.is_dm = data.is_dm;
    room.invite_state = data.invite_state.as_deref().map(to_raw).transpose()?;
    room.unread_notifications.notification_count = data.notification_count.map(count);
    room.unread_notifications.highlight_count = data.highlight_count.map(count);
    room.timeline = to_raw(&data.timeline)?;
    room.required_state = to_raw(&data.required_state)?;
    room.prev_batch = data.prev_batch;
    room.limited = data.limited;
    room.joined_count = data.joined_count.map(count);
    room.invited_count = data.invited_count.map(count);
    room.num_live = data.num_live.map(count);
    room.bump_stamp = data.bump_stamp.map(count);
    Ok(room)
}

fn one<T>(v: &Value) -> Result<Raw<T>> {
    raw(v).map(Raw::from_json)
}

fn extensions(data: ExtensionsData) -> Result<response::Extensions> {
    let mut out = response::Extensions::default();
    if let Some(td) = data.to_device {
        let mut to_device = response::ToDevice::default();
        to_device.next_batch = td.next_batch;
        to_device.events = to_raw(&td.events)?;
        out.to_device = Some(to_device);
    }
    if let Some(e2e) = data.e2ee {
        out.e2ee.device_lists.changed = e2e.changed;
        out.e2ee.device_lists.left = e2e.left;
        out.e2ee.device_one_time_keys_count = e2e.one_time_keys_count;
        // Always present, so clients know the server supports fallback keys.
        out.e2ee.device_unused_fallback_key_types = Some(e2e.unused_fallback_key_types);
    }
    if let Some(ad) = data.account_data {
        out.account_data.global = to_raw(&ad.global)?;
        for (room_id, events) in ad.rooms {
            out.account_data.rooms.insert(room_id, to_raw(&events)?);
        }
    }
    for (room_id, event) in data.receipts {
        out.receipts.rooms.insert(room_id, one(&event)?);
    }
    for (room_id, event) in data.typing {
        out.typing.rooms.insert(room_id, one(&event)?);
    }
    Ok(out)
}

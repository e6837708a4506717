//! `POST /_matrix/client/v3/search`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3search)

use std::collections::BTreeMap;

use axum::Router;
use ruma::api::client::search::search_events::v3::{
    Categories, Criteria, EventContextResult, GroupingKey, OrderBy, Request, Response,
    ResultCategories, ResultGroup, ResultGroupMap, ResultRoomEvents, SearchKeys, SearchResult,
    UserProfile,
};
use ruma::serde::Raw;
use ruma::{OwnedMxcUri, UInt};
use serde_json::Value;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::raw;
use crate::room::search::{
    ContextLimits, DEFAULT_LIMIT, Found, GroupPage, Key, Order, Search, SearchPage,
};
use crate::room::timeline::EventFilter;
use crate::sync::filter::check_event_filter_bounds;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, search_route)
}

/// # `POST /_matrix/client/v3/search`
async fn search_route(state: AppState, req: Ruma<Request>) -> Result<Response> {
    let Categories {
        room_events: Some(criteria),
        ..
    } = req.body.search_categories
    else {
        // No category asked for (room events are the only one): nothing to find.
        return Ok(Response::new(ResultCategories::new()));
    };
    let search = parse(criteria, req.body.next_batch)?;
    let page = state.rooms.search(&req.auth.user_id, &search).await?;
    let mut categories = ResultCategories::new();
    categories.room_events = room_events(page)?;
    Ok(Response::new(categories))
}

/// The client's criteria as a [`Search`]: unknown keys, orders and groupings are refused,
/// as are filter lists longer than any sync filter may hold.
fn parse(c: Criteria, next_batch: Option<String>) -> Result<Search> {
    let keys = match c.keys.as_deref() {
        None | Some([]) => Key::ALL.to_vec(),
        Some(keys) => keys.iter().map(key).collect::<Result<_>>()?,
    };
    let order = match c.order_by {
        None | Some(OrderBy::Rank) => Order::Rank,
        Some(OrderBy::Recent) => Order::Recent,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown order_by {:?}",
                other.as_str()
            )));
        }
    };
    let (mut group_by_room, mut group_by_sender) = (false, false);
    for grouping in &c.groupings.group_by {
        match &grouping.key {
            Some(GroupingKey::RoomId) => group_by_room = true,
            Some(GroupingKey::Sender) => group_by_sender = true,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown grouping key {:?}",
                    other.as_str()
                )));
            }
            None => {}
        }
    }
    check_event_filter_bounds(&c.filter)?;
    let ctx = &c.event_context;
    let context = (ctx.before_limit > UInt::MIN
        || ctx.after_limit > UInt::MIN
        || ctx.include_profile)
        .then(|| ContextLimits {
            before: u64::from(ctx.before_limit),
            after: u64::from(ctx.after_limit),
            profile: ctx.include_profile,
        });
    let f = &c.filter;
    Ok(Search {
        term: c.search_term,
        keys,
        rooms: f.rooms.clone(),
        not_rooms: f.not_rooms.clone(),
        filter: EventFilter::from(f),
        limit: f.limit.map_or(DEFAULT_LIMIT, u64::from),
        order,
        context,
        include_state: c.include_state.unwrap_or(false),
        group_by_room,
        group_by_sender,
        next_batch,
    })
}

fn key(k: &SearchKeys) -> Result<Key> {
    match k {
        SearchKeys::ContentBody => Ok(Key::Body),
        SearchKeys::ContentName => Ok(Key::Name),
        SearchKeys::ContentTopic => Ok(Key::Topic),
        other => Err(Error::invalid_param(format!(
            "Unknown search key {:?}",
            other.as_str()
        ))),
    }
}

fn room_events(page: SearchPage) -> Result<ResultRoomEvents> {
    let mut out = ResultRoomEvents::new();
    out.count = Some(UInt::try_from(page.count).unwrap_or(UInt::MAX));
    out.next_batch = page.next_batch;
    out.highlights = page.highlights;
    out.results = page.results.iter().map(result).collect::<Result<_>>()?;
    if let Some(groups) = page.by_room {
        out.groups.insert(ResultGroupMap::RoomId(group_map(groups)));
    }
    if let Some(groups) = page.by_sender {
        out.groups.insert(ResultGroupMap::Sender(group_map(groups)));
    }
    out.state = page
        .state
        .into_iter()
        .map(|(room, events)| Ok((room, to_raw(&events)?)))
        .collect::<Result<_>>()?;
    Ok(out)
}

fn result(found: &Found) -> Result<SearchResult> {
    let mut r = SearchResult::new();
    r.rank = Some(found.rank);
    r.result = Some(Raw::from_json(raw(&found.event)?));
    if let Some(c) = &found.context {
        let mut context = EventContextResult::new();
        context.start = Some(c.start.clone());
        context.end = Some(c.end.clone());
        context.events_before = to_raw(&c.before)?;
        context.events_after = to_raw(&c.after)?;
        context.profile_info = c
            .profiles
            .iter()
            .map(|(user, p)| {
                let mut profile = UserProfile::new();
                profile.displayname = p.displayname.clone();
                profile.avatar_url = p.avatar_url.as_deref().map(OwnedMxcUri::from);
                (user.clone(), profile)
            })
            .collect();
        r.context = context;
    }
    Ok(r)
}

fn group_map<K: Ord>(groups: BTreeMap<K, GroupPage>) -> BTreeMap<K, ResultGroup> {
    groups
        .into_iter()
        .map(|(key, g)| {
            let mut group = ResultGroup::new();
            group.results = g.results;
            group.order = Some(UInt::try_from(g.order).unwrap_or(UInt::MAX));
            group.next_batch = g.next_batch;
            (key, group)
        })
        .collect()
}

fn to_raw<T>(events: &[Value]) -> Result<Vec<Raw<T>>> {
    events.iter().map(|v| raw(v).map(Raw::from_json)).collect()
}

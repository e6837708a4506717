//! /sync: what changed for a user since a token, across all their rooms.
//!
//! Each kind of data is read for all rooms at once (rooms and memberships, recent timeline
//! events, state snapshots, account data), never a query per room for those; visibility is
//! still checked per room. Timelines are read only for the rooms the notifier says changed
//! since the token, when it knows.
//!
//! A request with nothing new waits (no polling loop) until news for its user arrives (see
//! [`notify`]) or the timeout passes. The read after a wake-up covers only what the news
//! names: the rooms with new events, to-device messages, and so on; everything else is known
//! unchanged since the read before it.

mod account_data;
pub mod e2e;
pub mod feed;
pub mod filter;
mod joined;
mod lazy;
mod memberships;
mod rooms;
pub mod sliding;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedDeviceId, OwnedRoomId, UserId};
use serde_json::Value;

use crate::db::{self, rooms::RoomRow};
use crate::ephemeral::Ephemeral;
use crate::error::Result;
use crate::notify::{Kinds, News, SyncNotifier};
use crate::room::Rooms;
use e2e::E2eSync;
use token::SyncToken;

/// How a sync is asked for, in domain terms.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    /// The syncing device: to-device messages and key counts are per device.
    pub device_id: OwnedDeviceId,
    pub timeline_limit: i64,
    pub full_state: bool,
    pub include_leave: bool,
    /// Send only the member events of the timeline's senders (and the syncing user's own).
    pub lazy_load_members: bool,
    /// With lazy loading, send the senders' member events even when the device has them.
    pub include_redundant_members: bool,
    pub timeout: Duration,
    /// Which events timelines keep (the filter's `room.timeline` types and senders).
    pub timeline_select: db::sync::TimelineSelect,
    /// The client's filter, applied to every read before it counts as news (a read that
    /// the filter empties keeps waiting), and the kinds of news it never lets through (a
    /// waiting sync is not woken for them).
    pub filter: Option<filter::SyncFilter>,
    pub ignored_news: Kinds,
}

#[derive(Debug, Default)]
pub struct JoinedRoomSync {
    pub timeline: Vec<Value>,
    pub limited: bool,
    pub prev_batch: Option<String>,
    pub state: Vec<Value>,
    pub account_data: Vec<Value>,
    /// `m.typing` and `m.receipt` events.
    pub ephemeral: Vec<Value>,
    /// Sent when it may have changed (always on an initial sync).
    pub summary: Option<RoomSummary>,
    /// Unread notifications per thread ('main' for the main timeline): (notifications,
    /// highlights).
    pub unread: BTreeMap<String, (i64, i64)>,
}

/// What a client needs to name and badge a room: heroes and member counts.
#[derive(Debug, Default, Clone)]
pub struct RoomSummary {
    pub heroes: Vec<String>,
    pub joined: i64,
    pub invited: i64,
}

/// Heroes listed per room, as the spec suggests.
const MAX_HEROES: i64 = 5;

#[derive(Debug, Default)]
pub struct SyncResponse {
    pub next_batch: SyncToken,
    pub join: BTreeMap<OwnedRoomId, JoinedRoomSync>,
    pub invite: BTreeMap<OwnedRoomId, Vec<Value>>,
    /// Rooms the user knocked on, with the same stripped state as invites.
    pub knock: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub leave: BTreeMap<OwnedRoomId, JoinedRoomSync>,
    pub account_data: Vec<Value>,
    pub e2e: E2eSync,
    /// `m.presence` events.
    pub presence: Vec<Value>,
}

impl SyncResponse {
    /// Nothing worth answering for: a joined room counts only with something in it (the
    /// filter may have emptied one that had typing or receipts only).
    fn is_empty(&self) -> bool {
        self.join.values().all(|r| {
            r.timeline.is_empty()
                && r.state.is_empty()
                && r.ephemeral.is_empty()
                && r.account_data.is_empty()
        }) && self.invite.is_empty()
            && self.knock.is_empty()
            && self.leave.is_empty()
            && self.account_data.is_empty()
            && self.e2e.is_empty()
            && self.presence.is_empty()
    }
}

/// Largest timeline a sync returns per room, whatever the filter asks.
const MAX_TIMELINE: i64 = 200;

/// A read after a wake-up: the news, and what the read before it found.
struct Delta {
    news: News,
    /// The token the read before answered with (nothing new up to it).
    prev: SyncToken,
    /// The user's rooms as the read before found them: news with no membership change of
    /// the user leaves them as they were.
    rooms: Vec<db::sync::UserRoom>,
}

/// What the rooms' part of a read works from.
#[derive(Clone, Copy)]
struct RoomsRead<'a> {
    req: &'a SyncRequest,
    /// The client's token, `None` for an initial (or full-state) sync.
    since: Option<SyncToken>,
    upto: i64,
    rooms: &'a [db::sync::UserRoom],
    news: Option<&'a News>,
    parts: Parts,
    carry: Option<SyncToken>,
}

/// Which parts of the sync a read covers beyond typing, timelines and unread counts.
#[derive(Debug, Clone, Copy)]
struct Parts {
    account_data: bool,
    to_device: bool,
    device_lists: bool,
    receipts: bool,
    presence: bool,
    /// Invites, knocks, leaves and rooms joined since the token.
    memberships: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        account_data: true,
        to_device: true,
        device_lists: true,
        receipts: true,
        presence: true,
        memberships: true,
    };

    fn of(kinds: Kinds) -> Parts {
        Parts {
            account_data: kinds.contains(Kinds::ACCOUNT_DATA),
            to_device: kinds.contains(Kinds::TO_DEVICE),
            device_lists: kinds.contains(Kinds::DEVICE_LISTS),
            receipts: kinds.contains(Kinds::RECEIPTS),
            presence: kinds.contains(Kinds::PRESENCE),
            memberships: kinds.contains(Kinds::MEMBERSHIP),
        }
    }
}

#[derive(Clone)]
pub struct Sync {
    rooms: Rooms,
    notifier: SyncNotifier,
    ephemeral: Ephemeral,
    lazy_sent: std::sync::Arc<lazy::LazySent>,
}

impl Sync {
    /// Apply a sync filter to a response: rooms, sections, limits, then `event_format`
    /// (one query for the PDUs) and `event_fields`.
    pub async fn apply_filter(
        &self,
        filter: &filter::SyncFilter,
        out: &mut SyncResponse,
    ) -> Result<()> {
        filter.apply(out);
        if filter.federation_format && !out.is_empty() {
            let ids = filter::SyncFilter::event_ids(out);
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let pdus: HashMap<String, String> = db::events::by_ids(self.rooms.reads(), &refs)
                .await?
                .into_iter()
                .map(|r| (r.event_id, r.json))
                .collect();
            filter.to_federation_format(out, &pdus);
        }
        filter.apply_fields(out);
        Ok(())
    }

    pub fn new(rooms: Rooms, notifier: SyncNotifier, ephemeral: Ephemeral) -> Self {
        Sync {
            rooms,
            notifier,
            ephemeral,
            lazy_sent: Default::default(),
        }
    }

    /// Answer now if anything changed since the token, otherwise wait for news for this
    /// user up to the timeout.
    pub async fn sync(&self, user: &UserId, mut req: SyncRequest) -> Result<SyncResponse> {
        feed::ensure_started(self.rooms.db(), self.rooms.stream(), &self.notifier);
        // Read once per request, not per event or per wake-up. A change of the list wakes
        // the sync as account data; the next request follows it, as the spec asks (no
        // initial sync is forced: the client decides whether to start one).
        req.timeline_select.ignored =
            db::account_data::ignored_users(self.rooms.reads(), user.as_str()).await?;
        let initial = req.since.is_none() || req.full_state;
        // Registered before the first read: news that lands between the read and the wait
        // is kept for it, never lost.
        let waiter = (!initial && !req.timeout.is_zero())
            .then(|| self.notifier.waiter(user, &req.device_id));
        let deadline = tokio::time::Instant::now() + req.timeout;
        let (mut response, mut rooms) = self.sync_once(user, &req, None).await?;
        self.filtered(&req, &mut response).await?;
        let Some(waiter) = waiter else {
            return Ok(response);
        };
        loop {
            if !response.is_empty() {
                return Ok(response);
            }
            let joined: Vec<i64> = rooms
                .iter()
                .filter(|r| r.membership == MembershipState::Join)
                .map(|r| r.room_nid)
                .collect();
            waiter.watch_rooms(&joined);
            // A timeout answers empty with the same position.
            let Ok(news) = tokio::time::timeout_at(deadline, waiter.next()).await else {
                return Ok(response);
            };
            // News the filter drops would only wake this sync to answer empty, early.
            if news.kinds.without(req.ignored_news).is_empty() {
                continue;
            }
            let delta = (!news.kinds.contains(Kinds::MEMBERSHIP)).then(|| Delta {
                news,
                prev: response.next_batch,
                rooms: std::mem::take(&mut rooms),
            });
            (response, rooms) = self.sync_once(user, &req, delta).await?;
            self.filtered(&req, &mut response).await?;
        }
    }

    /// The response as the request's filter lets it through. An incremental sync then
    /// leaves out the joined rooms the filter emptied (nothing in their timeline, state,
    /// ephemeral or account data), as Synapse does: a change the client filtered away is
    /// no news of the room.
    async fn filtered(&self, req: &SyncRequest, out: &mut SyncResponse) -> Result<()> {
        if let Some(f) = &req.filter {
            self.apply_filter(f, out).await?;
        }
        if req.since.is_some() && !req.full_state {
            out.join.retain(|_, r| {
                !(r.timeline.is_empty()
                    && r.state.is_empty()
                    && r.ephemeral.is_empty()
                    && r.account_data.is_empty())
            });
        }
        Ok(())
    }

    /// One read of everything new since the token, or, after a wake-up (`delta`), of what
    /// the news names. Returns the response and the user's rooms it was built from.
    async fn sync_once(
        &self,
        user: &UserId,
        req: &SyncRequest,
        delta: Option<Delta>,
    ) -> Result<(SyncResponse, Vec<db::sync::UserRoom>)> {
        let db = self.rooms.reads();
        let since = if req.full_state { None } else { req.since };
        // After a wake-up, read only as far as the news goes: an event the notifier has not
        // published yet is in no news, and will wake this sync again. Otherwise the position
        // is taken before the rooms are listed, so a membership at or below it is listed.
        let (news, carry, rooms, upto) = match delta {
            Some(Delta { news, prev, rooms }) => {
                let upto = news.published.max(prev.events);
                (Some(news), Some(prev), rooms, upto)
            }
            None => {
                let upto = self.rooms.stream().safe_position();
                let rooms = db::sync::user_rooms(db, user.as_str()).await?;
                (None, None, rooms, upto)
            }
        };
        let parts = news.as_ref().map_or(Parts::ALL, |n| Parts::of(n.kinds));
        // Never behind the client's token: positions are the user's own, and a token from
        // before they were may hold a higher one.
        let ad_upto = match carry {
            Some(prev) if !parts.account_data => prev.account_data,
            _ => db::sync::max_account_data_stream(db, user.as_str())
                .await?
                .max(req.since.map_or(0, |s| s.account_data)),
        };
        let all_nids: Vec<i64> = rooms.iter().map(|r| r.room_nid).collect();
        let mut out = SyncResponse {
            next_batch: SyncToken {
                events: upto,
                account_data: ad_upto,
                ..Default::default()
            },
            ..Default::default()
        };
        // The device's part and the rooms' part are independent: read them side by side.
        // Acknowledgement of to-device messages follows the client's token even with
        // full_state, so it uses `req.since`.
        let e2e_read = e2e::E2eRead {
            to_device: parts.to_device,
            device_lists: parts.device_lists,
            members_unchanged: since.and_then(|s| {
                self.notifier
                    .members_changed_since(&all_nids, s.events, upto)
                    .map(|moved| !moved)
            }) == Some(true),
            carry,
        };
        let device_part =
            e2e::section(db, user, req.device_id.as_str(), req.since, upto, &e2e_read);
        let read = RoomsRead {
            req,
            since,
            upto,
            rooms: &rooms,
            news: news.as_ref(),
            parts,
            carry,
        };
        let (e2e, ()) = tokio::try_join!(device_part, self.read_rooms(user, &read, &mut out))?;
        out.next_batch.to_device = e2e.to_device_pos;
        out.next_batch.device_lists = e2e.device_lists_pos;
        out.e2e = e2e;
        Ok((out, rooms))
    }
}

/// The room row the timeline and visibility reads take, from the sync's list of the user's rooms.
fn room_row(r: &db::sync::UserRoom) -> RoomRow {
    RoomRow {
        room_nid: r.room_nid,
        room_id: r.room_id.clone(),
        room_version: r.room_version.clone(),
        state_group: r.state_group,
        is_public: false,
    }
}

//! Simplified sliding sync (MSC4186): the user's rooms as lists sorted by recency, of which
//! the client asks for windows (ranges), plus rooms it subscribes to, each sent with the
//! timeline and state it asks for; and the extensions (to-device, e2ee, account data,
//! receipts, typing).
//!
//! A connection (user, device, `conn_id`) keeps what each room was last sent with in
//! Postgres, per position ([`conn`]): a request with `pos` sends only what changed since,
//! rooms new to it with `initial: true`. A request that finds nothing new waits on the
//! notifier, as `/v3/sync` does, and answers with the same `pos` at its timeout.
//!
//! Leaving, being kicked or banned ends a room's stream: every read of a room the user is
//! not joined to stops at their membership event, so nothing after it is ever sent; the
//! leave itself is sent once, then the room drops out of the lists.

pub mod conn;
mod extensions;
mod lists;
pub mod request;
mod room;

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::events::room::member::MembershipState;
use ruma::{DeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::Sync;
use super::feed;
use crate::account::now_ms;
use crate::db::{self, sliding::SlidingRoom};
use crate::error::{Error, Result};
use crate::notify::{Kinds, News};
use conn::{ConnState, Standing};
use lists::{Candidate, SpaceChildren};
use request::{RoomConfig, SlidingRequest};

/// Most children of one space a `spaces` filter takes (in the spec's order): a bound on
/// what one filter costs, far above the spaces people make.
const MAX_SPACE_CHILDREN: i64 = 10_000;

#[derive(Debug, Default)]
pub struct SlidingResponse {
    pub pos: String,
    /// Per list, how many rooms it holds.
    pub lists: BTreeMap<String, u64>,
    pub rooms: BTreeMap<OwnedRoomId, RoomData>,
    pub extensions: extensions::ExtensionsData,
}

pub use extensions::{AccountDataOut, ExtensionsData, ToDeviceOut};

/// One room of a response.
#[derive(Debug, Default)]
pub struct RoomData {
    pub name: Option<String>,
    /// `Some(None)`: the room has no avatar (sent as null).
    pub avatar: Option<Option<String>>,
    pub heroes: Option<Vec<Hero>>,
    pub initial: bool,
    pub is_dm: Option<bool>,
    pub invite_state: Option<Vec<Value>>,
    pub notification_count: Option<i64>,
    pub highlight_count: Option<i64>,
    pub timeline: Vec<Value>,
    pub required_state: Vec<Value>,
    pub prev_batch: Option<String>,
    pub limited: bool,
    pub joined_count: Option<i64>,
    pub invited_count: Option<i64>,
    pub num_live: Option<i64>,
    pub bump_stamp: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Hero {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// One read of a request, before it is answered or waits.
struct Read {
    out: SlidingResponse,
    state: ConnState,
    /// Anything the client did not have.
    news: bool,
    listing: Listing,
}

/// The user's rooms as one read found them. A read after a wake-up starts from the listing
/// of the read before and reads again only the rooms the news names: the user's rooms are
/// hundreds of rows, and the news is mostly one message in one room.
struct Listing {
    /// The event stream position the rows are as of.
    upto: i64,
    rooms: Vec<SlidingRoom>,
    /// The rooms the user's `m.direct` names.
    direct: HashSet<String>,
    /// The users the user ignores: their invites are left out of `rooms`, their events out
    /// of timelines.
    ignored: Vec<String>,
}

impl Listing {
    /// The joined rooms, whose news wakes a waiting request.
    fn joined(&self) -> Vec<i64> {
        self.rooms
            .iter()
            .filter(|r| r.membership == MembershipState::Join)
            .map(|r| r.room_nid)
            .collect()
    }
}

impl Sync {
    /// Answer a sliding sync request: at once when anything changed since `pos` (or without
    /// `pos`), otherwise when news concerning the connection arrives or at the timeout.
    #[tracing::instrument(name = "sliding_sync", skip_all, fields(%user, %device, conn_id = %req.conn_id))]
    pub async fn sliding_sync(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: SlidingRequest,
    ) -> Result<SlidingResponse> {
        request::validate(&req)?;
        feed::ensure_started(self.rooms.db(), self.rooms.stream(), &self.notifier);
        let pool = self.rooms.db();
        let now = now_ms();
        let (conn_nid, prev, acked, last_used) = match &req.pos {
            Some(pos) => {
                let n = conn::parse_pos(pos)?;
                let found = db::sliding::position::<ConnState>(
                    pool,
                    user.as_str(),
                    device.as_str(),
                    &req.conn_id,
                    n,
                )
                .await?
                .ok_or_else(Error::unknown_pos)?;
                (
                    found.conn_nid,
                    Some(found.state),
                    Some(n),
                    found.last_used_ts,
                )
            }
            None => {
                db::sliding::expire_connections(
                    pool,
                    user.as_str(),
                    now - conn::IDLE_EXPIRY_MS,
                    conn::MAX_CONNECTIONS_PER_USER - 1,
                )
                .await?;
                let mut tx = db::begin(pool).await?;
                let nid = db::sliding::reset_connection(
                    &mut tx,
                    user.as_str(),
                    device.as_str(),
                    &req.conn_id,
                    now,
                )
                .await?;
                tx.commit().await?;
                (nid, None, None, now)
            }
        };
        // Registered before the first read: news landing between the read and the wait is
        // kept for it.
        let waiter =
            (prev.is_some() && !req.timeout.is_zero()).then(|| self.notifier.waiter(user, device));
        let ignored = ignored_news(&req);
        let deadline = tokio::time::Instant::now() + req.timeout;
        // After a wake-up: the rooms as the read before found them, and what woke it.
        let mut since: Option<(Listing, News)> = None;
        loop {
            let Read {
                mut out,
                state,
                news,
                listing,
            } = self
                .sliding_once(user, device, &req, prev.as_ref(), since.take())
                .await?;
            if let (false, Some(pos)) = (news, &req.pos) {
                // Nothing new: the client's position still says it all.
                if let Some(w) = &waiter {
                    w.watch_rooms(&listing.joined());
                    let mut taken = News::default();
                    let woken = loop {
                        match tokio::time::timeout_at(deadline, w.next()).await {
                            Err(_) => break false,
                            Ok(n) => {
                                taken.merge(n);
                                if !taken.kinds.without(ignored).is_empty() {
                                    break true;
                                }
                            }
                        }
                    };
                    if woken {
                        since = Some((listing, taken));
                        continue;
                    }
                }
                // Marked used at most once a minute: expiry counts in days, and a write
                // (with its commit) per idle poll would be most of what the poll costs.
                let now = now_ms();
                if now - last_used >= conn::TOUCH_EVERY_MS {
                    db::sliding::touch(pool, conn_nid, now).await?;
                }
                out.pos = pos.clone();
                return Ok(out);
            }
            let pos = db::sliding::save_position(
                pool,
                conn_nid,
                acked,
                conn::KEPT_POSITIONS,
                &state,
                now_ms(),
            )
            .await?;
            out.pos = pos.to_string();
            return Ok(out);
        }
    }

    /// One read of everything the request covers since `prev`; `since`, after a wake-up:
    /// the listing of the read before and the news that woke the request.
    async fn sliding_once(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: &SlidingRequest,
        prev: Option<&ConnState>,
        since: Option<(Listing, News)>,
    ) -> Result<Read> {
        let listing = self.sliding_listing(user, since).await?;
        let Listing {
            upto,
            ref rooms,
            ref direct,
            ref ignored,
        } = listing;

        // The lists: the rooms they may hold, filtered and sorted, and the ranges' rooms.
        let listed: Vec<&SlidingRoom> = rooms.iter().filter(|r| listable(r, prev)).collect();
        let kinds = match req.lists.values().any(|l| l.filters.needs_state()) {
            true => self.sliding_room_kinds(&listed).await?,
            false => HashMap::new(),
        };
        let mut candidates: Vec<Candidate> = listed
            .iter()
            .map(|r| {
                let (room_type, encrypted) = kinds.get(&r.room_nid).cloned().unwrap_or_default();
                Candidate {
                    room_nid: r.room_nid,
                    room_id: r.room_id.clone(),
                    bump_stamp: r.bump_stamp,
                    is_dm: direct.contains(r.room_id.as_str()),
                    is_invite: Standing::of(&r.membership) == Standing::Invited,
                    encrypted,
                    room_type,
                }
            })
            .collect();
        lists::sort_by_recency(&mut candidates);
        let children = self.sliding_space_children(rooms, req).await?;
        let mut scope: BTreeMap<i64, RoomConfig> = BTreeMap::new();
        let mut out = SlidingResponse::default();
        for (name, list) in &req.lists {
            let (count, nids) = lists::select(&candidates, &list.filters, &list.ranges, &children);
            out.lists.insert(name.clone(), count);
            for nid in nids {
                scope.entry(nid).or_default().merge(&list.config);
            }
        }
        let by_id: HashMap<&str, &SlidingRoom> =
            rooms.iter().map(|r| (r.room_id.as_str(), r)).collect();
        for (room_id, config) in &req.subscriptions {
            if let Some(r) = by_id.get(room_id.as_str()).filter(|r| !r.forgotten) {
                scope.entry(r.room_nid).or_default().merge(config);
            }
        }

        let mut state = ConnState {
            events: upto,
            lists: out.lists.clone(),
            rooms: prev.map(|p| p.rooms.clone()).unwrap_or_default(),
            ..Default::default()
        };
        let by_nid: HashMap<i64, &SlidingRoom> = rooms.iter().map(|r| (r.room_nid, r)).collect();
        let read = room::RoomsRead {
            user,
            device,
            upto,
            prev,
            direct,
            ignored,
        };
        let initial = self
            .sliding_rooms(&read, &scope, &by_nid, &mut state, &mut out)
            .await?;

        let joined_scope: Vec<(i64, &str)> = scope
            .keys()
            .filter_map(|nid| by_nid.get(nid))
            .filter(|r| r.membership == MembershipState::Join)
            .map(|r| (r.room_nid, r.room_id.as_str()))
            .collect();
        out.extensions = self
            .sliding_extensions(
                &extensions::ExtensionsRead {
                    user,
                    device,
                    spec: &req.extensions,
                    prev,
                    rooms: &joined_scope,
                    initial: &initial,
                    upto,
                },
                &mut state,
            )
            .await?;

        let news = prev.is_none_or(|p| p.lists != state.lists)
            || !out.rooms.is_empty()
            || !out.extensions.is_empty();
        Ok(Read {
            out,
            state,
            news,
            listing,
        })
    }

    /// The user's rooms, DM rooms and ignored users: read whole, or, after a wake-up, the
    /// listing before with the rooms the news names read again. That is exact when the news
    /// says every room that had an event up to its position (`published`), and neither the
    /// user's own memberships nor their account data (`m.direct`, `m.ignored_user_list`)
    /// changed; otherwise (or when the notifier is behind the read before) everything is
    /// read again.
    async fn sliding_listing(
        &self,
        user: &UserId,
        since: Option<(Listing, News)>,
    ) -> Result<Listing> {
        let db = self.rooms.reads();
        if let Some((mut listing, news)) = since
            && !news.kinds.contains(Kinds::MEMBERSHIP)
            && !news.kinds.contains(Kinds::ACCOUNT_DATA)
            && news.published >= listing.upto
        {
            let upto = news.published;
            let changed: Vec<i64> = listing
                .rooms
                .iter()
                .map(|r| r.room_nid)
                .filter(|nid| news.rooms.contains(nid))
                .collect();
            if !changed.is_empty() {
                let fresh =
                    db::sliding::user_rooms(db, user.as_str(), upto, Some(&changed)).await?;
                let mut fresh: HashMap<i64, SlidingRoom> =
                    fresh.into_iter().map(|r| (r.room_nid, r)).collect();
                for r in &mut listing.rooms {
                    if let Some(f) = fresh.remove(&r.room_nid) {
                        *r = f;
                    }
                }
            }
            listing.upto = upto;
            return Ok(listing);
        }
        let upto = self.rooms.stream().safe_position();
        let mut rooms = db::sliding::user_rooms(db, user.as_str(), upto, None).await?;
        let ignored = db::account_data::ignored_users(db, user.as_str()).await?;
        // Invites from ignored users are never shown (spec, "Ignoring Users").
        rooms.retain(|r| {
            r.membership != MembershipState::Invite || !ignored.contains(&r.member_sender)
        });
        Ok(Listing {
            upto,
            rooms,
            direct: self.sliding_direct_rooms(user).await?,
            ignored,
        })
    }

    /// The rooms the user's `m.direct` account data names.
    async fn sliding_direct_rooms(&self, user: &UserId) -> Result<HashSet<String>> {
        let raw = db::account_data::get(
            self.rooms.reads(),
            user.as_str(),
            db::account_data::GLOBAL,
            "m.direct",
        )
        .await?;
        let Some(raw) = raw else {
            return Ok(HashSet::new());
        };
        let map: HashMap<String, Value> = serde_json::from_str(raw.get()).unwrap_or_default();
        Ok(map
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// Each room's type (its create event's `type`) and whether it is encrypted, from the
    /// state the user may read (for an invite, none is known here: no type, unencrypted).
    /// The children of the spaces the lists' `spaces` filters name, for those the user is
    /// joined to (so a filter reveals nothing of a space the user cannot see), one read for
    /// every list.
    async fn sliding_space_children(
        &self,
        rooms: &[SlidingRoom],
        req: &SlidingRequest,
    ) -> Result<SpaceChildren> {
        let named: HashSet<&str> = req
            .lists
            .values()
            .filter_map(|l| l.filters.spaces.as_ref())
            .flatten()
            .map(|s| s.as_str())
            .collect();
        let joined: HashMap<i64, &SlidingRoom> = rooms
            .iter()
            .filter(|r| {
                Standing::of(&r.membership) == Standing::Joined
                    && named.contains(r.room_id.as_str())
            })
            .map(|r| (r.room_nid, r))
            .collect();
        let mut out = SpaceChildren::new();
        if joined.is_empty() {
            return Ok(out);
        }
        let nids: Vec<i64> = joined.keys().copied().collect();
        let rows = db::spaces::space_children(self.rooms.reads(), &nids, false, MAX_SPACE_CHILDREN)
            .await?;
        for row in rows {
            let (Some(space), Ok(child)) = (
                joined.get(&row.room_nid),
                OwnedRoomId::try_from(row.state_key.as_str()),
            ) else {
                continue;
            };
            if let Ok(space) = OwnedRoomId::try_from(space.room_id.as_str()) {
                out.entry(space).or_default().insert(child);
            }
        }
        Ok(out)
    }

    async fn sliding_room_kinds(
        &self,
        rooms: &[&SlidingRoom],
    ) -> Result<HashMap<i64, (Option<String>, bool)>> {
        let by_group: HashMap<i64, i64> = rooms
            .iter()
            .filter_map(|r| readable_group(r).map(|g| (g, r.room_nid)))
            .collect();
        let groups: Vec<i64> = by_group.keys().copied().collect();
        let mut out: HashMap<i64, (Option<String>, bool)> = HashMap::new();
        if groups.is_empty() {
            return Ok(out);
        }
        let keys = [("m.room.create", ""), ("m.room.encryption", "")];
        for (group, kind, _, _, json) in
            db::state::load_keys_many(self.rooms.reads(), &groups, &keys).await?
        {
            let Some(nid) = by_group.get(&group) else {
                continue;
            };
            let entry = out.entry(*nid).or_default();
            match kind.as_str() {
                "m.room.create" => {
                    let v: Value = serde_json::from_str(&json).unwrap_or_default();
                    entry.0 = v["content"]["type"].as_str().map(str::to_owned);
                }
                _ => entry.1 = true,
            }
        }
        Ok(out)
    }
}

/// Whether a room may be in the lists: joined, invited or knocking; or left (kicked,
/// banned) since the connection's last position, or while the connection had it as current,
/// so the client learns of the leave once.
fn listable(r: &SlidingRoom, prev: Option<&ConnState>) -> bool {
    match Standing::of(&r.membership) {
        Standing::Joined | Standing::Invited => true,
        Standing::Gone => {
            !r.forgotten
                && prev.is_some_and(|p| match p.rooms.get(&r.room_nid) {
                    Some(sent) => Standing::of(&sent.membership) != Standing::Gone,
                    None => r.member_stream > p.events,
                })
        }
    }
}

/// The state group the user may read a room's state from: the current state when joined,
/// the state right after their membership event otherwise (none for an invite).
fn readable_group(r: &SlidingRoom) -> Option<i64> {
    match Standing::of(&r.membership) {
        Standing::Joined => r.state_group,
        Standing::Invited => None,
        Standing::Gone => r.member_state_after,
    }
}

/// The kinds of news a waiting request has no use for.
fn ignored_news(req: &SlidingRequest) -> Kinds {
    let e = &req.extensions;
    let mut ignored = Kinds::PRESENCE;
    // A connection without rooms (an encryption-only one) still watches its rooms for
    // co-members' key changes, but has no use for their events.
    if req.lists.is_empty() && req.subscriptions.is_empty() {
        ignored |= Kinds::EVENTS;
    }
    if !e.typing {
        ignored |= Kinds::TYPING;
    }
    if !e.receipts {
        ignored |= Kinds::RECEIPTS;
    }
    if e.to_device.is_none() {
        ignored |= Kinds::TO_DEVICE;
    }
    if !e.account_data {
        ignored |= Kinds::ACCOUNT_DATA;
    }
    if !e.e2ee {
        ignored |= Kinds::DEVICE_LISTS;
    }
    ignored
}

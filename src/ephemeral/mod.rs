//! Ephemeral data and read state: typing notices, read receipts, read markers and presence,
//! and the part of /sync that delivers them. No HTTP here.
//!
//! Typing and presence live in memory (see their modules for why); receipts live in
//! Postgres. Every change wakes the waiting syncs it concerns through the shared
//! [`SyncNotifier`]: typing and receipts those of the room's members, presence those of
//! everyone sharing a room with the user.

pub mod presence;
pub mod receipts;
pub mod typing;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::events::receipt::ReceiptThread;
use ruma::presence::PresenceState;
use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::account::{Accounts, now_ms};
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};
use crate::notify::{Kinds, SyncNotifier};
use crate::room::Rooms;
use presence::{PresenceMap, PresenceView};
use receipts::ReceiptKind;
use typing::TypingRooms;

/// Longest a typing notice lasts, whatever the client asks: a client that stops renewing it
/// (closed tab, lost network) must not look like it types forever.
pub const MAX_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// The account data type of the fully-read marker.
const FULLY_READ: &str = "m.fully_read";

#[derive(Clone)]
pub struct Ephemeral {
    db: PgPool,
    rooms: Rooms,
    accounts: Accounts,
    notifier: SyncNotifier,
    typing: Arc<TypingRooms>,
    presence: Arc<PresenceMap>,
    /// Receipt writes take this in turn so they commit in stream order and a sync reading
    /// `max(stream_id)` never passes a receipt still being written.
    receipt_writes: Arc<tokio::sync::Mutex<()>>,
}

/// Where each ephemeral stream of a sync token stands.
#[derive(Debug, Clone, Copy, Default)]
pub struct EphemeralPositions {
    pub typing: i64,
    pub receipts: i64,
    pub presence: i64,
}

/// Which parts of the ephemeral section a sync reads (typing always: it is in memory).
#[derive(Debug, Clone, Copy, Default)]
pub struct EphemeralRead {
    pub receipts: bool,
    pub presence: bool,
    /// Positions that stand for the parts not read.
    pub carry: EphemeralPositions,
}

/// What /sync gets from this module.
#[derive(Debug, Default)]
pub struct EphemeralSync {
    pub positions: EphemeralPositions,
    /// `m.typing` and `m.receipt` events per joined room.
    pub rooms: HashMap<OwnedRoomId, Vec<Value>>,
    /// `m.presence` events of the user and of users sharing a room with them.
    pub presence: Vec<Value>,
}

impl Ephemeral {
    pub fn new(db: PgPool, rooms: Rooms, accounts: Accounts, notifier: SyncNotifier) -> Self {
        Ephemeral {
            db,
            rooms,
            accounts,
            notifier,
            typing: Arc::default(),
            presence: Arc::default(),
            receipt_writes: Arc::default(),
        }
    }

    /// The room, if `user` is joined to it: typing and receipts are for members only.
    async fn joined_room(&self, user: &UserId, room_id: &RoomId) -> Result<RoomRow> {
        let room = self.rooms.room(room_id).await?;
        if self.rooms.is_joined(&room, user).await? {
            Ok(room)
        } else {
            Err(Error::forbidden("You are not joined to this room"))
        }
    }

    /// `user` starts typing for `timeout` (capped), or stops (`None`).
    pub async fn set_typing(
        &self,
        user: &UserId,
        room_id: &RoomId,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let room = self.joined_room(user, room_id).await?;
        let timeout = timeout.map(|t| t.min(MAX_TYPING_TIMEOUT));
        let until = timeout.map(|t| Instant::now() + t);
        if self.typing.set(room_id, room.room_nid, user, until) {
            self.notifier.publish_rooms(&[room.room_nid], Kinds::TYPING);
        }
        if let Some(t) = timeout {
            // One short-lived timer per notice: it removes whatever ran out by then (this
            // notice, unless renewed) and wakes syncs so they see the user stop.
            let typing = self.typing.clone();
            let notifier = self.notifier.clone();
            tokio::spawn(async move {
                tokio::time::sleep(t).await;
                let rooms = typing.expire(Instant::now());
                if !rooms.is_empty() {
                    notifier.publish_rooms(&rooms, Kinds::TYPING);
                }
            });
        }
        Ok(())
    }

    /// Store `user`'s receipt of `kind` on `event_id` (an event of the room).
    pub async fn set_receipt(
        &self,
        user: &UserId,
        room_id: &RoomId,
        kind: ReceiptKind,
        thread: &ReceiptThread,
        event_id: &EventId,
    ) -> Result<()> {
        let room = self.joined_room(user, room_id).await?;
        self.store_receipt(&room, user, kind, thread, event_id)
            .await?;
        self.notifier
            .publish_rooms(&[room.room_nid], Kinds::RECEIPTS);
        Ok(())
    }

    async fn store_receipt(
        &self,
        room: &RoomRow,
        user: &UserId,
        kind: ReceiptKind,
        thread: &ReceiptThread,
        event_id: &EventId,
    ) -> Result<()> {
        let thread = receipts::thread_key(thread)?;
        self.check_event(room, event_id).await?;
        let _turn = self.receipt_writes.lock().await;
        db::receipts::upsert(
            &self.db,
            room.room_nid,
            user.as_str(),
            kind.as_str(),
            &thread,
            event_id.as_str(),
            now_ms(),
        )
        .await?;
        Ok(())
    }

    async fn check_event(&self, room: &RoomRow, event_id: &EventId) -> Result<()> {
        if db::receipts::event_in_room(&self.db, room.room_nid, event_id.as_str()).await? {
            Ok(())
        } else {
            Err(Error::not_found("Event not found in this room"))
        }
    }

    /// Move the read markers: `m.fully_read` into room account data, the others into
    /// receipts. Any of them may be absent.
    pub async fn set_read_markers(
        &self,
        user: &UserId,
        room_id: &RoomId,
        fully_read: Option<&EventId>,
        read: Option<&EventId>,
        read_private: Option<&EventId>,
    ) -> Result<()> {
        let room = self.joined_room(user, room_id).await?;
        if let Some(event_id) = fully_read {
            self.check_event(&room, event_id).await?;
            // Straight to the domain function: the account-data API refuses m.fully_read so
            // that clients go through here, where the event is checked.
            let content = crate::room::raw(&json!({ "event_id": event_id }))?;
            self.accounts
                .set_account_data(user, Some(room_id), FULLY_READ, &content)
                .await?;
        }
        for (kind, event_id) in [
            (ReceiptKind::Read, read),
            (ReceiptKind::ReadPrivate, read_private),
        ] {
            if let Some(event_id) = event_id {
                self.store_receipt(&room, user, kind, &ReceiptThread::Unthreaded, event_id)
                    .await?;
            }
        }
        // The fully-read marker woke the user's syncs as account data.
        if read.is_some() || read_private.is_some() {
            self.notifier
                .publish_rooms(&[room.room_nid], Kinds::RECEIPTS);
        }
        Ok(())
    }

    /// Set the user's own presence and status message (`None` clears it). Returns whether
    /// it changed (other servers are told only then).
    pub fn set_presence(
        &self,
        user: &UserId,
        state: PresenceState,
        status_msg: Option<String>,
    ) -> Result<bool> {
        if !matches!(
            state,
            PresenceState::Online | PresenceState::Offline | PresenceState::Unavailable
        ) {
            return Err(Error::invalid_param(
                "presence must be online, offline or unavailable",
            ));
        }
        let changed = self
            .presence
            .set(user, state, Some(status_msg), Instant::now());
        if changed {
            self.notifier
                .publish_to_co_members(&self.db, user, Kinds::PRESENCE);
        }
        Ok(changed)
    }

    /// What a /sync's `set_presence` asks: `offline` means "do not change my presence", the
    /// others set it, keeping the status message. Returns whether it changed.
    pub fn presence_from_sync(&self, user: &UserId, state: &PresenceState) -> bool {
        // Unknown values are ignored rather than failing the sync.
        if !matches!(state, PresenceState::Online | PresenceState::Unavailable) {
            return false;
        }
        let changed = self.presence.set(user, state.clone(), None, Instant::now());
        if changed {
            self.notifier
                .publish_to_co_members(&self.db, user, Kinds::PRESENCE);
        }
        changed
    }

    /// `target`'s presence as `viewer` may see it: their own, or a user sharing a room.
    pub async fn presence(&self, viewer: &UserId, target: &UserId) -> Result<PresenceView> {
        if viewer != target {
            let shared =
                db::receipts::sharing_a_room(&self.db, viewer.as_str(), &[target.to_string()])
                    .await?;
            if shared.is_empty() {
                return Err(Error::forbidden("You do not share a room with this user"));
            }
        }
        Ok(self.presence.get(target, Instant::now()))
    }

    /// The ephemeral part of a sync for `user`'s joined rooms (`(room_nid, room_id)`), since
    /// `since` (`None`: initial sync): at most one receipt query and one presence query in
    /// all, for the parts `read` asks for.
    pub async fn sync_section(
        &self,
        user: &UserId,
        joined: &[(i64, &RoomId)],
        since: Option<EphemeralPositions>,
        read: EphemeralRead,
    ) -> Result<EphemeralSync> {
        let mut out = EphemeralSync::default();

        let room_ids: Vec<&RoomId> = joined.iter().map(|(_, id)| *id).collect();
        let typing = self.typing.changed_since(
            since.map(|s| u64::try_from(s.typing).unwrap_or(0)),
            &room_ids,
        );
        out.positions.typing = i64::try_from(typing.position).unwrap_or(i64::MAX);
        for (room_id, users) in typing.rooms {
            out.rooms
                .entry(room_id)
                .or_default()
                .push(json!({"type": "m.typing", "content": {"user_ids": users}}));
        }

        out.positions.receipts = read.carry.receipts;
        if read.receipts {
            let upto = db::receipts::max_stream(&self.db).await?;
            out.positions.receipts = upto;
            let after = since.map_or(0, |s| s.receipts);
            if after < upto {
                let nids: Vec<i64> = joined.iter().map(|(nid, _)| *nid).collect();
                let rows = db::receipts::since(&self.db, &nids, user.as_str(), after, upto).await?;
                let by_nid: HashMap<i64, &RoomId> = joined.iter().copied().collect();
                for (nid, event) in receipts::receipt_events(rows) {
                    if let Some(room_id) = by_nid.get(&nid) {
                        out.rooms
                            .entry((*room_id).to_owned())
                            .or_default()
                            .push(event);
                    }
                }
            }
        }

        out.positions.presence = read.carry.presence;
        if read.presence {
            let presence = self.presence.changed_since(
                since.map(|s| u64::try_from(s.presence).unwrap_or(0)),
                Instant::now(),
            );
            out.positions.presence = i64::try_from(presence.position).unwrap_or(i64::MAX);
            let others: Vec<String> = presence
                .users
                .iter()
                .filter(|(u, _)| u.as_str() != user.as_str())
                .map(|(u, _)| u.to_string())
                .collect();
            let visible: HashSet<String> = if others.is_empty() {
                HashSet::new()
            } else {
                db::receipts::sharing_a_room(&self.db, user.as_str(), &others)
                    .await?
                    .into_iter()
                    .collect()
            };
            out.presence = presence
                .users
                .iter()
                .filter(|(u, _)| u.as_str() == user.as_str() || visible.contains(u.as_str()))
                .map(|(u, view)| view.event(u))
                .collect();
        }
        Ok(out)
    }
}

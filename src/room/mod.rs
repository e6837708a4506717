//! The event DAG domain: rooms, their timelines and state. No HTTP, no SQL (that is `db/`).

pub mod append;
pub mod create;
pub mod directory;
pub mod erasure;
pub mod graph;
pub mod hierarchy;
pub mod ingest;
pub mod legacy;
pub mod lock;
pub mod membership;
pub mod nids;
pub mod outliers;
pub mod pages;
pub mod pdu;
pub mod persist;
pub mod power;
pub mod push;
pub mod reads;
pub mod redact;
pub mod rejection;
pub mod relations;
pub mod remote;
pub mod reports;
pub mod search;
pub mod send;
pub mod served;
pub mod state_cache;
pub mod state_res;
pub mod stream;
pub mod timeline;
pub mod tips;
pub mod upgrade;
pub mod user_directory;
pub mod visibility;
pub mod write;
pub mod writer;

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde_json::value::RawValue;
use sqlx::PgPool;

use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};
use crate::keys::ServerKeys;
use lock::RoomLocks;
use pdu::NewContent;
use stream::StreamPositions;

#[derive(Clone)]
pub struct Rooms {
    db: PgPool,
    /// Short reads on the hot paths (/messages, woken syncs), see `db::lease`.
    reads: db::lease::Leases,
    /// The connection plain batches are written on (see `db::write_lease`).
    writes: db::lease::Leases,
    keys: Arc<ServerKeys>,
    locks: Arc<RoomLocks>,
    stream: Arc<StreamPositions>,
    state_cache: Arc<state_cache::StateCache>,
    nids: Arc<nids::EventNids>,
    push: Arc<push::PushContexts>,
    sends: Arc<send::SendQueues>,
    tips: Arc<tips::Tips>,
    writer: Arc<writer::PlainWriter>,
    outbox: Arc<tokio::sync::Notify>,
    erased: Arc<erasure::ErasedUsers>,
}

/// Read connections opened at start: enough for a sync's reads side by side.
const READS_OPENED_AT_START: usize = 4;

/// What a moderator does to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    Kick,
    Ban,
    Unban,
}

impl Rooms {
    /// `stream_max`: the highest stream position already stored.
    pub fn new(db: PgPool, keys: Arc<ServerKeys>, stream_max: i64) -> Self {
        let outbox = Arc::new(tokio::sync::Notify::new());
        let reads = db::read_leases(&db);
        let writes = db::write_lease(&db);
        Rooms {
            db,
            reads,
            writes: writes.clone(),
            keys: keys.clone(),
            locks: Arc::new(RoomLocks::default()),
            stream: StreamPositions::new(stream_max),
            state_cache: Arc::default(),
            nids: Arc::default(),
            push: Arc::default(),
            sends: Arc::default(),
            tips: Arc::default(),
            writer: Arc::new(writer::PlainWriter::new(
                writes,
                keys.server_name().to_string(),
                outbox.clone(),
            )),
            outbox,
            erased: Arc::default(),
        }
    }

    /// The count of local users' push rule changes the rooms' push contexts follow (accounts
    /// move it when a user's rules change).
    pub fn push_rules_version(&self) -> Arc<crate::account::PushRulesVersion> {
        self.push.rules_version()
    }

    /// Told whenever events are queued for other servers.
    pub fn outbox_queued(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    /// The live event stream: its safe position and wake-ups.
    pub fn stream(&self) -> &Arc<StreamPositions> {
        &self.stream
    }

    fn store(&self) -> write::Store<'_> {
        write::Store {
            db: &self.db,
            keys: &self.keys,
            stream: &self.stream,
            state: &self.state_cache,
            nids: &self.nids,
            push: &self.push,
            tips: &self.tips,
            writer: &self.writer,
            outbox: &self.outbox,
        }
    }

    pub fn server_name(&self) -> &OwnedServerName {
        self.keys.server_name()
    }

    /// State events of `group` for `keys`, parsed (cached: groups never change).
    pub async fn state_entries(
        &self,
        group: i64,
        keys: &[(ruma::events::StateEventType, String)],
    ) -> Result<std::collections::HashMap<(ruma::events::StateEventType, String), pdu::Pdu>> {
        state_cache::load_state_events(&self.db, &self.state_cache, group, keys).await
    }

    /// State events of several groups for `keys`, parsed: one read for whatever the state
    /// cache lacks.
    pub async fn state_entries_many(
        &self,
        groups: &[i64],
        keys: &[(ruma::events::StateEventType, String)],
    ) -> Result<std::collections::HashMap<i64, state_cache::StateEntries>> {
        if groups.is_empty() {
            return Ok(Default::default());
        }
        state_cache::load_state_events_many(&self.db, &self.state_cache, groups, keys).await
    }

    pub async fn room(&self, room_id: &RoomId) -> Result<RoomRow> {
        db::rooms::by_id(&self.db, room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room not found"))
    }

    /// The sender's current membership in the room (`None` if never a member).
    pub async fn membership(
        &self,
        room: &RoomRow,
        user_id: &UserId,
    ) -> Result<Option<MembershipState>> {
        Ok(db::rooms::membership(&self.db, room.room_nid, user_id.as_str()).await?)
    }

    /// Whether `user_id` is joined to the room now.
    pub async fn is_joined(&self, room: &RoomRow, user_id: &UserId) -> Result<bool> {
        Ok(self.membership(room, user_id).await? == Some(MembershipState::Join))
    }

    /// Change `target`'s membership (join, leave, invite, ban) as `sender`.
    pub async fn set_membership(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        membership: MembershipState,
        reason: Option<&str>,
        extra: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<OwnedEventId> {
        let mut content = extra.unwrap_or_default();
        content.insert("membership".into(), membership.as_str().into());
        if let Some(r) = reason {
            content.insert("reason".into(), r.into());
        }
        let content = serde_json::value::to_raw_value(&content)
            .map_err(|e| Error::internal(format!("member content: {e}")))?;
        self.send(
            sender,
            room_id,
            NewContent {
                kind: TimelineEventType::RoomMember,
                state_key: Some(target.to_string()),
                content,
                redacts: None,
            },
            None,
        )
        .await
    }

    /// A membership change with no extra content: leave, invite, kick, ban, unban.
    pub async fn act_on_member(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        membership: MembershipState,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        self.set_membership(sender, room_id, target, membership, reason, None)
            .await
    }

    /// A moderator's action on another member, as Synapse checks it before the auth rules
    /// do: only a member (joined, invited or knocking) can be kicked, a banned user is
    /// unbanned rather than kicked, and only a banned user can be unbanned.
    pub async fn moderate(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        action: Moderation,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        let room = self.room(room_id).await?;
        let current = self.membership(&room, target).await?;
        let membership = match (action, current) {
            (Moderation::Ban, _) => MembershipState::Ban,
            (
                Moderation::Kick,
                Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock),
            ) => MembershipState::Leave,
            (Moderation::Kick, Some(MembershipState::Ban)) => {
                return Err(Error::forbidden("The user is banned: unban them instead"));
            }
            (Moderation::Kick, _) => {
                return Err(Error::forbidden("The user is not in the room"));
            }
            (Moderation::Unban, Some(MembershipState::Ban)) => MembershipState::Leave,
            (Moderation::Unban, _) => return Err(Error::forbidden("The user is not banned")),
        };
        self.act_on_member(sender, room_id, target, membership, reason)
            .await
    }

    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        let ids =
            db::rooms::rooms_of_user(&self.db, user_id.as_str(), &MembershipState::Join).await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| OwnedRoomId::try_from(id).ok())
            .collect())
    }

    pub(crate) fn db(&self) -> &PgPool {
        &self.db
    }

    /// Where short reads off the hot paths run (no transaction): see `db::lease`.
    pub(crate) fn reads(&self) -> &db::lease::Leases {
        &self.reads
    }

    /// Open the first connections for reads and the writer's before any request needs them.
    pub async fn open_connections(&self) {
        tokio::join!(self.reads.open(READS_OPENED_AT_START), self.writes.open(1));
    }

    /// Close the connections lent for reads and writes (the main pool is the caller's).
    pub async fn close(&self) {
        self.writes.close().await;
        self.reads.close().await;
    }
}

/// Raw JSON from a `serde_json::Value`.
pub fn raw(value: &serde_json::Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| Error::internal(format!("json: {e}")))
}

//! Ephemeral updates of our users, shared in one call with everyone they concern: local
//! clients (through `ephemeral` and its notifier) and the other servers (through the
//! outbound queue). Typing, receipts, read markers and presence; handlers make one call
//! each, so no client request can update one side and forget the other.

use std::time::Duration;

use ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use ruma::events::receipt::ReceiptThread;
use ruma::presence::PresenceState;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use super::Federation;
use crate::db;
use crate::ephemeral::Ephemeral;
use crate::ephemeral::receipts::ReceiptKind;
use crate::error::{Error, Result};
use crate::room::Rooms;

impl Federation {
    /// `user` starts typing in a room for `timeout` (capped by `ephemeral`), or stops.
    pub async fn typing(
        &self,
        (rooms, ephemeral): (&Rooms, &Ephemeral),
        user: &UserId,
        room_id: &RoomId,
        timeout: Option<Duration>,
    ) -> Result<()> {
        ephemeral.set_typing(user, room_id, timeout).await?;
        let content = json!({ "room_id": room_id, "user_id": user, "typing": timeout.is_some() });
        self.queue_room_edu(rooms, room_id, "m.typing", &content)
            .await
    }

    /// `user`'s receipt of `receipt_type` on `event_id`: `m.read` (shared with the room's
    /// servers), `m.read.private` (ours alone), or `m.fully_read` (the read marker, as the
    /// spec allows on the receipt endpoint too).
    pub async fn receipt(
        &self,
        (rooms, ephemeral): (&Rooms, &Ephemeral),
        user: &UserId,
        room_id: &RoomId,
        receipt_type: &ReceiptType,
        thread: &ReceiptThread,
        event_id: &EventId,
    ) -> Result<()> {
        let kind = match receipt_type {
            ReceiptType::Read => ReceiptKind::Read,
            ReceiptType::ReadPrivate => ReceiptKind::ReadPrivate,
            ReceiptType::FullyRead => {
                return ephemeral
                    .set_read_markers(user, room_id, Some(event_id), None, None)
                    .await;
            }
            other => {
                return Err(Error::invalid_param(format!(
                    "Unsupported receipt type {}",
                    other.as_str()
                )));
            }
        };
        ephemeral
            .set_receipt(user, room_id, kind, thread, event_id)
            .await?;
        if kind == ReceiptKind::Read {
            self.share_read_receipt(rooms, room_id, user, event_id, thread)
                .await?;
        }
        Ok(())
    }

    /// `user`'s read markers (`/read_markers`): the fully-read marker, and public and private
    /// receipts (the public one shared with the room's servers).
    pub async fn read_markers(
        &self,
        (rooms, ephemeral): (&Rooms, &Ephemeral),
        user: &UserId,
        room_id: &RoomId,
        (fully_read, read, private): (Option<&EventId>, Option<&EventId>, Option<&EventId>),
    ) -> Result<()> {
        ephemeral
            .set_read_markers(user, room_id, fully_read, read, private)
            .await?;
        if let Some(event_id) = read {
            self.share_read_receipt(rooms, room_id, user, event_id, &ReceiptThread::Unthreaded)
                .await?;
        }
        Ok(())
    }

    /// `user` sets their presence (`/presence/{userId}/status`).
    pub async fn presence(
        &self,
        ephemeral: &Ephemeral,
        user: &UserId,
        state: PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        if ephemeral.set_presence(user, state, status_msg)? {
            self.share_presence(ephemeral, user).await?;
        }
        Ok(())
    }

    /// `user` syncs with `set_presence` (`/sync`, sliding sync): presence follows it, and
    /// changes are shared. A value the spec does not define is refused.
    pub async fn presence_from_sync(
        &self,
        ephemeral: &Ephemeral,
        user: &UserId,
        set_presence: &PresenceState,
    ) -> Result<()> {
        if !matches!(
            set_presence,
            PresenceState::Online | PresenceState::Offline | PresenceState::Unavailable
        ) {
            return Err(Error::invalid_param(format!(
                "Unknown set_presence {:?}",
                set_presence.as_str()
            )));
        }
        if ephemeral.presence_from_sync(user, set_presence) {
            self.share_presence(ephemeral, user).await?;
        }
        Ok(())
    }

    /// Queue an EDU of any kind for the given servers (ours is skipped).
    pub async fn queue_edu_for(
        &self,
        destinations: &[OwnedServerName],
        edu_type: &str,
        content: &impl serde::Serialize,
    ) -> Result<()> {
        let content = serde_json::to_value(content)
            .map_err(|e| Error::internal(format!("EDU content: {e}")))?;
        let destinations: Vec<&str> = destinations.iter().map(|d| d.as_str()).collect();
        self.sender
            .queue_edu(&destinations, edu_type, &content)
            .await
    }

    /// Tell the other servers in the room about a local user's public read receipt.
    async fn share_read_receipt(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        user: &UserId,
        event_id: &EventId,
        thread: &ReceiptThread,
    ) -> Result<()> {
        let mut data = json!({ "ts": MilliSecondsSinceUnixEpoch::now() });
        if let Some(t) = thread.as_str() {
            data["thread_id"] = t.into();
        }
        let content = json!({
            room_id.as_str(): { "m.read": { user.as_str(): { "event_ids": [event_id], "data": data } } }
        });
        self.queue_room_edu(rooms, room_id, "m.receipt", &content)
            .await
    }

    async fn queue_room_edu(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        edu_type: &str,
        content: &Value,
    ) -> Result<()> {
        let room = rooms.room(room_id).await?;
        let servers = db::federation::servers_in_room(
            &self.db,
            room.room_nid,
            self.server_keys.server_name().as_str(),
        )
        .await?;
        let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
        self.sender.queue_edu(&servers, edu_type, content).await
    }

    /// Tell the servers sharing a room with a local user their presence as it now is.
    async fn share_presence(&self, ephemeral: &Ephemeral, user: &UserId) -> Result<()> {
        let servers = db::federation::servers_sharing_rooms(
            &self.db,
            user.as_str(),
            self.server_keys.server_name().as_str(),
        )
        .await?;
        if servers.is_empty() {
            return Ok(());
        }
        let view = ephemeral.presence(user, user).await?;
        let mut update = json!({
            "user_id": user,
            "presence": view.presence,
            "last_active_ago": view
                .last_active_ago
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "currently_active": view.currently_active,
        });
        if let Some(msg) = &view.status_msg {
            update["status_msg"] = msg.clone().into();
        }
        let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
        self.sender
            .queue_edu(&servers, "m.presence", &json!({ "push": [update] }))
            .await
    }
}

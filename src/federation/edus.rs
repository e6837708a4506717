//! EDUs both ways. Received: typing, receipts and presence of the origin's users, each
//! checked (the user belongs to the origin; a room EDU names a room the user is joined to
//! and whose ACL admits the origin) and applied on its own: one bad EDU never stops the
//! others. Sent: our users' typing, public receipts and presence, through the queue.

use std::time::Duration;

use ruma::ServerName;
use ruma::api::federation::transactions::edu::Edu;
use ruma::serde::Raw;

use crate::ephemeral::Ephemeral;
use crate::ephemeral::receipts::ReceiptKind;

/// How long a remote typing notice lasts unless renewed (the EDU carries no timeout).
const REMOTE_TYPING: Duration = Duration::from_secs(30);

pub async fn apply(
    rooms: &crate::room::Rooms,
    ephemeral: &Ephemeral,
    origin: &ServerName,
    edus: &[Raw<Edu>],
) {
    // A server the room's ACL denies may not type or send receipts there either.
    let allowed = |room_id: ruma::OwnedRoomId| async move {
        match rooms.room(&room_id).await {
            Ok(room) => rooms.server_allowed(&room, origin).await.unwrap_or(false),
            Err(_) => false,
        }
    };
    for raw in edus {
        let edu = match raw.deserialize() {
            Ok(e) => e,
            Err(e) => {
                tracing::info!(%origin, error = %e, "unreadable EDU ignored");
                continue;
            }
        };
        match edu {
            Edu::Typing(t) => {
                if t.user_id.server_name() != origin || !allowed(t.room_id.clone()).await {
                    continue;
                }
                let timeout = t.typing.then_some(REMOTE_TYPING);
                if let Err(e) = ephemeral.set_typing(&t.user_id, &t.room_id, timeout).await {
                    tracing::info!(%origin, user = %t.user_id, error = %e, "typing EDU refused");
                }
            }
            Edu::Receipt(r) => {
                for (room_id, map) in r.receipts {
                    if !allowed(room_id.clone()).await {
                        continue;
                    }
                    for (user, data) in map.read {
                        if user.server_name() != origin {
                            continue;
                        }
                        for event_id in &data.event_ids {
                            if let Err(e) = ephemeral
                                .set_receipt(
                                    &user,
                                    &room_id,
                                    ReceiptKind::Read,
                                    &data.data.thread,
                                    event_id,
                                )
                                .await
                            {
                                tracing::info!(%origin, %user, error = %e, "receipt EDU refused");
                            }
                        }
                    }
                }
            }
            Edu::Presence(p) => {
                for update in p.push {
                    if update.user_id.server_name() != origin {
                        continue;
                    }
                    if let Err(e) =
                        ephemeral.set_presence(&update.user_id, update.presence, update.status_msg)
                    {
                        tracing::info!(%origin, error = %e, "presence EDU refused");
                    }
                }
            }
            other => {
                tracing::debug!(%origin, kind = ?std::mem::discriminant(&other), "EDU type not handled here");
            }
        }
    }
}

impl super::Federation {
    /// Tell the other servers in the room that a local user started or stopped typing.
    pub async fn send_typing(
        &self,
        rooms: &crate::room::Rooms,
        room_id: &ruma::RoomId,
        user: &ruma::UserId,
        typing: bool,
    ) -> crate::error::Result<()> {
        let content = serde_json::json!({ "room_id": room_id, "user_id": user, "typing": typing });
        self.queue_room_edu(rooms, room_id, "m.typing", &content)
            .await
    }

    /// Tell the other servers in the room about a local user's public read receipt.
    pub async fn send_read_receipt(
        &self,
        rooms: &crate::room::Rooms,
        room_id: &ruma::RoomId,
        user: &ruma::UserId,
        event_id: &ruma::EventId,
        thread: &ruma::events::receipt::ReceiptThread,
    ) -> crate::error::Result<()> {
        let mut data = serde_json::json!({ "ts": ruma::MilliSecondsSinceUnixEpoch::now() });
        if let Some(t) = thread.as_str() {
            data["thread_id"] = t.into();
        }
        let content = serde_json::json!({
            room_id.as_str(): { "m.read": { user.as_str(): { "event_ids": [event_id], "data": data } } }
        });
        self.queue_room_edu(rooms, room_id, "m.receipt", &content)
            .await
    }

    async fn queue_room_edu(
        &self,
        rooms: &crate::room::Rooms,
        room_id: &ruma::RoomId,
        edu_type: &str,
        content: &serde_json::Value,
    ) -> crate::error::Result<()> {
        let room = rooms.room(room_id).await?;
        let servers = crate::db::federation::servers_in_room(
            &self.db,
            room.room_nid,
            self.server_keys.server_name().as_str(),
        )
        .await?;
        let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
        self.sender.queue_edu(&servers, edu_type, content).await
    }
}

impl super::Federation {
    /// Queue an EDU of any kind for the given servers (ours is skipped).
    pub async fn queue_edu_for(
        &self,
        destinations: &[ruma::OwnedServerName],
        edu_type: &str,
        content: &impl serde::Serialize,
    ) -> crate::error::Result<()> {
        let content = serde_json::to_value(content)
            .map_err(|e| crate::error::Error::internal(format!("EDU content: {e}")))?;
        let destinations: Vec<&str> = destinations.iter().map(|d| d.as_str()).collect();
        self.sender
            .queue_edu(&destinations, edu_type, &content)
            .await
    }
}

impl super::Federation {
    /// Tell the servers sharing a room with a local user that their presence changed.
    pub async fn send_presence(
        &self,
        user: &ruma::UserId,
        view: &crate::ephemeral::presence::PresenceView,
    ) -> crate::error::Result<()> {
        let servers = crate::db::federation::servers_sharing_rooms(
            &self.db,
            user.as_str(),
            self.server_keys.server_name().as_str(),
        )
        .await?;
        if servers.is_empty() {
            return Ok(());
        }
        let mut update = serde_json::json!({
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
            .queue_edu(
                &servers,
                "m.presence",
                &serde_json::json!({ "push": [update] }),
            )
            .await
    }
}

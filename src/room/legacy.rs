//! The deprecated but still specified initial-sync views (`/initialSync`,
//! `/rooms/{roomId}/initialSync`), built from the same reads as /messages and /state so old
//! clients and scripts see what new ones see.

use ruma::events::room::member::MembershipState;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use super::timeline::{EventFilter, TopoToken};
use crate::error::Result;

impl Rooms {
    /// One room as the legacy initial sync shows it: the caller's membership, the newest
    /// `limit` events (oldest first) with tokens, the current state and the visibility.
    pub async fn legacy_room_snapshot(
        &self,
        user: &UserId,
        room_id: &RoomId,
        limit: i64,
    ) -> Result<Value> {
        let room = self.room(room_id).await?;
        self.check_can_read(&room, user).await?;
        let membership = self.membership(&room, user).await?;
        let page = self
            .messages(
                user,
                room_id,
                None,
                None,
                false,
                limit,
                &EventFilter::default(),
            )
            .await?;
        let mut chunk = page.chunk;
        chunk.reverse();
        let start = page.end.unwrap_or(TopoToken::START);
        let visibility = self.history_visibility(&room).await?;
        // Current state needs a current join; a user who left sees the timeline part only.
        let state = if membership == Some(MembershipState::Join) || visibility == "world_readable" {
            self.current_state(user, room_id).await?
        } else {
            Vec::new()
        };
        Ok(json!({
            "room_id": room_id,
            "membership": membership,
            "messages": {"chunk": chunk, "start": start.to_string(), "end": page.start.to_string()},
            "state": state,
            "visibility": if visibility == "world_readable" { "public" } else { "private" },
            "presence": [],
            "account_data": [],
        }))
    }
}

//! Reports of events and rooms to the server's administrators (`/report`). Stored for them
//! to read, and logged; nothing is sent to other servers.

use ruma::{EventId, RoomId, UserId};

use super::Rooms;
use crate::db;
use crate::error::{Error, Result};

/// Longest reason a report keeps, in bytes: enough for any explanation, bounded for the
/// table.
pub const MAX_REASON_BYTES: usize = 4096;

impl Rooms {
    /// `user` reports `event_id`: only an event they may see (else 404, as for an unknown
    /// one, so reports cannot probe for hidden events).
    pub async fn report_event(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: &str,
    ) -> Result<()> {
        check_reason(reason)?;
        match self.event(user, room_id, event_id).await {
            Ok(_) => {}
            Err(e) if e.is_internal() => return Err(e),
            Err(_) => return Err(Error::not_found("Event not found, or not one you may see")),
        }
        self.store_report(user, room_id, Some(event_id), reason)
            .await
    }

    /// `user` reports a whole room this server knows.
    pub async fn report_room(&self, user: &UserId, room_id: &RoomId, reason: &str) -> Result<()> {
        check_reason(reason)?;
        self.room(room_id).await?;
        self.store_report(user, room_id, None, reason).await
    }

    async fn store_report(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: Option<&EventId>,
        reason: &str,
    ) -> Result<()> {
        let report_id = db::reports::insert(
            self.db(),
            &db::reports::NewReport {
                received_ts: crate::account::now_ms(),
                user_id: user.as_str(),
                room_id: room_id.as_str(),
                event_id: event_id.map(EventId::as_str),
                reason,
            },
        )
        .await?;
        tracing::info!(report_id, %user, %room_id, event_id = ?event_id, "content reported");
        Ok(())
    }
}

fn check_reason(reason: &str) -> Result<()> {
    match reason.len() > MAX_REASON_BYTES {
        true => Err(Error::invalid_param(format!(
            "reason must be at most {MAX_REASON_BYTES} bytes"
        ))),
        false => Ok(()),
    }
}

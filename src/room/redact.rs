//! Redactions sent by local users. Other servers' redactions are judged when they take
//! effect (`persist`); a local user is held to Synapse's stricter rule up front: their own
//! events, or anyone's with the room's redact power level.

use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::json;

use super::pdu::NewContent;
use super::write::TxnRef;
use super::{Rooms, power, raw};
use crate::db;
use crate::error::{Error, Result};

impl Rooms {
    /// Redact `target` in the room as `sender`, with an optional reason. An event this server
    /// does not have may still be named: the redaction then waits for it, and is judged by
    /// the rule for other servers' redactions when it comes.
    pub async fn redact(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &EventId,
        reason: Option<&str>,
        txn: Option<TxnRef<'_>>,
    ) -> Result<OwnedEventId> {
        let room = self.room(room_id).await?;
        let known = db::events::by_id(&self.db, target.as_str()).await?;
        // What Synapse refuses before building a redaction of an event it has: one of
        // another room (it would never take effect; 400 as Synapse answers), and the events
        // whose loss would break the room (its create event, its server ACL).
        if let Some(t) = &known {
            if t.room_nid != room.room_nid {
                return Err(Error::bad_request(
                    "Cannot redact an event of a different room",
                ));
            }
            match t.event_type.as_str() {
                "m.room.create" => {
                    return Err(Error::forbidden("Redacting create events is not permitted"));
                }
                "m.room.server_acl" => {
                    return Err(Error::forbidden(
                        "Redacting server ACL events is not permitted",
                    ));
                }
                _ => {}
            }
        }
        if let Some(t) = known
            && t.sender != sender.as_str()
        {
            let rules = room.rules()?;
            let state = match room.state_group {
                Some(group) => self.state_entries(group, &power::state_keys()).await?,
                None => Default::default(),
            };
            if !power::may_redact_others(&rules, &state, sender) {
                return Err(Error::forbidden(
                    "You don't have permission to redact events of others",
                ));
            }
        }
        let mut content = json!({ "redacts": target });
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        let new = NewContent {
            kind: TimelineEventType::RoomRedaction,
            state_key: None,
            content: raw(&content)?,
            redacts: Some(target.to_owned()),
        };
        self.send(sender, room_id, new, txn).await
    }
}

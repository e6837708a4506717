//! EDUs received: typing, receipts and presence of the origin's users, each checked (the
//! user belongs to the origin; a room EDU names a room the user is joined to and whose ACL
//! admits the origin) and applied on its own: one bad EDU never stops the others. What our
//! users send goes out through `share`.

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

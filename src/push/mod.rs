//! Push notifications: the pushers users set, the list of what notified them
//! (`/notifications`), and the sender that delivers notifications to push gateways
//! ([`sender`]). Which events notify whom is decided when an event is stored
//! (`room::push`); this module reads those push actions.
//!
//! Domain code: ruma types and our [`Error`], no HTTP server types.

pub mod gateway;
pub mod sender;

use std::collections::HashMap;
use std::sync::Arc;

use ruma::api::client::push::get_notifications::v3::Notification;
use ruma::api::client::push::{Pusher, PusherIds, PusherInit, PusherKind};
use ruma::push::{HttpPusherData, PushFormat};
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt, UserId};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::account::{AuthedUser, now_ms};
use crate::config::PushConfig;
use crate::db::{self, push::PusherRow};
use crate::error::{Error, Result};
use crate::federation::client::FederationClient;
use crate::room::Rooms;
use sender::PushSender;

/// The path every push gateway URL ends with (Push Gateway API v1).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Longest app ID and pushkey the spec allows (characters and bytes).
const MAX_APP_ID: usize = 64;
const MAX_PUSHKEY: usize = 512;
/// Notifications per /notifications page unless asked for fewer, and at most.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 100;

#[derive(Clone)]
pub struct Push {
    db: PgPool,
    rooms: Rooms,
    sender: Arc<PushSender>,
}

/// A page of /notifications: the notifications, newest first, and the token of the next page.
pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    pub next_token: Option<String>,
}

impl Push {
    pub fn new(
        db: PgPool,
        rooms: Rooms,
        client: Arc<FederationClient>,
        config: &PushConfig,
    ) -> Self {
        let sender = PushSender::new(db.clone(), rooms.clone(), client, config);
        Push { db, rooms, sender }
    }

    /// Start delivering notifications until `stop` turns true; the task ends once requests
    /// in flight are done with (await it before closing the database).
    pub fn start(&self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        self.sender.start(stop)
    }

    /// The user's pushers.
    pub async fn pushers(&self, user: &UserId) -> Result<Vec<Pusher>> {
        db::push::pushers_of(&self.db, user.as_str())
            .await?
            .into_iter()
            .map(|row| {
                let data: HttpPusherData = serde_json::from_str(&row.data)
                    .map_err(|e| Error::internal(format!("stored pusher data: {e}")))?;
                Ok(PusherInit {
                    ids: PusherIds::new(row.pushkey, row.app_id),
                    kind: PusherKind::Http(data),
                    app_display_name: row.app_display_name,
                    device_display_name: row.device_display_name,
                    profile_tag: row.profile_tag,
                    lang: row.lang,
                }
                .into())
            })
            .collect()
    }

    /// Create or update the caller's pusher (`append`: keep the same app ID and pushkey of
    /// other users, otherwise they are removed). Only `http` pushers are served.
    pub async fn set_pusher(&self, user: &AuthedUser, pusher: Pusher, append: bool) -> Result<()> {
        check_ids(&pusher.ids)?;
        let data = match pusher.kind {
            PusherKind::Http(data) => data,
            PusherKind::Email(_) => {
                return Err(Error::invalid_param(
                    "Email pushers are not supported by this server: use kind \"http\"",
                ));
            }
            _ => {
                return Err(Error::invalid_param(
                    "Unknown pusher kind: this server supports kind \"http\"",
                ));
            }
        };
        check_http_data(&data)?;
        let row = PusherRow {
            user_id: user.user_id.to_string(),
            device_id: user.device_id.to_string(),
            app_id: pusher.ids.app_id,
            pushkey: pusher.ids.pushkey,
            kind: "http".to_owned(),
            app_display_name: pusher.app_display_name,
            device_display_name: pusher.device_display_name,
            profile_tag: pusher.profile_tag,
            lang: pusher.lang,
            data: serde_json::to_string(&data)
                .map_err(|e| Error::internal(format!("pusher data: {e}")))?,
            pushkey_ts: now_ms(),
            // A new pusher sends what notifies from now on, not the user's history.
            last_stream_ordering: self.rooms.stream().safe_position(),
        };
        db::push::set_pusher(&self.db, &row, append).await?;
        self.sender
            .pusher_changed(&row.user_id, &row.app_id, &row.pushkey);
        Ok(())
    }

    /// Remove the caller's pusher, if there is one (removing none is no error).
    pub async fn delete_pusher(&self, user: &UserId, ids: &PusherIds) -> Result<()> {
        db::push::delete_pusher(&self.db, user.as_str(), &ids.app_id, &ids.pushkey).await?;
        Ok(())
    }

    /// A page of the events that notified `user`, newest first: before the position `from`
    /// (a `next_token` of an earlier page), at most `limit`, only highlights if `only` is
    /// `highlight`.
    pub async fn notifications(
        &self,
        user: &UserId,
        from: Option<&str>,
        limit: Option<UInt>,
        only: Option<&str>,
    ) -> Result<NotificationPage> {
        let before = from
            .map(|f| {
                f.parse::<i64>()
                    .map_err(|_| Error::invalid_param("from: not a token /notifications gave"))
            })
            .transpose()?;
        let limit = limit.map_or(DEFAULT_PAGE, u64::from).clamp(1, MAX_PAGE) as usize;
        let highlights = only == Some("highlight");
        let mut rows = db::push::notifications(
            &self.db,
            user.as_str(),
            before,
            highlights,
            limit as i64 + 1,
        )
        .await?;
        let next_token = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            rows.last().map(|r| r.stream_ordering.to_string())
        });
        let nids: Vec<i64> = rows.iter().map(|r| r.event_nid).collect();
        let mut events: HashMap<i64, db::events::StoredEvent> =
            db::events::by_nids(&self.db, &nids)
                .await?
                .into_iter()
                .map(|e| (e.event_nid, e))
                .collect();
        // Formatted room by room (redactions apply by room version), kept in page order.
        let mut by_room: HashMap<&str, Vec<db::events::StoredEvent>> = HashMap::new();
        for r in &rows {
            if let Some(e) = events.remove(&r.event_nid) {
                by_room.entry(r.room_id.as_str()).or_default().push(e);
            }
        }
        let mut formatted: HashMap<i64, serde_json::Value> = HashMap::new();
        for (room_id, evs) in by_room {
            let room_id = OwnedRoomId::try_from(room_id)
                .map_err(|e| Error::internal(format!("stored room ID: {e}")))?;
            let room = self.rooms.room(&room_id).await?;
            let client = self.rooms.to_client(&room, &evs).await?;
            formatted.extend(evs.iter().map(|e| e.event_nid).zip(client));
        }
        let mut notifications = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(event) = formatted.remove(&r.event_nid) else {
                continue;
            };
            let event = serde_json::value::to_raw_value(&event)
                .map_err(|e| Error::internal(format!("event JSON: {e}")))?;
            let room_id = OwnedRoomId::try_from(r.room_id.as_str())
                .map_err(|e| Error::internal(format!("stored room ID: {e}")))?;
            let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(r.ts.max(0)).unwrap_or_default());
            notifications.push(Notification::new(
                gateway::stored_actions(r.actions.as_deref(), r.highlight),
                Raw::from_json(event),
                r.read,
                room_id,
                ts,
            ));
        }
        Ok(NotificationPage {
            notifications,
            next_token: next_token.flatten(),
        })
    }
}

/// The app ID and pushkey: present and within the spec's lengths.
fn check_ids(ids: &PusherIds) -> Result<()> {
    if ids.app_id.is_empty() || ids.app_id.chars().count() > MAX_APP_ID {
        return Err(Error::invalid_param(format!(
            "app_id must be 1 to {MAX_APP_ID} characters"
        )));
    }
    if ids.pushkey.is_empty() || ids.pushkey.len() > MAX_PUSHKEY {
        return Err(Error::invalid_param(format!(
            "pushkey must be 1 to {MAX_PUSHKEY} bytes"
        )));
    }
    Ok(())
}

/// An http pusher's data: an absolute http(s) URL of a push gateway's notify endpoint, and
/// a format this server knows.
fn check_http_data(data: &HttpPusherData) -> Result<()> {
    let bad_url = || {
        Error::invalid_param(format!(
            "data.url must be an absolute http or https URL ending in {NOTIFY_PATH}"
        ))
    };
    let url = url::Url::parse(&data.url).map_err(|_| bad_url())?;
    let absolute = matches!(url.scheme(), "http" | "https") && url.host().is_some();
    if !absolute || !url.path().ends_with(NOTIFY_PATH) {
        return Err(bad_url());
    }
    match &data.format {
        None | Some(PushFormat::EventIdOnly) => Ok(()),
        Some(other) => Err(Error::invalid_param(format!(
            "data.format {:?} is not known: use \"event_id_only\" or leave it out",
            other.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> HttpPusherData {
        HttpPusherData::new(url.to_owned())
    }

    #[test]
    fn gateway_urls_are_absolute_and_end_in_the_notify_path() {
        for good in [
            "https://push.example.org/_matrix/push/v1/notify",
            "http://127.0.0.1:5000/_matrix/push/v1/notify",
            "https://push.example.org/prefix/_matrix/push/v1/notify",
        ] {
            assert!(check_http_data(&http(good)).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/_matrix/push/v1/notify",
            "push.example.org/_matrix/push/v1/notify",
            "ftp://push.example.org/_matrix/push/v1/notify",
            "https://push.example.org/_matrix/push/v1/notify/extra",
            "https://push.example.org/",
            "mailto:a@b.c",
        ] {
            let e = check_http_data(&http(bad)).unwrap_err();
            assert_eq!(e.kind(), ruma::api::error::ErrorKind::InvalidParam, "{bad}");
        }
    }

    #[test]
    fn unknown_formats_are_refused() {
        let mut data = http("https://p.example/_matrix/push/v1/notify");
        data.format = Some(PushFormat::EventIdOnly);
        assert!(check_http_data(&data).is_ok());
        data.format = Some(PushFormat::from("full_event"));
        assert!(check_http_data(&data).is_err());
    }

    #[test]
    fn ids_are_bounded() {
        assert!(check_ids(&PusherIds::new("k".into(), "app".into())).is_ok());
        assert!(check_ids(&PusherIds::new(String::new(), "app".into())).is_err());
        assert!(check_ids(&PusherIds::new("k".into(), "a".repeat(65))).is_err());
        assert!(check_ids(&PusherIds::new("k".repeat(513), "app".into())).is_err());
    }
}

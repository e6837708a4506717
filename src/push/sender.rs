//! The push sender: delivers each pusher's notifications to its push gateway, in stream order,
//! one request in flight per pusher.
//!
//! The queue is the `event_push_actions` table itself (written with the event by the append
//! path), and each pusher keeps its position in it in Postgres (`pushers.last_stream_ordering`,
//! moved after every notification is done with), so a restart neither sends one twice nor
//! loses one. The sender wakes when the event stream's safe position moves (so it never waits
//! on a write, and never reads past a commit still in flight), when a pusher changes, and when
//! a retry falls due. A gateway that times out, answers 5xx or 429, or cannot be reached is
//! retried with exponential backoff up to a configured cap; one that answers our pushkey in
//! `rejected` loses the pusher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::events::StateEventType;
use ruma::push::HttpPusherData;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::gateway::{self, Outcome, RoomFacts, Target};
use crate::config::PushConfig;
use crate::db::{self, push::ActionRow, push::PusherRow};
use crate::federation::client::FederationClient;
use crate::room::Rooms;
use crate::room::pdu::Pdu;

/// How old a notification may be and still be sent: one a gateway could not take for a day
/// (down, failing) is passed over, so a long outage ends with today's notifications, not a
/// backlog of stale ones (Synapse gives up after a day too). `/notifications` still lists it.
const MAX_AGE_MS: i64 = 24 * 60 * 60 * 1000;

/// Push actions read at once for one pusher.
const BATCH: i64 = 20;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How often the pushers are looked at even without a wake-up.
const IDLE_TICK: Duration = Duration::from_secs(30);

/// A pusher: (user, app ID, pushkey).
type Key = (String, String, String);

#[derive(Default)]
struct PusherState {
    in_flight: bool,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
}

pub struct PushSender {
    db: PgPool,
    rooms: Rooms,
    client: Arc<FederationClient>,
    timeout: Duration,
    max_backoff: Duration,
    wake: Notify,
    pushers: Mutex<HashMap<Key, PusherState>>,
}

/// Why a pusher stopped sending for now.
enum Stop {
    /// Nothing left up to the safe position.
    Idle,
    /// The gateway failed: back off.
    Failed(String),
    /// The pusher is gone (rejected by its gateway, or removed by its user).
    Gone,
}

impl PushSender {
    pub fn new(
        db: PgPool,
        rooms: Rooms,
        client: Arc<FederationClient>,
        config: &PushConfig,
    ) -> Arc<Self> {
        Arc::new(PushSender {
            db,
            rooms,
            client,
            timeout: Duration::from_secs(config.request_timeout_secs),
            max_backoff: Duration::from_secs(config.max_retry_interval_secs).max(FIRST_BACKOFF),
            wake: Notify::new(),
            pushers: Mutex::new(HashMap::new()),
        })
    }

    /// A pusher was set anew (perhaps with another URL): forget its backoff and look again.
    pub fn pusher_changed(&self, user_id: &str, app_id: &str, pushkey: &str) {
        let key = (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        if let Some(p) = self.pushers.lock().get_mut(&key) {
            p.backoff = None;
            p.retry_at = None;
        }
        self.wake.notify_one();
    }

    /// Run until `stop` turns true: at start (catching up whatever is pending), whenever the
    /// event stream's safe position moves, on [`Self::pusher_changed`], when a worker ends
    /// and when a retry falls due, start a worker for every pusher with work. The task ends
    /// once the workers have finished the requests they had in flight and stored where they
    /// got to, so a clean stop sends nothing twice after the restart.
    pub fn start(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        let mut stream = self.rooms.stream().subscribe();
        tokio::spawn(async move {
            let mut workers = JoinSet::new();
            loop {
                if *stop.borrow() {
                    break;
                }
                this.dispatch(&mut workers, &stop).await;
                let next_retry = this.next_retry_in();
                tokio::select! {
                    _ = stop.changed() => break,
                    moved = stream.changed() => if moved.is_err() { break },
                    () = this.wake.notified() => {}
                    Some(_) = workers.join_next(), if !workers.is_empty() => {}
                    () = tokio::time::sleep(next_retry) => {}
                }
            }
            while workers.join_next().await.is_some() {}
        })
    }

    fn next_retry_in(&self) -> Duration {
        let now = Instant::now();
        self.pushers
            .lock()
            .values()
            .filter_map(|p| p.retry_at)
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE_TICK)
            .min(IDLE_TICK)
    }

    async fn dispatch(self: &Arc<Self>, workers: &mut JoinSet<()>, stop: &watch::Receiver<bool>) {
        let upto = self.rooms.stream().safe_position();
        let pending = match db::push::pushers_with_work(&self.db, upto).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pushers");
                return;
            }
        };
        let now = Instant::now();
        {
            // Backoffs of pushers with nothing left to send (removed since) are forgotten.
            let keys: std::collections::HashSet<(&str, &str, &str)> = pending
                .iter()
                .map(|p| (p.user_id.as_str(), p.app_id.as_str(), p.pushkey.as_str()))
                .collect();
            self.pushers.lock().retain(|k, p| {
                p.in_flight
                    || p.retry_at.is_some_and(|t| t > now)
                    || keys.contains(&(k.0.as_str(), k.1.as_str(), k.2.as_str()))
            });
        }
        for pusher in pending {
            let key = (
                pusher.user_id.clone(),
                pusher.app_id.clone(),
                pusher.pushkey.clone(),
            );
            {
                let mut all = self.pushers.lock();
                let p = all.entry(key.clone()).or_default();
                if p.in_flight || p.retry_at.is_some_and(|t| t > now) {
                    continue;
                }
                p.in_flight = true;
            }
            let this = self.clone();
            let stop = stop.clone();
            workers.spawn(async move {
                let stopped = this.drain(pusher, &stop).await;
                let mut all = this.pushers.lock();
                match stopped {
                    Stop::Idle | Stop::Gone => {
                        all.remove(&key);
                    }
                    Stop::Failed(error) => {
                        let p = all.entry(key.clone()).or_default();
                        p.in_flight = false;
                        let backoff = p
                            .backoff
                            .map_or(FIRST_BACKOFF, |b| (b * 2).min(this.max_backoff));
                        p.backoff = Some(backoff);
                        p.retry_at = Some(Instant::now() + backoff);
                        tracing::info!(user_id = %key.0, app_id = %key.1, %error, retry_in = ?backoff, "push gateway failed");
                    }
                }
                // Actions stored while this worker ran are picked up on the next pass, which
                // its end starts.
            });
        }
    }

    /// Send a pusher's notifications, oldest first, until none is left up to the safe
    /// position, the gateway fails, the pusher goes, or the server stops.
    #[tracing::instrument(name = "pusher", skip_all, fields(user_id = %pusher.user_id, app_id = %pusher.app_id))]
    async fn drain(&self, mut pusher: PusherRow, stop: &watch::Receiver<bool>) -> Stop {
        let data: HttpPusherData = match serde_json::from_str(&pusher.data) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable pusher data; pusher removed");
                self.remove(&pusher).await;
                return Stop::Gone;
            }
        };
        let Ok(user) = OwnedUserId::try_from(pusher.user_id.as_str()) else {
            self.remove(&pusher).await;
            return Stop::Gone;
        };
        loop {
            let upto = self.rooms.stream().safe_position();
            let span = (pusher.last_stream_ordering, upto);
            let actions =
                match db::push::actions_between(&self.db, &pusher.user_id, span, BATCH).await {
                    Ok(a) => a,
                    Err(e) => return Stop::Failed(e.to_string()),
                };
            if actions.is_empty() {
                return Stop::Idle;
            }
            for action in actions {
                if *stop.borrow() {
                    return Stop::Idle;
                }
                match self.send_one(&user, &pusher, &data, &action).await {
                    Ok(Outcome::Done) => {}
                    Ok(Outcome::Rejected) => {
                        tracing::info!("the push gateway rejected the pushkey; pusher removed");
                        self.remove(&pusher).await;
                        return Stop::Gone;
                    }
                    Ok(Outcome::Retry) => return Stop::Failed("the gateway asked to retry".into()),
                    Err(e) => return Stop::Failed(e),
                }
                let key = (
                    pusher.user_id.as_str(),
                    pusher.app_id.as_str(),
                    pusher.pushkey.as_str(),
                );
                match db::push::advance_pusher(&self.db, key, action.stream_ordering).await {
                    Ok(true) => pusher.last_stream_ordering = action.stream_ordering,
                    // Removed (by its user, or with its device) while this worker ran.
                    Ok(false) => return Stop::Gone,
                    Err(e) => return Stop::Failed(e.to_string()),
                }
            }
        }
    }

    /// Send the notification of one push action; its outcome, or why no answer came.
    async fn send_one(
        &self,
        user: &OwnedUserId,
        pusher: &PusherRow,
        data: &HttpPusherData,
        action: &ActionRow,
    ) -> Result<Outcome, String> {
        if crate::account::now_ms().saturating_sub(action.ts) > MAX_AGE_MS {
            tracing::info!(
                event_nid = action.event_nid,
                "notification a day old; not sent"
            );
            return Ok(Outcome::Done);
        }
        let events = db::events::by_nids(&self.db, &[action.event_nid])
            .await
            .map_err(|e| e.to_string())?;
        let Some(stored) = events.into_iter().next() else {
            return Ok(Outcome::Done);
        };
        // A redacted event is not worth a notification any more; the sender's own events
        // never notify (push rules are not evaluated for them, this guards older rows).
        if stored.redacted_by.is_some() || stored.sender == pusher.user_id {
            return Ok(Outcome::Done);
        }
        let (Ok(event_id), Ok(room_id)) = (
            ruma::OwnedEventId::try_from(stored.event_id.as_str()),
            OwnedRoomId::try_from(action.room_id.as_str()),
        ) else {
            return Ok(Outcome::Done);
        };
        let Ok(event) = Pdu::parse(event_id, &stored.json) else {
            return Ok(Outcome::Done);
        };
        let full = data.format.is_none();
        let room = match full {
            true => self
                .room_facts(&room_id, &event)
                .await
                .map_err(|e| e.to_string())?,
            false => RoomFacts::default(),
        };
        let unread = self
            .unread(&pusher.user_id)
            .await
            .map_err(|e| e.to_string())?;
        let actions = gateway::stored_actions(action.actions.as_deref(), action.highlight);
        let target = Target {
            app_id: &pusher.app_id,
            pushkey: &pusher.pushkey,
            pushkey_ts: pusher.pushkey_ts,
            data,
        };
        let notification =
            gateway::notification(user, (&event, room_id), &room, &actions, &target, unread);
        let body = gateway::body(&notification).map_err(|e| e.to_string())?;
        let (status, answer) = self
            .client
            .post_json_url(&data.url, body, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = gateway::outcome(status, &answer, &pusher.pushkey);
        match outcome {
            Outcome::Retry => return Err(format!("the gateway answered {status}")),
            Outcome::Done if !status.is_success() => {
                tracing::warn!(%status, event_id = %event.event_id, "the push gateway refused a notification; not retried")
            }
            Outcome::Done => {
                tracing::debug!(event_id = %event.event_id, "notification sent")
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// The room's name and alias and the sender's display name, from the room's current
    /// state.
    async fn room_facts(&self, room_id: &OwnedRoomId, event: &Pdu) -> crate::Result<RoomFacts> {
        let room = self.rooms.room(room_id).await?;
        let Some(group) = room.state_group else {
            return Ok(RoomFacts::default());
        };
        let name = (StateEventType::RoomName, String::new());
        let alias = (StateEventType::RoomCanonicalAlias, String::new());
        let member = (StateEventType::RoomMember, event.sender.to_string());
        let keys = [name.clone(), alias.clone(), member.clone()];
        let state = self.rooms.state_entries(group, &keys).await?;
        let field = |key: &(StateEventType, String), field: &str| {
            state
                .get(key)
                .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
                .and_then(|c| c[field].as_str().map(str::to_owned))
                .filter(|s| !s.is_empty())
        };
        Ok(RoomFacts {
            name: field(&name, "name"),
            alias: field(&alias, "alias").and_then(|a| OwnedRoomAliasId::try_from(a).ok()),
            sender_display_name: field(&member, "displayname"),
        })
    }

    /// The user's unread notifications across their joined rooms, counted as /sync counts
    /// them.
    async fn unread(&self, user_id: &str) -> crate::Result<u64> {
        let rooms = db::sync::joined_room_nids(&self.db, user_id).await?;
        let counts = db::push::unread_counts(&self.db, user_id, &rooms).await?;
        Ok(counts.iter().map(|c| c.2.max(0) as u64).sum())
    }

    async fn remove(&self, pusher: &PusherRow) {
        if let Err(e) =
            db::push::delete_pusher(&self.db, &pusher.user_id, &pusher.app_id, &pusher.pushkey)
                .await
        {
            tracing::warn!(error = %e, "cannot remove a pusher");
        }
    }
}

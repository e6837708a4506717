//! Group commit for local sends. Every send joins its room's queue, then waits for the room
//! lock. Whoever holds the lock takes everything queued for the room, builds the events one
//! on top of the other, and stores them in one transaction; the senders whose events went in
//! find their answers waiting when the lock comes to them. Under load one commit (one fsync)
//! carries many events; alone, a send costs what it always did.
//!
//! A batch stops after its first state event: the events after it must be authorised against
//! the state it makes, which is only known once it is stored.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::oneshot;

use super::Rooms;
use super::append::{self, Prepared, Tip};
use super::lock::RoomLock;
use super::pdu::NewContent;
use super::tips::RoomTip;
use super::write::TxnRef;
use crate::db;
use crate::error::{Error, Result};

/// Most events stored in one transaction.
const MAX_BATCH: usize = 64;

/// One send waiting to be stored.
struct Job {
    sender: OwnedUserId,
    new: NewContent,
    /// (device ID, transaction ID) of a client send.
    txn: Option<(String, String)>,
    reply: oneshot::Sender<Result<OwnedEventId>>,
}

/// The sends queued per room.
#[derive(Default)]
pub struct SendQueues {
    pending: Mutex<HashMap<OwnedRoomId, VecDeque<Job>>>,
}

impl SendQueues {
    fn push(&self, room_id: &RoomId, job: Job) {
        self.pending
            .lock()
            .entry(room_id.to_owned())
            .or_default()
            .push_back(job);
    }

    /// The next batch of the room's queue, in order.
    fn take(&self, room_id: &RoomId) -> Vec<Job> {
        let mut pending = self.pending.lock();
        let Some(queue) = pending.get_mut(room_id) else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH
            && let Some(job) = queue.pop_front()
        {
            let state = job.new.state_key.is_some();
            batch.push(job);
            if state {
                break;
            }
        }
        if queue.is_empty() {
            pending.remove(room_id);
        }
        batch
    }
}

impl Rooms {
    /// Send an event as `sender`: build, authorise, append. A repeated client transaction
    /// returns the event it produced the first time.
    pub async fn send(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        new: NewContent,
        txn: Option<TxnRef<'_>>,
    ) -> Result<OwnedEventId> {
        if let Some(existing) = self.same_state(sender, room_id, &new).await? {
            return Ok(existing);
        }
        let guest_access = new.kind == ruma::events::TimelineEventType::RoomGuestAccess;
        let (reply, mut answer) = oneshot::channel();
        self.sends.push(
            room_id,
            Job {
                sender: sender.to_owned(),
                new,
                txn: txn.map(|t| (t.device_id.to_owned(), t.txn_id.to_owned())),
                reply,
            },
        );
        let lock = self.locks.lock(room_id).await;
        loop {
            match answer.try_recv() {
                Ok(result) => {
                    if guest_access && result.is_ok() {
                        self.kick_guests_if_revoked(room_id);
                    }
                    return result;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(Error::internal("a queued send was dropped"));
                }
                // Still queued (possibly behind a state event): store the next batch.
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.send_batch(&lock, room_id).await;
                }
            }
        }
    }

    /// The current state event that `new` would repeat: same type, state key, sender and
    /// content. Sending it again would change nothing but add an event, so its ID is the
    /// answer instead, as Synapse does (a client retrying a state change, a join twice).
    async fn same_state(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        new: &NewContent,
    ) -> Result<Option<OwnedEventId>> {
        let Some(state_key) = &new.state_key else {
            return Ok(None);
        };
        // An unknown room is for the send itself to refuse; any other failure is reported.
        let room = match self.room(room_id).await {
            Ok(room) => room,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(group) = room.state_group else {
            return Ok(None);
        };
        let key = (new.kind.to_string().into(), state_key.clone());
        let Some(current) = self
            .state_entries(group, std::slice::from_ref(&key))
            .await?
            .remove(&key)
        else {
            return Ok(None);
        };
        let content = |raw: &serde_json::value::RawValue| {
            serde_json::from_str::<serde_json::Value>(raw.get()).ok()
        };
        let same = current.sender == sender
            && content(&current.content).is_some()
            && content(&current.content) == content(&new.content);
        Ok(same.then_some(current.event_id))
    }

    /// Build and store the next batch of the room's queue, answering each of its senders.
    async fn send_batch(&self, lock: &RoomLock, room_id: &RoomId) {
        let jobs = self.sends.take(room_id);
        if jobs.is_empty() {
            return;
        }
        // On the tip the last send left, when there is one: no query before the write.
        let jobs = match self.tips.get(room_id) {
            Some(tip) => {
                let start = Start {
                    tip,
                    seen: HashMap::new(),
                    remembered: true,
                };
                match self.store_batch(lock, room_id, jobs, start).await {
                    Some(stale) => stale,
                    None => return,
                }
            }
            None => jobs,
        };
        // The room, its tip and the client transactions sent before: one query.
        let keys: Vec<(&str, &str, &str)> = jobs
            .iter()
            .filter_map(|j| {
                j.txn
                    .as_ref()
                    .map(|(d, t)| (j.sender.as_str(), d.as_str(), t.as_str()))
            })
            .collect();
        let found = match db::rooms::with_extremities(self.db(), room_id.as_str(), &keys).await {
            Ok(v) => v,
            Err(e) => return fail_all(jobs, &e.into()),
        };
        let Some(db::rooms::SendStart {
            room,
            extremities,
            seen,
        }) = found
        else {
            return fail_all(jobs, &Error::not_found("Room not found"));
        };
        let tip = RoomTip {
            room,
            extremities: extremities.into_iter().map(|(_, id, d)| (id, d)).collect(),
        };
        let start = Start {
            tip,
            seen,
            remembered: false,
        };
        if let Some(stale) = self.store_batch(lock, room_id, jobs, start).await {
            // Read under the lock a moment ago: only another process writing this room
            // moves it this fast.
            fail_all(
                stale,
                &Error::internal("the room changed while storing; retry"),
            );
        }
    }

    /// Build `jobs` on `start` and store them. Returns the jobs, unanswered, when the store
    /// found the start stale (only possible for a remembered one): nothing was written.
    async fn store_batch(
        &self,
        lock: &RoomLock,
        room_id: &RoomId,
        jobs: Vec<Job>,
        start: Start,
    ) -> Option<Vec<Job>> {
        let Start {
            tip: room_tip,
            seen,
            remembered,
        } = start;
        let room = &room_tip.room;
        let store = self.store();
        let first_tip =
            Tip::from_extremities(room_tip.extremities.iter().map(|(id, d)| (id.as_str(), *d)));
        let mut tip = first_tip.clone();
        let mut built: Vec<(Job, Prepared)> = Vec::with_capacity(jobs.len());
        // A retry of a transaction that is in this same batch: answered with its event.
        let mut repeats: Vec<(Job, usize)> = Vec::new();
        // Jobs refused on a remembered tip: another process may have changed the room (a
        // recovery, a membership), so they are built again on what is stored before the
        // refusal is believed.
        let mut refused: Vec<Job> = Vec::new();
        for job in jobs {
            if let Some((device, txn)) = &job.txn {
                let key = (job.sender.to_string(), device.clone(), txn.clone());
                if let Some(id) = seen.get(&key) {
                    let _ = job.reply.send(
                        OwnedEventId::try_from(id.as_str())
                            .map_err(|e| Error::internal(e.to_string())),
                    );
                    continue;
                }
                if let Some(first) = built
                    .iter()
                    .position(|(b, _)| b.sender == job.sender && b.txn == job.txn)
                {
                    repeats.push((job, first));
                    continue;
                }
            }
            match append::prepare_on(&store, room, tip.clone(), &job.sender, &job.new).await {
                Ok(p) => {
                    tip = Tip::after(&p.event_id, p.pdu.depth);
                    built.push((job, p));
                }
                Err(_) if remembered => refused.push(job),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if !refused.is_empty() {
            tracing::debug!(%room_id, "a send refused on the remembered tip; rebuilding from the store");
            return Some(
                built
                    .into_iter()
                    .map(|(j, _)| j)
                    .chain(refused)
                    .chain(repeats.into_iter().map(|(j, _)| j))
                    .collect(),
            );
        }
        if built.is_empty() {
            return None;
        }

        let checked = built
            .iter()
            .map(|(job, p)| {
                append::local_checked(
                    room,
                    &p.event_id,
                    &p.json,
                    &p.pdu,
                    job.txn.as_ref().map(|(d, t)| TxnRef {
                        device_id: d,
                        txn_id: t,
                    }),
                )
            })
            .collect();
        let expect = db::append::Expect {
            replaced: i64::try_from(first_tip.prev_ids.len()).unwrap_or(i64::MAX),
            state_group: room.state_group,
        };
        let outcome =
            super::persist::persist_batch_expecting(&store, lock, checked, Some(expect)).await;
        let ids: Vec<OwnedEventId> = built.iter().map(|(_, p)| p.event_id.clone()).collect();
        match outcome {
            Ok(stored) => {
                // A batch of messages leaves the state as it was: the next send can build on
                // the tip it made without asking for it. A state event changed the state
                // group, which only the store knows: the next send reads it.
                if let Some((_, last)) = built.last()
                    && built.iter().all(|(_, p)| p.pdu.state_key.is_none())
                    && stored.iter().all(|s| *s)
                {
                    let cited: Vec<String> =
                        first_tip.prev_ids.iter().map(|e| e.to_string()).collect();
                    let next =
                        room_tip.after_plain(&cited, (last.event_id.to_string(), last.pdu.depth));
                    self.tips.set(room_id, next);
                }
                for ((job, p), stored) in built.into_iter().zip(stored) {
                    let result = match stored {
                        true => {
                            tracing::debug!(event_id = %p.event_id, %room_id, kind = %job.new.kind, "event appended");
                            Ok(p.event_id)
                        }
                        false => Err(Error::internal("a new local event already existed")),
                    };
                    let _ = job.reply.send(result);
                }
                for (job, first) in repeats {
                    let _ = job.reply.send(Ok(ids[first].clone()));
                }
                None
            }
            Err(Error::Database(e)) if remembered && db::append::is_stale_write(&e) => {
                tracing::debug!(%room_id, error = %e, "remembered tip stale; rebuilding from the store");
                Some(
                    built
                        .into_iter()
                        .map(|(j, _)| j)
                        .chain(repeats.into_iter().map(|(j, _)| j))
                        .collect(),
                )
            }
            Err(e) => {
                tracing::warn!(%room_id, error = %e, events = ids.len(), "storing a batch of sends failed");
                fail_all(built.into_iter().map(|(j, _)| j), &e);
                fail_all(repeats.into_iter().map(|(j, _)| j), &e);
                None
            }
        }
    }
}

/// What a batch is built on: the room's tip, the events of earlier client transactions
/// among the batch's (empty for a remembered tip: a repeat then fails the write, which is
/// retried from the store), and whether the tip was remembered rather than read.
struct Start {
    tip: RoomTip,
    seen: HashMap<(String, String, String), String>,
    remembered: bool,
}

/// Answer every job with (a copy of) `e`.
fn fail_all(jobs: impl IntoIterator<Item = Job>, e: &Error) {
    for job in jobs {
        let _ = job.reply.send(Err(e.duplicate()));
    }
}

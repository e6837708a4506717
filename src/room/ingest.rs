//! Incoming PDUs of one room, taken together (a /send transaction carries up to 50). Most
//! of them are messages that extend the room on its current state, one after the other:
//! those are decided in memory, each on the one before, and stored in one transaction. An
//! event that is anything else (a state event, a fork, a gap, a failed check) stores what is
//! pending, then goes through the full checks of `remote.rs` on its own, so the outcome of
//! every event is what the one-by-one path would give.

use std::collections::{HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, RoomId};

use super::Rooms;
use super::append;
use super::lock::RoomLock;
use super::pdu::{Pdu, implied_create_id};
use super::remote::{Incoming, Mode, Outcome, parse_stored};
use super::write::{Checked, Current, FanOut};
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::{Error, Result};

/// What is known of the room while a batch is decided: stored events the batch refers to,
/// events of the batch accepted but not stored yet, and the forward extremities as they
/// will be once those are stored.
struct View {
    room: RoomRow,
    stored: HashMap<String, StoredEvent>,
    placed: HashSet<OwnedEventId>,
    extremities: HashSet<String>,
}

impl Rooms {
    /// Check and store incoming live PDUs of one room, in order; one outcome per event.
    /// `forward_for`: as for [`Rooms::receive_pdu`].
    pub async fn receive_pdus(
        &self,
        room_id: &RoomId,
        evs: &[Incoming],
        forward_for: Option<&str>,
    ) -> Vec<Result<Outcome>> {
        let lock = self.locks.lock(room_id).await;
        match self
            .receive_locked_batch(&lock, room_id, evs, forward_for)
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) => evs.iter().map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn receive_locked_batch(
        &self,
        lock: &RoomLock,
        room_id: &RoomId,
        evs: &[Incoming],
        forward_for: Option<&str>,
    ) -> Result<Vec<Result<Outcome>>> {
        let mut results: Vec<Option<Result<Outcome>>> = evs.iter().map(|_| None).collect();
        let mut view = self.view(room_id, evs).await?;
        let rules = view.room.rules()?;
        // Accepted, not stored yet: (index, whether it follows every forward extremity).
        let mut pending: Vec<(usize, bool)> = Vec::new();
        for (i, ev) in evs.iter().enumerate() {
            let stored = view
                .stored
                .get(ev.event_id.as_str())
                .is_some_and(|r| !r.outlier);
            if stored || view.placed.contains(&ev.event_id) {
                results[i] = Some(Ok(Outcome::AlreadyKnown));
                continue;
            }
            if let Some(extends_all) = self.plain_extension(&view, &rules, &ev.pdu).await? {
                for p in &ev.pdu.prev_events {
                    view.extremities.remove(p.as_str());
                }
                view.extremities.insert(ev.event_id.to_string());
                view.placed.insert(ev.event_id.clone());
                pending.push((i, extends_all));
                continue;
            }
            self.store_pending(
                lock,
                &view.room,
                evs,
                &mut pending,
                forward_for,
                &mut results,
            )
            .await?;
            results[i] = Some(
                self.receive_locked(
                    lock,
                    room_id,
                    ev,
                    Mode::Live {
                        forward_for,
                        state: None,
                    },
                )
                .await,
            );
            // The full path may have changed anything: look again for the rest.
            view = self.view(room_id, &evs[i + 1..]).await?;
        }
        self.store_pending(
            lock,
            &view.room,
            evs,
            &mut pending,
            forward_for,
            &mut results,
        )
        .await?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::internal("an incoming event was not decided"))))
            .collect())
    }

    /// The room, the stored events `evs` are or refer to, and its forward extremities.
    async fn view(&self, room_id: &RoomId, evs: &[Incoming]) -> Result<View> {
        let room = self.room(room_id).await?;
        // Since room version 12 the create event is implied by the room ID, not listed.
        let implied_create = implied_create_id(&room.rules()?, room_id);
        let mut wanted: Vec<&str> = implied_create.iter().map(|e| e.as_str()).collect();
        for ev in evs {
            wanted.push(ev.event_id.as_str());
            wanted.extend(ev.pdu.prev_events.iter().map(|e| e.as_str()));
            wanted.extend(ev.pdu.auth_events.iter().map(|e| e.as_str()));
        }
        let (rows, extremities) = tokio::try_join!(
            db::events::by_ids(self.db(), &wanted),
            db::events::forward_extremities(self.db(), room.room_nid),
        )?;
        Ok(View {
            room,
            stored: rows.into_iter().map(|r| (r.event_id.clone(), r)).collect(),
            placed: HashSet::new(),
            extremities: extremities.into_iter().map(|e| e.1).collect(),
        })
    }

    /// If `pdu` is a message that follows events on the room's current state and passes
    /// both its auth events and that state: whether it follows every forward extremity (then
    /// the current state extends through it). `None` when it needs the full checks.
    async fn plain_extension(
        &self,
        view: &View,
        rules: &RoomVersionRules,
        pdu: &Pdu,
    ) -> Result<Option<bool>> {
        let Some(current) = view.room.state_group else {
            return Ok(None);
        };
        if pdu.state_key.is_some() || pdu.prev_events.is_empty() {
            return Ok(None);
        }
        let on_current = pdu.prev_events.iter().all(|p| {
            view.placed.contains(p)
                || view.stored.get(p.as_str()).is_some_and(|r| {
                    !r.outlier && r.state_after.or(r.state_before) == Some(current)
                })
        });
        if !on_current {
            return Ok(None);
        }
        let implied_create = match &pdu.room_id {
            Some(room_id) => implied_create_id(rules, room_id),
            None => None,
        };
        let mut auth_state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
        for id in pdu.auth_events.iter().chain(&implied_create) {
            let Some(row) = view.stored.get(id.as_str()) else {
                return Ok(None);
            };
            let p = parse_stored(row)?;
            if let Some(k) = &p.state_key {
                auth_state.insert((StateEventType::from(p.kind.to_string()), k.clone()), p);
            }
        }
        if append::authorise(rules, pdu, &auth_state).is_err() {
            return Ok(None);
        }
        let Ok(auth_types) = append::auth_state_keys(
            rules,
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
        ) else {
            return Ok(None);
        };
        let before = self.state_entries(current, &auth_types).await?;
        if append::authorise_by_state(rules, pdu, &before).is_err() {
            return Ok(None);
        }
        let extends_all = view
            .extremities
            .iter()
            .all(|x| pdu.prev_events.iter().any(|p| p.as_str() == x));
        Ok(Some(extends_all))
    }

    /// Store the accepted events of the batch so far, in one transaction.
    async fn store_pending(
        &self,
        lock: &RoomLock,
        room: &RoomRow,
        evs: &[Incoming],
        pending: &mut Vec<(usize, bool)>,
        forward_for: Option<&str>,
        results: &mut [Option<Result<Outcome>>],
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let taken = std::mem::take(pending);
        let checked = taken
            .iter()
            .map(|(i, extends_all)| {
                Checked::accepted(
                    &evs[*i].event_id,
                    &evs[*i].json,
                    &evs[*i].pdu,
                    room,
                    room.state_group,
                    match extends_all {
                        true => Current::Extend { also: Vec::new() },
                        false => Current::Keep,
                    },
                    match forward_for {
                        Some(origin) => FanOut::Forward { origin },
                        None => FanOut::None,
                    },
                )
            })
            .collect();
        let stored = super::persist::persist_batch(&self.store(), lock, checked).await?;
        for ((i, _), stored) in taken.iter().zip(stored) {
            results[*i] = Some(Ok(match stored {
                true => Outcome::Stored { soft_failed: false },
                false => Outcome::AlreadyKnown,
            }));
        }
        Ok(())
    }
}

//! Events from other servers, after their signatures and hashes were checked (that is the
//! federation layer's part): auth against their own auth events, against the state before
//! them (resolving forks), soft-fail against the current state, then the shared store step
//! (`persist`). Live events (`/send`) and history (backfill) take this path; what is stored
//! outside the timeline (a remote join's state, fetched auth chains, out-of-band
//! memberships) is `outliers`.

use std::collections::{HashMap, HashSet};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, RoomId};

use super::Rooms;
use super::append;
use super::pdu::membership_of;
use super::pdu::{Pdu, implied_create_id};
use super::persist::{new_state_group, persist};
use super::state_res::{self, KeyMap, Pending};
use super::write::{Checked, Current, FanOut, StateChange};
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};

/// A PDU received from another server: verified, with its canonical JSON as it will be stored
/// (redacted if its content hash did not match).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event_id: OwnedEventId,
    pub json: String,
    pub pdu: Pdu,
}

/// What became of an incoming PDU.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored in the timeline (`soft_failed`: kept but hidden, it fails the current state).
    Stored { soft_failed: bool },
    /// Failed authorisation; stored as rejected so that later events can refer to it.
    Rejected(String),
    /// Already in the timeline.
    AlreadyKnown,
    /// Events it refers to that we lack: prev_events (or prev_events known only as outliers,
    /// without a state) and auth events. Nothing was stored.
    Missing {
        prev: Vec<OwnedEventId>,
        auth: Vec<OwnedEventId>,
    },
}

/// What the checks decided for an event.
struct Verdict {
    state_before: Option<i64>,
    rejected: Option<String>,
    soft_failed: bool,
    current: Current,
}

/// Live events extend the room; historical ones (backfill) fill in its past.
pub(super) enum Mode<'a> {
    Live {
        forward_for: Option<&'a str>,
        state: Option<i64>,
    },
    Historical {
        state: Option<i64>,
    },
}

pub(super) fn parse_stored(row: &db::events::StoredEvent) -> Result<Pdu> {
    let id = OwnedEventId::try_from(row.event_id.as_str())
        .map_err(|e| Error::internal(format!("stored event ID invalid: {e}")))?;
    let mut pdu = Pdu::parse(id, &row.json)?;
    pdu.rejected = row.rejected_reason.is_some();
    Ok(pdu)
}

impl Rooms {
    /// Run an incoming PDU through the checks and store it. `forward_for`: the origin, when
    /// we accept the event on its behalf (send_join and the like) and must pass it on to the
    /// other servers in the room.
    pub async fn receive_pdu(
        &self,
        room_id: &RoomId,
        ev: &Incoming,
        forward_for: Option<&str>,
    ) -> Result<Outcome> {
        self.receive(
            room_id,
            ev,
            Mode::Live {
                forward_for,
                state: None,
            },
        )
        .await
    }

    /// A live event whose prev_events could not be fetched: checked against `state` (a stored
    /// group, the state before it as another server told it) instead.
    pub async fn receive_pdu_with_state(
        &self,
        room_id: &RoomId,
        ev: &Incoming,
        state: i64,
    ) -> Result<Outcome> {
        self.receive(
            room_id,
            ev,
            Mode::Live {
                forward_for: None,
                state: Some(state),
            },
        )
        .await
    }

    /// Store an event of the room's history (backfill): checked like any other against its
    /// auth events and the state before it — from its prev_events, or `state` (a stored
    /// group) when those are unknown — but placed before everything in the stream and
    /// never touching the current state.
    pub async fn receive_historical(
        &self,
        room_id: &RoomId,
        ev: &Incoming,
        state: Option<i64>,
    ) -> Result<Outcome> {
        self.receive(room_id, ev, Mode::Historical { state }).await
    }

    async fn receive(&self, room_id: &RoomId, ev: &Incoming, mode: Mode<'_>) -> Result<Outcome> {
        let lock = self.locks.lock(room_id).await;
        self.receive_locked(&lock, room_id, ev, mode).await
    }

    /// The full checks of one PDU (its room locked by the caller), then the store.
    pub(super) async fn receive_locked(
        &self,
        lock: &super::lock::RoomLock,
        room_id: &RoomId,
        ev: &Incoming,
        mode: Mode<'_>,
    ) -> Result<Outcome> {
        let (forward_for, explicit_state, historical) = match mode {
            Mode::Live { forward_for, state } => (forward_for, state, false),
            Mode::Historical { state } => (None, state, true),
        };
        let room = self.room(room_id).await?;
        let db = self.db();
        let rules = room.rules()?;
        let pdu = &ev.pdu;

        // Since room version 12 the create event is implied by the room ID, not listed.
        let implied_create = implied_create_id(&rules, room_id).filter(|id| *id != ev.event_id);
        let mut wanted: Vec<&str> = vec![ev.event_id.as_str()];
        wanted.extend(pdu.prev_events.iter().map(|e| e.as_str()));
        wanted.extend(
            pdu.auth_events
                .iter()
                .chain(&implied_create)
                .map(|e| e.as_str()),
        );
        let rows = db::events::by_ids(db, &wanted).await?;
        let by_id: HashMap<&str, &db::events::StoredEvent> =
            rows.iter().map(|r| (r.event_id.as_str(), r)).collect();
        if by_id.get(ev.event_id.as_str()).is_some_and(|r| !r.outlier) {
            return Ok(Outcome::AlreadyKnown);
        }
        let (missing_prev, missing_auth) = missing_events(pdu, &by_id, implied_create.as_ref());
        if (!missing_prev.is_empty() && explicit_state.is_none()) || !missing_auth.is_empty() {
            return Ok(Outcome::Missing {
                prev: missing_prev,
                auth: missing_auth,
            });
        }

        // Auth against its own auth events.
        let mut rejected = check_by_auth_events(&rules, pdu, &by_id, implied_create.as_ref())?;

        // The state before it: that after its prev_events, resolved if they differ, or the
        // one given when they are missing.
        let explicit_state = explicit_state.filter(|_| !missing_prev.is_empty());
        let state_before = self
            .state_after_prevs(&room, &rules, pdu, &by_id, explicit_state)
            .await?;

        if rejected.is_none() {
            let auth_types = append::auth_state_keys(
                &rules,
                &pdu.kind,
                &pdu.sender,
                pdu.state_key.as_deref(),
                &pdu.content,
            )
            .map_err(|e| Error::bad_json(format!("invalid event content: {e}")))?;
            let before = match state_before {
                Some(g) => self.state_entries(g, &auth_types).await?,
                None => HashMap::new(),
            };
            rejected = append::authorise_by_state(&rules, pdu, &before)
                .err()
                .map(|e| format!("not allowed by the state before it: {e}"));
            if rejected.is_none()
                && !historical
                && state_before != room.state_group
                && let Some(current) = room.state_group
            {
                let now = self.state_entries(current, &auth_types).await?;
                if let Err(e) = append::authorise_by_state(&rules, pdu, &now) {
                    tracing::info!(event_id = %ev.event_id, error = %e, "soft-failed against current state");
                    let verdict = Verdict {
                        state_before,
                        rejected: None,
                        soft_failed: true,
                        current: Current::Keep,
                    };
                    return self
                        .store_checked(lock, &room, ev, verdict, forward_for, false)
                        .await;
                }
            }
        }
        if let Some(reason) = rejected {
            tracing::info!(event_id = %ev.event_id, %reason, "rejected PDU");
            let verdict = Verdict {
                state_before,
                rejected: Some(reason),
                soft_failed: false,
                current: Current::Keep,
            };
            return self
                .store_checked(lock, &room, ev, verdict, forward_for, historical)
                .await;
        }

        let current = if historical {
            Current::Keep
        } else {
            self.current_after(&room, &rules, ev, state_before).await?
        };
        let verdict = Verdict {
            state_before,
            rejected: None,
            soft_failed: false,
            current,
        };
        self.store_checked(lock, &room, ev, verdict, forward_for, historical)
            .await
    }

    /// The state before an event from its prev_events: the state after them, resolved (and
    /// stored as a group) when they differ; `explicit` instead when given.
    async fn state_after_prevs(
        &self,
        room: &RoomRow,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        by_id: &HashMap<&str, &db::events::StoredEvent>,
        explicit: Option<i64>,
    ) -> Result<Option<i64>> {
        let db = self.db();
        let mut prev_groups: Vec<i64> = pdu
            .prev_events
            .iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .filter_map(|r| r.state_after.or(r.state_before))
            .collect();
        prev_groups.sort_unstable();
        prev_groups.dedup();
        Ok(match prev_groups.as_slice() {
            _ if explicit.is_some() => explicit,
            [] => None,
            [one] => Some(*one),
            several => {
                let maps = state_res::load_maps(db, several).await?;
                let resolved = state_res::resolve(db, rules, &maps, None).await?;
                Some(
                    self.store_map(room.room_nid, several[0], &maps[0], &resolved.map)
                        .await?,
                )
            }
        })
    }

    async fn store_checked(
        &self,
        lock: &super::lock::RoomLock,
        room: &RoomRow,
        ev: &Incoming,
        verdict: Verdict,
        forward_for: Option<&str>,
        historical: bool,
    ) -> Result<Outcome> {
        let Verdict {
            state_before,
            rejected,
            soft_failed,
            current,
        } = verdict;
        let outcome = match &rejected {
            Some(r) => Outcome::Rejected(r.clone()),
            None => Outcome::Stored { soft_failed },
        };
        let stored = persist(
            &self.store(),
            lock,
            Checked {
                rejected,
                soft_failed,
                historical,
                ..Checked::accepted(
                    &ev.event_id,
                    &ev.json,
                    &ev.pdu,
                    room,
                    state_before,
                    current,
                    match forward_for {
                        Some(origin) => FanOut::Forward { origin },
                        None => FanOut::None,
                    },
                )
            },
        )
        .await?;
        Ok(if stored {
            outcome
        } else {
            Outcome::AlreadyKnown
        })
    }

    /// How an accepted event changes the current state: it extends it when it follows every
    /// forward extremity; otherwise the old current state and the state after the event are
    /// resolved.
    async fn current_after(
        &self,
        room: &RoomRow,
        rules: &RoomVersionRules,
        ev: &Incoming,
        state_before: Option<i64>,
    ) -> Result<Current> {
        let db = self.db();
        let pdu = &ev.pdu;
        let extremities = db::events::forward_extremities(db, room.room_nid).await?;
        let prevs: HashSet<&str> = pdu.prev_events.iter().map(|e| e.as_str()).collect();
        let extends_all = extremities
            .iter()
            .all(|(_, id, _)| prevs.contains(id.as_str()));
        if state_before == room.state_group {
            return Ok(if pdu.is_state() || extends_all {
                Current::Extend { also: Vec::new() }
            } else {
                Current::Keep
            });
        }
        let current_map = match room.state_group {
            Some(g) => state_res::load_map(db, g).await?,
            None => KeyMap::new(),
        };
        let before_map = match state_before {
            Some(g) => state_res::load_map(db, g).await?,
            None => KeyMap::new(),
        };
        if extends_all {
            let diff: Vec<(i64, i64)> = before_map
                .iter()
                .filter(|(k, v)| current_map.get(k) != Some(v))
                .map(|(k, v)| (*k, *v))
                .collect();
            let also = self.state_changes(&diff, &HashMap::new()).await?;
            return Ok(Current::Extend { also });
        }
        // A fork: the new current state is the resolution of the old one with the state
        // after this event.
        let mut tx = db::begin(db).await?;
        let nids = db::events::intern_ids(
            &mut tx,
            &pdu.auth_events
                .iter()
                .map(|e| e.as_str())
                .chain([ev.event_id.as_str()])
                .collect::<Vec<_>>(),
        )
        .await?;
        let kind = pdu.kind.to_string();
        let own_key = match &pdu.state_key {
            Some(k) => db::state::intern_keys(&mut tx, &[(kind.as_str(), k.as_str())])
                .await?
                .get(&(kind.clone(), k.clone()))
                .copied(),
            None => None,
        };
        tx.commit().await?;
        let own_nid = *nids
            .get(ev.event_id.as_str())
            .ok_or_else(|| Error::internal("event ID not interned"))?;
        let auth_nids: Vec<i64> = pdu
            .auth_events
            .iter()
            .filter_map(|e| nids.get(e.as_str()).copied())
            .collect();
        let mut after_map = before_map;
        if let Some(k) = own_key {
            after_map.insert(k, own_nid);
        }
        let resolved = state_res::resolve(
            db,
            rules,
            &[current_map.clone(), after_map],
            Some(Pending {
                nid: own_nid,
                pdu,
                auth_nids: &auth_nids,
            }),
        )
        .await?;
        let diff: Vec<(i64, i64)> = resolved
            .map
            .iter()
            .filter(|(k, v)| current_map.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        let changes = self.state_changes(&diff, &resolved.events).await?;
        let removed: Vec<i64> = current_map
            .keys()
            .filter(|k| !resolved.map.contains_key(k))
            .copied()
            .collect();
        Ok(Current::Resolved { changes, removed })
    }

    /// Current-state changes with the memberships they set, reading member events not in
    /// `known` from the store.
    pub(super) async fn state_changes(
        &self,
        diff: &[(i64, i64)],
        known: &HashMap<i64, Pdu>,
    ) -> Result<Vec<StateChange>> {
        let unknown: Vec<i64> = diff
            .iter()
            .map(|d| d.1)
            .filter(|n| !known.contains_key(n))
            .collect();
        let mut loaded: HashMap<i64, Pdu> = HashMap::new();
        for row in db::events::by_nids(self.db(), &unknown).await? {
            loaded.insert(row.event_nid, parse_stored(&row)?);
        }
        Ok(diff
            .iter()
            .map(|(sk, ev)| {
                let pdu = known.get(ev).or_else(|| loaded.get(ev));
                StateChange {
                    state_key_nid: *sk,
                    event_nid: *ev,
                    member: pdu
                        .filter(|p| p.kind == TimelineEventType::RoomMember)
                        .and_then(|p| p.state_key.clone().map(|k| (k, membership_of(&p.content)))),
                }
            })
            .collect())
    }

    /// Store a state map as a group: a delta against `base` (whose map is `base_map`).
    async fn store_map(
        &self,
        room_nid: i64,
        base: i64,
        base_map: &KeyMap,
        map: &KeyMap,
    ) -> Result<i64> {
        let entries: Vec<(i64, i64)> = map
            .iter()
            .filter(|(k, v)| base_map.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        let drops_keys = base_map.keys().any(|k| !map.contains_key(k));
        if entries.is_empty() && !drops_keys {
            return Ok(base);
        }
        let mut tx = db::begin(self.db()).await?;
        let group = if drops_keys {
            // A delta cannot remove a key: the whole map as a snapshot.
            let all: Vec<(i64, i64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
            db::state::create_group(&mut tx, room_nid, None, &all).await?
        } else {
            new_state_group(&mut tx, room_nid, Some(base), &entries).await?
        };
        tx.commit().await?;
        Ok(group)
    }
}

/// The prev events an event cites that are not in the graph with a state (unknown, or only
/// outliers), and the auth events not stored at all.
fn missing_events(
    pdu: &Pdu,
    by_id: &HashMap<&str, &db::events::StoredEvent>,
    implied_create: Option<&OwnedEventId>,
) -> (Vec<OwnedEventId>, Vec<OwnedEventId>) {
    let missing_prev: Vec<OwnedEventId> = pdu
        .prev_events
        .iter()
        .filter(|id| {
            by_id
                .get(id.as_str())
                .is_none_or(|r| r.outlier || r.state_after.is_none() && r.state_before.is_none())
        })
        .cloned()
        .collect();
    let missing_auth: Vec<OwnedEventId> = pdu
        .auth_events
        .iter()
        .chain(implied_create)
        .filter(|id| !by_id.contains_key(id.as_str()))
        .cloned()
        .collect();
    (missing_prev, missing_auth)
}

/// Step one of the checks: the event against its own auth events (the implied create event
/// included). `Some` reason when it fails.
fn check_by_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    by_id: &HashMap<&str, &db::events::StoredEvent>,
    implied_create: Option<&OwnedEventId>,
) -> Result<Option<String>> {
    let mut auth_state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
    for id in pdu.auth_events.iter().chain(implied_create) {
        if let Some(row) = by_id.get(id.as_str()) {
            let p = parse_stored(row)?;
            if let Some(k) = &p.state_key {
                auth_state.insert((StateEventType::from(p.kind.to_string()), k.clone()), p);
            }
        }
    }
    Ok(append::authorise(rules, pdu, &auth_state)
        .err()
        .map(|e| format!("not allowed by its auth events: {e}")))
}

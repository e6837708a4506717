//! Events from other servers, after their signatures and hashes were checked (that is the
//! federation layer's part): auth against their own auth events, against the state before
//! them (resolving forks), soft-fail against the current state, then the shared store step.
//! Also the state a remote join brings (stored as outliers plus one snapshot) and memberships
//! known only from another server (invites to rooms we are not in).

use std::collections::{HashMap, HashSet};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomId, RoomVersionId};

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
        let missing_prev: Vec<OwnedEventId> = pdu
            .prev_events
            .iter()
            .filter(|id| {
                by_id.get(id.as_str()).is_none_or(|r| {
                    r.outlier || r.state_after.is_none() && r.state_before.is_none()
                })
            })
            .cloned()
            .collect();
        let missing_auth: Vec<OwnedEventId> = pdu
            .auth_events
            .iter()
            .chain(&implied_create)
            .filter(|id| !by_id.contains_key(id.as_str()))
            .cloned()
            .collect();
        if (!missing_prev.is_empty() && explicit_state.is_none()) || !missing_auth.is_empty() {
            return Ok(Outcome::Missing {
                prev: missing_prev,
                auth: missing_auth,
            });
        }

        // Auth against its own auth events.
        let mut auth_state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
        for id in pdu.auth_events.iter().chain(&implied_create) {
            if let Some(row) = by_id.get(id.as_str()) {
                let p = parse_stored(row)?;
                if let Some(k) = &p.state_key {
                    auth_state.insert((StateEventType::from(p.kind.to_string()), k.clone()), p);
                }
            }
        }
        let mut rejected = append::authorise(&rules, pdu, &auth_state)
            .err()
            .map(|e| format!("not allowed by its auth events: {e}"));

        // The state before it: that after its prev_events, resolved if they differ.
        let mut prev_groups: Vec<i64> = pdu
            .prev_events
            .iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .filter_map(|r| r.state_after.or(r.state_before))
            .collect();
        prev_groups.sort_unstable();
        prev_groups.dedup();
        let state_before = match prev_groups.as_slice() {
            _ if explicit_state.is_some() && !missing_prev.is_empty() => explicit_state,
            [] => None,
            [one] => Some(*one),
            several => {
                let maps = state_res::load_maps(db, several).await?;
                let resolved = state_res::resolve(db, &rules, &maps, None).await?;
                Some(
                    self.store_map(room.room_nid, several[0], &maps[0], &resolved.map)
                        .await?,
                )
            }
        };

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
                event_id: &ev.event_id,
                json: &ev.json,
                pdu: &ev.pdu,
                room,
                state_before,
                rejected,
                soft_failed,
                current,
                txn: None,
                fan_out: match forward_for {
                    Some(origin) => FanOut::Forward { origin },
                    None => FanOut::None,
                },
                historical,
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
        let mut tx = db.begin().await?;
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
    async fn state_changes(
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
        let mut tx = self.db().begin().await?;
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

    /// Store the room state another server gave us when we joined through it, then our join
    /// event on top of it. Every state and auth-chain event is checked against its own auth
    /// events (auth events first); those that fail are kept as rejected outliers and left out
    /// of the state. The join event must pass against the resulting state.
    pub async fn store_joined_state(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        join: &Incoming,
        state: &[Incoming],
        auth_chain: &[Incoming],
    ) -> Result<()> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        let lock = self.locks.lock(room_id).await;
        let db = self.db();

        let mut all: HashMap<&EventId, &Incoming> = HashMap::new();
        for e in auth_chain.iter().chain(state) {
            all.insert(&e.event_id, e);
        }
        let stored = self.stored_auth_events(&rules, room_id, &all).await?;
        let rejected = check_auth_graph(&rules, room_id, &all, &stored);

        let mut tx = db.begin().await?;
        let room_nid = db::rooms::ensure(&mut tx, room_id.as_str(), version.as_str()).await?;
        let mut ids: Vec<&str> = all.keys().map(|e| e.as_str()).collect();
        for e in all.values() {
            ids.extend(e.pdu.auth_events.iter().map(|a| a.as_str()));
        }
        let nids = db::events::intern_ids(&mut tx, &ids).await?;
        let nid = |id: &str| {
            nids.get(id)
                .copied()
                .ok_or_else(|| Error::internal("event ID not interned"))
        };
        let kinds: HashMap<&EventId, String> = all
            .iter()
            .map(|(id, e)| (*id, e.pdu.kind.to_string()))
            .collect();
        let key_pairs: Vec<(&str, &str)> = all
            .iter()
            .filter_map(|(id, e)| e.pdu.state_key.as_deref().map(|k| (kinds[id].as_str(), k)))
            .collect();
        let key_nids = db::state::intern_keys(&mut tx, &key_pairs).await?;
        let key_of = |e: &Incoming| -> Option<i64> {
            let k = e.pdu.state_key.as_ref()?;
            key_nids.get(&(e.pdu.kind.to_string(), k.clone())).copied()
        };
        let mut rows = Vec::with_capacity(all.len());
        let mut edges = Vec::new();
        for (id, e) in &all {
            let n = nid(id.as_str())?;
            for a in &e.pdu.auth_events {
                edges.push((n, nid(a.as_str())?));
            }
            rows.push(db::events::NewEvent {
                event_nid: n,
                room_nid,
                event_type: kinds[id].as_str(),
                state_key_nid: key_of(e),
                sender: e.pdu.sender.as_str(),
                origin_server_ts: i64::try_from(u64::from(e.pdu.origin_server_ts.0))
                    .unwrap_or(i64::MAX),
                depth: e.pdu.depth.max(1),
                json: &e.json,
                outlier: true,
                rejected_reason: rejected.get(*id).map(String::as_str),
                soft_failed: false,
                state_before: None,
                state_after: None,
            });
        }
        db::events::insert_outliers(&mut tx, &rows).await?;
        db::events::insert_auth_edges_many(&mut tx, &edges).await?;
        let mut snapshot: KeyMap = KeyMap::new();
        for e in state {
            if rejected.contains_key(&*e.event_id) {
                continue;
            }
            if let Some(k) = key_of(e) {
                snapshot.insert(k, nid(e.event_id.as_str())?);
            }
        }
        let entries: Vec<(i64, i64)> = snapshot.iter().map(|(k, v)| (*k, *v)).collect();
        let group = db::state::create_group(&mut tx, room_nid, None, &entries).await?;
        tx.commit().await?;

        // The join event against that state.
        let room = self.room(room_id).await?;
        let auth_types = append::auth_state_keys(
            &rules,
            &join.pdu.kind,
            &join.pdu.sender,
            join.pdu.state_key.as_deref(),
            &join.pdu.content,
        )
        .map_err(|e| Error::bad_json(format!("invalid join event: {e}")))?;
        let before = self.state_entries(group, &auth_types).await?;
        append::authorise(&rules, &join.pdu, &before)
            .map_err(|e| Error::Upstream(format!("the join event fails the room's state: {e}")))?;
        let old = match room.state_group {
            Some(g) => state_res::load_map(db, g).await?,
            None => KeyMap::new(),
        };
        let diff: Vec<(i64, i64)> = snapshot
            .iter()
            .filter(|(k, v)| old.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        let known: HashMap<i64, Pdu> = state
            .iter()
            .filter_map(|e| Some((nids.get(e.event_id.as_str()).copied()?, e.pdu.clone())))
            .collect();
        let also = self.state_changes(&diff, &known).await?;
        persist(
            &self.store(),
            &lock,
            Checked {
                event_id: &join.event_id,
                json: &join.json,
                pdu: &join.pdu,
                room: &room,
                state_before: Some(group),
                rejected: None,
                soft_failed: false,
                current: Current::Extend { also },
                txn: None,
                fan_out: FanOut::None,
                historical: false,
            },
        )
        .await?;
        Ok(())
    }

    /// The auth events of `all` (with the room's implied create event) that are not in it
    /// but already stored.
    async fn stored_auth_events(
        &self,
        rules: &RoomVersionRules,
        room_id: &RoomId,
        all: &HashMap<&EventId, &Incoming>,
    ) -> Result<HashMap<OwnedEventId, Pdu>> {
        let implied = implied_create_id(rules, room_id);
        let outside: Vec<&str> = all
            .values()
            .flat_map(|e| e.pdu.auth_events.iter())
            .chain(&implied)
            .filter(|a| !all.contains_key(&***a))
            .map(|a| a.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut out = HashMap::new();
        for row in db::events::by_ids(self.db(), &outside).await? {
            let p = parse_stored(&row)?;
            out.insert(p.event_id.clone(), p);
        }
        Ok(out)
    }

    /// Store events known through a state or an auth chain as outliers, each checked
    /// against its auth events first (those that fail are kept as rejected).
    pub async fn store_outliers(&self, room_id: &RoomId, events: &[Incoming]) -> Result<()> {
        let room = self.room(room_id).await?;
        let rules = room.rules()?;
        let mut all: HashMap<&EventId, &Incoming> = HashMap::new();
        for e in events {
            all.insert(&e.event_id, e);
        }
        let stored = self.stored_auth_events(&rules, room_id, &all).await?;
        let rejected = check_auth_graph(&rules, room_id, &all, &stored);
        let mut tx = self.db().begin().await?;
        let mut ids: Vec<&str> = all.keys().map(|e| e.as_str()).collect();
        for e in all.values() {
            ids.extend(e.pdu.auth_events.iter().map(|a| a.as_str()));
        }
        let nids = db::events::intern_ids(&mut tx, &ids).await?;
        let kinds: HashMap<&EventId, String> = all
            .iter()
            .map(|(id, e)| (*id, e.pdu.kind.to_string()))
            .collect();
        let key_pairs: Vec<(&str, &str)> = all
            .iter()
            .filter_map(|(id, e)| e.pdu.state_key.as_deref().map(|k| (kinds[id].as_str(), k)))
            .collect();
        let key_nids = db::state::intern_keys(&mut tx, &key_pairs).await?;
        let mut rows = Vec::with_capacity(all.len());
        let mut edges = Vec::new();
        for (id, e) in &all {
            let n = *nids
                .get(id.as_str())
                .ok_or_else(|| Error::internal("event ID not interned"))?;
            for a in &e.pdu.auth_events {
                if let Some(an) = nids.get(a.as_str()) {
                    edges.push((n, *an));
                }
            }
            rows.push(db::events::NewEvent {
                event_nid: n,
                room_nid: room.room_nid,
                event_type: kinds[id].as_str(),
                state_key_nid: e
                    .pdu
                    .state_key
                    .as_ref()
                    .and_then(|k| key_nids.get(&(kinds[id].clone(), k.clone())).copied()),
                sender: e.pdu.sender.as_str(),
                origin_server_ts: i64::try_from(u64::from(e.pdu.origin_server_ts.0))
                    .unwrap_or(i64::MAX),
                depth: e.pdu.depth.max(1),
                json: &e.json,
                outlier: true,
                rejected_reason: rejected.get(*id).map(String::as_str),
                soft_failed: false,
                state_before: None,
                state_after: None,
            });
        }
        db::events::insert_outliers(&mut tx, &rows).await?;
        db::events::insert_auth_edges_many(&mut tx, &edges).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A state made of stored events (by ID), as a new snapshot group. Unknown, rejected and
    /// non-state events are left out.
    pub async fn snapshot_of(&self, room_id: &RoomId, ids: &[OwnedEventId]) -> Result<i64> {
        let room = self.room(room_id).await?;
        let refs: Vec<&str> = ids.iter().map(|e| e.as_str()).collect();
        let entries = db::events::state_entries_of(self.db(), room.room_nid, &refs).await?;
        let mut tx = self.db().begin().await?;
        let group = db::state::create_group(&mut tx, room.room_nid, None, &entries).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// Create the room row unless it exists (a room we are about to fill from another server).
    pub async fn ensure_room(&self, room_id: &RoomId, version: &RoomVersionId) -> Result<()> {
        let mut tx = self.db().begin().await?;
        db::rooms::ensure(&mut tx, room_id.as_str(), version.as_str()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Which of `ids` are stored (in any form).
    pub async fn known_events(&self, ids: &[OwnedEventId]) -> Result<HashSet<OwnedEventId>> {
        let refs: Vec<&str> = ids.iter().map(|e| e.as_str()).collect();
        Ok(db::graph::stored_ids(self.db(), &refs)
            .await?
            .into_iter()
            .filter_map(|id| OwnedEventId::try_from(id).ok())
            .collect::<HashSet<_>>())
    }

    /// Where the room's known history stops: events referenced but not stored.
    pub async fn backward_extremities(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>> {
        let room = self.room(room_id).await?;
        Ok(db::events::backward_extremity_ids(self.db(), room.room_nid)
            .await?
            .into_iter()
            .filter_map(|id| OwnedEventId::try_from(id).ok())
            .collect())
    }

    /// A membership event about one of our users in a room we are not in (an invite from
    /// another server, or our rejection of one): stored outside the graph, with a stream
    /// position so /sync shows it, and the stripped state to show with an invite.
    pub async fn store_out_of_band_membership(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        ev: &Incoming,
        invite_state: Option<&str>,
    ) -> Result<()> {
        let target = ev
            .pdu
            .state_key
            .as_deref()
            .ok_or_else(|| Error::bad_json("membership event without state_key"))?;
        let membership = membership_of(&ev.pdu.content);
        let _lock = self.locks.lock(room_id).await;
        let in_flight = super::persist::live_positions(self.db(), &self.stream, 1)
            .await?
            .pop()
            .ok_or_else(|| Error::internal("no stream position"))?;
        let position = in_flight.position();
        let mut tx = self.db().begin().await?;
        let room_nid = db::rooms::ensure(&mut tx, room_id.as_str(), version.as_str()).await?;
        let nids = db::events::intern_ids(&mut tx, &[ev.event_id.as_str()]).await?;
        let event_nid = *nids
            .get(ev.event_id.as_str())
            .ok_or_else(|| Error::internal("event ID not interned"))?;
        let kind = ev.pdu.kind.to_string();
        let sk = db::state::intern_keys(&mut tx, &[(kind.as_str(), target)]).await?;
        db::events::insert(
            &mut tx,
            &db::events::NewEvent {
                event_nid,
                room_nid,
                event_type: &kind,
                state_key_nid: sk.get(&(kind.clone(), target.to_owned())).copied(),
                sender: ev.pdu.sender.as_str(),
                origin_server_ts: i64::try_from(u64::from(ev.pdu.origin_server_ts.0))
                    .unwrap_or(i64::MAX),
                depth: ev.pdu.depth.max(1),
                json: &ev.json,
                outlier: true,
                rejected_reason: None,
                soft_failed: false,
                state_before: None,
                state_after: None,
            },
            Some(position),
        )
        .await?;
        db::rooms::set_out_of_band_membership(
            &mut tx,
            room_nid,
            target,
            &membership,
            event_nid,
            invite_state,
        )
        .await?;
        tx.commit().await?;
        in_flight.committed(room_nid, Some(target.to_owned()));
        Ok(())
    }
}

/// Check every event of a state/auth-chain set against its auth events, auth events first.
/// Returns the rejected ones with the reason; an event whose auth event is rejected or absent
/// is rejected too.
fn check_auth_graph<'a>(
    rules: &RoomVersionRules,
    room_id: &RoomId,
    all: &HashMap<&'a EventId, &'a Incoming>,
    stored: &HashMap<OwnedEventId, Pdu>,
) -> HashMap<&'a EventId, String> {
    // Since room version 12 every event but the create event is authorised by the create
    // event its room ID names, without listing it.
    let implied = implied_create_id(rules, room_id);
    let auth_of = |e: &'a Incoming| {
        let implied = implied.as_ref().filter(|c| **c != e.event_id);
        e.pdu.auth_events.iter().chain(implied)
    };
    // Order: depth-first over auth edges so that auth events come before the events citing
    // them; iterative to stay safe on deep chains.
    let mut order: Vec<&EventId> = Vec::with_capacity(all.len());
    let mut seen: HashSet<&EventId> = HashSet::with_capacity(all.len());
    let mut keys: Vec<&&EventId> = all.keys().collect();
    keys.sort();
    for &start in keys {
        if seen.contains(start) {
            continue;
        }
        let mut stack: Vec<(&EventId, bool)> = vec![(start, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                order.push(id);
                continue;
            }
            if !seen.insert(id) {
                continue;
            }
            stack.push((id, true));
            if let Some(e) = all.get(id) {
                for a in auth_of(e) {
                    if let Some((k, _)) = all.get_key_value(&**a)
                        && !seen.contains(*k)
                    {
                        stack.push((k, false));
                    }
                }
            }
        }
    }
    let mut rejected: HashMap<&EventId, String> = HashMap::new();
    for id in order {
        let Some(e) = all.get(id) else { continue };
        let mut auth_state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
        let mut problem = None;
        for a in auth_of(e) {
            match all.get(&**a) {
                Some(ae) if rejected.contains_key(&*ae.event_id) => {
                    problem = Some(format!("auth event {a} was rejected"));
                }
                Some(ae) => {
                    if let Some(k) = &ae.pdu.state_key {
                        auth_state.insert(
                            (StateEventType::from(ae.pdu.kind.to_string()), k.clone()),
                            ae.pdu.clone(),
                        );
                    }
                }
                None => match stored.get(&**a) {
                    Some(p) if p.rejected => {
                        problem = Some(format!("auth event {a} was rejected"));
                    }
                    Some(p) => {
                        if let Some(k) = &p.state_key {
                            auth_state.insert(
                                (StateEventType::from(p.kind.to_string()), k.clone()),
                                p.clone(),
                            );
                        }
                    }
                    None => problem = Some(format!("auth event {a} is missing")),
                },
            }
        }
        let problem = problem.or_else(|| append::authorise(rules, &e.pdu, &auth_state).err());
        if let Some(p) = problem {
            tracing::info!(event_id = %id, reason = %p, "rejected event from a join's state");
            rejected.insert(id, p);
        }
    }
    rejected
}

//! What other servers tell us outside a room's timeline, stored as outliers: the state and
//! auth chain a remote join brings (checked against their own auth events, then one
//! snapshot), events fetched for a state or an auth chain, and memberships known only from
//! another server (invites to rooms we are not in, our rejections of them). Also the small
//! questions the federation engines ask about what is stored.

use std::collections::{HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomId, RoomVersionId};

use super::Rooms;
use super::append;
use super::pdu::{Pdu, implied_create_id, membership_of};
use super::persist::persist;
use super::remote::{Incoming, parse_stored};
use super::state_res::{self, KeyMap};
use super::write::{Checked, Current, FanOut};
use crate::db;
use crate::error::{Error, Result};

impl Rooms {
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
        let rules = db::rooms::rules_of(version)?;
        let lock = self.locks.lock(room_id).await;
        let db = self.db();

        let mut all: HashMap<&EventId, &Incoming> = HashMap::new();
        for e in auth_chain.iter().chain(state) {
            all.insert(&e.event_id, e);
        }
        let stored = self.stored_auth_events(&rules, room_id, &all).await?;
        let rejected = check_auth_graph(&rules, room_id, &all, &stored);

        let mut tx = db::begin(db).await?;
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
            rows.push(e.outlier_row(
                room_nid,
                n,
                kinds[id].as_str(),
                key_of(e),
                rejected.get(*id).map(String::as_str),
            ));
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
            Checked::accepted(
                &join.event_id,
                &join.json,
                &join.pdu,
                &room,
                Some(group),
                Current::Extend { also },
                FanOut::None,
            ),
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
        let mut tx = db::begin(self.db()).await?;
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
            rows.push(
                e.outlier_row(
                    room.room_nid,
                    n,
                    kinds[id].as_str(),
                    e.pdu
                        .state_key
                        .as_ref()
                        .and_then(|k| key_nids.get(&(kinds[id].clone(), k.clone())).copied()),
                    rejected.get(*id).map(String::as_str),
                ),
            );
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
        let mut tx = db::begin(self.db()).await?;
        let group = db::state::create_group(&mut tx, room.room_nid, None, &entries).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// Create the room row unless it exists (a room we are about to fill from another server).
    pub async fn ensure_room(&self, room_id: &RoomId, version: &RoomVersionId) -> Result<()> {
        let mut tx = db::begin(self.db()).await?;
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
        let mut tx = db::begin(self.db()).await?;
        let room_nid = db::rooms::ensure(&mut tx, room_id.as_str(), version.as_str()).await?;
        let nids = db::events::intern_ids(&mut tx, &[ev.event_id.as_str()]).await?;
        let event_nid = *nids
            .get(ev.event_id.as_str())
            .ok_or_else(|| Error::internal("event ID not interned"))?;
        let kind = ev.pdu.kind.to_string();
        let sk = db::state::intern_keys(&mut tx, &[(kind.as_str(), target)]).await?;
        db::events::insert(
            &mut tx,
            &ev.outlier_row(
                room_nid,
                event_nid,
                &kind,
                sk.get(&(kind.clone(), target.to_owned())).copied(),
                None,
            ),
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

impl Incoming {
    /// The event's row as an outlier of `room_nid`: known, checked against its auth events
    /// (`rejected` says why it failed), not placed in the timeline.
    fn outlier_row<'a>(
        &'a self,
        room_nid: i64,
        event_nid: i64,
        kind: &'a str,
        state_key_nid: Option<i64>,
        rejected: Option<&'a str>,
    ) -> db::events::NewEvent<'a> {
        db::events::NewEvent {
            outlier: true,
            rejected_reason: rejected,
            ..super::write::event_row(
                &self.pdu,
                &self.json,
                room_nid,
                event_nid,
                kind,
                state_key_nid,
            )
        }
    }
}

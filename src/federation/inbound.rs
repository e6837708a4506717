//! Inbound `/send` transactions: deduplicated by (origin, transaction ID); each PDU goes
//! through the pipeline (room known, server ACL, format, signatures and hash, missing
//! prev_events fetched from the origin within a bound — get_missing_events, then the state
//! before the event by /state_ids and /event — then the room's auth checks) and
//! gets its own result; one bad PDU never fails the others.

use std::collections::{BTreeMap, HashMap};

use ruma::api::federation::event::get_missing_events;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt};
use serde_json::value::RawValue;

use super::Federation;
use super::pdu::verify_pdus;
use crate::account::now_ms;
use crate::db;
use crate::error::Result;
use crate::room::Rooms;
use crate::room::remote::{Incoming, Outcome};

/// Per-PDU results, as the /send answer carries them.
pub type PduResults = BTreeMap<OwnedEventId, std::result::Result<(), String>>;

#[derive(serde::Deserialize)]
struct RoomOf {
    room_id: OwnedRoomId,
}

impl Federation {
    /// The answer already given to this transaction, if it was processed before.
    pub async fn seen_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
    ) -> Result<Option<PduResults>> {
        let Some(json) = db::federation::inbound_txn(&self.db, origin.as_str(), txn_id).await?
        else {
            return Ok(None);
        };
        Ok(
            serde_json::from_str::<HashMap<OwnedEventId, Option<String>>>(&json)
                .ok()
                .map(|m| {
                    m.into_iter()
                        .map(|(id, err)| (id, err.map_or(Ok(()), Err)))
                        .collect()
                }),
        )
    }

    pub async fn record_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        results: &PduResults,
    ) -> Result<()> {
        let plain: HashMap<&OwnedEventId, Option<&String>> = results
            .iter()
            .map(|(id, r)| (id, r.as_ref().err()))
            .collect();
        let json = serde_json::to_string(&plain)
            .map_err(|e| crate::error::Error::internal(e.to_string()))?;
        db::federation::record_inbound_txn(&self.db, origin.as_str(), txn_id, &json, now_ms())
            .await?;
        Ok(())
    }

    /// Process a transaction's PDUs, room by room, in the order sent.
    #[tracing::instrument(name = "federation_inbound_pdus", skip_all, fields(%origin, count = pdus.len()))]
    pub async fn receive_pdus(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        pdus: &[Box<RawValue>],
    ) -> PduResults {
        let mut results = PduResults::new();
        for (room_id, raws) in by_room(origin, pdus) {
            self.receive_room_pdus(rooms, origin, &room_id, &raws, &mut results)
                .await;
        }
        results
    }

    async fn receive_room_pdus(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        raws: &[&RawValue],
        results: &mut PduResults,
    ) {
        let room = match rooms.room(room_id).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!(%origin, %room_id, "PDUs for a room we are not in dropped");
                return;
            }
        };
        let rules = match room.rules() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%room_id, error = %e, "room without usable rules");
                return;
            }
        };
        let allowed = rooms.server_allowed(&room, origin).await.unwrap_or(false);
        let mut verified = verify_pdus(&self.remote_keys, &rules, raws).await;
        // Parents before children: depth orders a well-formed batch.
        verified.sort_by_key(|(_, r)| r.as_ref().map_or(i64::MAX, |e| e.pdu.depth));
        let mut accepted: Vec<Incoming> = Vec::with_capacity(verified.len());
        for (id, checked) in verified {
            let refused = match checked {
                Err(e) => e,
                Ok(_) if !allowed => "server is denied by the room's ACL".to_owned(),
                Ok(ev) => {
                    accepted.push(ev);
                    continue;
                }
            };
            tracing::info!(%origin, event_id = ?id, error = %refused, "PDU not accepted");
            if let Some(id) = id {
                results.insert(id, Err(refused));
            }
        }
        // Together first; what lacks events it refers to is then taken one by one.
        let outcomes = rooms.receive_pdus(room_id, &accepted, None).await;
        for (ev, outcome) in accepted.iter().zip(outcomes) {
            let result = match outcome {
                Ok(Outcome::Missing { .. }) => self.accept(rooms, origin, room_id, ev).await,
                Ok(o) => verdict(o),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                tracing::info!(%origin, event_id = %ev.event_id, error = %e, "PDU not accepted");
            }
            results.insert(ev.event_id.clone(), result);
        }
    }

    /// Run one verified PDU through the room; fill a gap before it first if its
    /// prev_events are unknown.
    async fn accept(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        ev: &Incoming,
    ) -> std::result::Result<(), String> {
        let mut outcome = rooms
            .receive_pdu(room_id, ev, None)
            .await
            .map_err(|e| e.to_string())?;
        if let Outcome::Missing { prev, .. } = &outcome
            && !prev.is_empty()
        {
            self.fill_gap(rooms, origin, room_id, ev).await;
            outcome = rooms
                .receive_pdu(room_id, ev, None)
                .await
                .map_err(|e| e.to_string())?;
            if matches!(outcome, Outcome::Missing { .. }) {
                // The gap is wider than get_missing_events may fill: take the state before
                // the event from its origin and accept it on that.
                let group = self
                    .fetch_state_before(rooms, origin, room_id, &ev.event_id)
                    .await
                    .map_err(|e| e.to_string())?;
                outcome = rooms
                    .receive_pdu_with_state(room_id, ev, group)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        verdict(outcome)
    }

    /// Ask the origin for the events between our forward extremities and `ev`
    /// (`/get_missing_events`, bounded by configuration) and store them oldest first. What
    /// cannot be placed is left; the caller reports the PDU as not accepted.
    async fn fill_gap(&self, rooms: &Rooms, origin: &ServerName, room_id: &RoomId, ev: &Incoming) {
        let Ok(room) = rooms.room(room_id).await else {
            return;
        };
        let Ok(extremities) = db::events::forward_extremities(&self.db, room.room_nid).await else {
            return;
        };
        let earliest: Vec<OwnedEventId> = extremities
            .iter()
            .filter_map(|(_, id, _)| OwnedEventId::try_from(id.as_str()).ok())
            .collect();
        let min_depth = extremities.iter().map(|e| e.2).min().unwrap_or(0).max(0);
        let mut request = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            earliest,
            vec![ev.event_id.clone()],
        );
        request.limit = UInt::try_from(self.max_missing_events).unwrap_or(UInt::MAX);
        request.min_depth = UInt::try_from(min_depth.unsigned_abs()).unwrap_or_default();
        let response = match self.client.send(origin, request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%origin, %room_id, error = %e, "get_missing_events failed");
                return;
            }
        };
        let Ok(rules) = room.rules() else { return };
        let raws: Vec<&RawValue> = response
            .events
            .iter()
            .take(usize::try_from(self.max_missing_events).unwrap_or(usize::MAX))
            .map(|r| &**r)
            .collect();
        let mut fetched: Vec<Incoming> = verify_pdus(&self.remote_keys, &rules, &raws)
            .await
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .filter(|e| e.pdu.belongs_to(room_id))
            .collect();
        fetched.sort_by_key(|e| e.pdu.depth);
        for e in &fetched {
            match rooms.receive_pdu(room_id, e, None).await {
                Ok(Outcome::Missing { .. }) => {
                    tracing::info!(event_id = %e.event_id, "gap not closed by get_missing_events");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::info!(event_id = %e.event_id, error = %err, "missing event not stored")
                }
            }
        }
    }
}

/// A transaction's PDUs grouped by the room they name, rooms and PDUs in the order sent; a
/// PDU naming no valid room is dropped.
pub fn by_room<'a>(
    origin: &ServerName,
    pdus: &'a [Box<RawValue>],
) -> Vec<(OwnedRoomId, Vec<&'a RawValue>)> {
    let mut by_room: Vec<(OwnedRoomId, Vec<&RawValue>)> = Vec::new();
    for raw in pdus {
        match serde_json::from_str::<RoomOf>(raw.get()) {
            Ok(r) => match by_room.iter_mut().find(|(id, _)| *id == r.room_id) {
                Some((_, list)) => list.push(raw),
                None => by_room.push((r.room_id, vec![raw])),
            },
            Err(e) => tracing::info!(%origin, error = %e, "PDU without a room ID dropped"),
        }
    }
    by_room
}

/// The /send result for an outcome.
fn verdict(outcome: Outcome) -> std::result::Result<(), String> {
    match outcome {
        Outcome::Stored { .. } | Outcome::AlreadyKnown => Ok(()),
        Outcome::Rejected(reason) => Err(reason),
        Outcome::Missing { prev, auth } => Err(format!(
            "unknown events referenced: {} prev, {} auth",
            prev.len(),
            auth.len()
        )),
    }
}

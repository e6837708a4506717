//! Step 6 of the append path: storing checked events. Events that arrive together for one
//! room are stored in one transaction with a fixed number of statements, whatever their
//! number (the commit, not the work, is what costs: one fsync for the whole batch).

use std::collections::{HashMap, HashSet};

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;

use super::lock::RoomLock;
use super::pdu::Relation;
use super::push::{Notified, PushContext};
use super::stream::{InFlight, StreamPositions};
use super::write::{Checked, Current, FanOut, Store, event_row};
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};

mod state_groups;

pub(crate) use state_groups::new_state_group;
use state_groups::{CurrentState, apply_state_changes, new_state_group_on};

impl Checked<'_> {
    /// The event's row, numbered `event_nid`, between `state_before` and `state_after`.
    fn row<'s>(
        &'s self,
        room_nid: i64,
        event_nid: i64,
        kind: &'s str,
        state_key_nid: Option<i64>,
        (state_before, state_after): (Option<i64>, Option<i64>),
    ) -> db::events::NewEvent<'s> {
        db::events::NewEvent {
            rejected_reason: self.rejected.as_deref(),
            soft_failed: self.soft_failed,
            state_before,
            state_after,
            ..event_row(
                self.pdu,
                self.json,
                room_nid,
                event_nid,
                kind,
                state_key_nid,
            )
        }
    }
}

/// Store one checked event; false if it was already in the timeline (nothing written).
pub async fn persist(store: &Store<'_>, lock: &RoomLock, ev: Checked<'_>) -> Result<bool> {
    Ok(persist_batch(store, lock, vec![ev])
        .await?
        .first()
        .copied()
        .unwrap_or(false))
}

/// Store checked events of one room, in order, in one transaction: event rows, edges, state
/// groups, extremities, current state and memberships, redaction marks, client transaction
/// IDs, the outbound queue, relations. Later events may build on earlier ones (cite them as prev events,
/// or stand on the state group an earlier one makes). Returns, per event, whether it was
/// written (false: it was already in the timeline).
pub async fn persist_batch(
    store: &Store<'_>,
    lock: &RoomLock,
    evs: Vec<Checked<'_>>,
) -> Result<Vec<bool>> {
    persist_batch_expecting(store, lock, evs, None).await
}

/// [`persist_batch`] for a batch built on a remembered tip (see `tips.rs`): nothing is
/// written unless `expect` holds (the error then satisfies `db::append::is_stale_write`).
pub async fn persist_batch_expecting(
    store: &Store<'_>,
    lock: &RoomLock,
    evs: Vec<Checked<'_>>,
    expect: Option<db::append::Expect>,
) -> Result<Vec<bool>> {
    let Some(first) = evs.first() else {
        return Ok(Vec::new());
    };
    let room: &RoomRow = first.room;
    debug_assert_eq!(lock.room_id().as_str(), room.room_id);
    debug_assert!(evs.iter().all(|e| e.room.room_nid == room.room_nid));
    // Whatever this writes, the remembered tip is no longer it (a send remembers the new
    // one once stored).
    store.tips.forget(lock.room_id());
    if is_plain(&evs) {
        return persist_plain(store, room, evs, expect).await;
    }
    persist_in_transaction(store, room, evs, expect, false).await
}

/// Store a new room's first events, each standing on the state the one before it makes
/// (none of it stored yet), in one transaction. The first stands on its own `state_before`;
/// the others' are ignored. Push rules are evaluated on the first one's state: at creation
/// nobody but the creator, who sends them all, is joined.
pub async fn persist_chain(
    store: &Store<'_>,
    lock: &RoomLock,
    evs: Vec<Checked<'_>>,
) -> Result<Vec<bool>> {
    let Some(first) = evs.first() else {
        return Ok(Vec::new());
    };
    debug_assert_eq!(lock.room_id().as_str(), first.room.room_id);
    store.tips.forget(lock.room_id());
    let room = first.room;
    persist_in_transaction(store, room, evs, None, true).await
}

/// [`persist_batch`] for anything but a plain batch: one transaction. `chained`: see
/// [`persist_chain`].
///
/// The steps, in the order their statements run: take live positions and decide redaction
/// rights (before the transaction); open it and number the events while push rules are
/// evaluated elsewhere; intern state keys; place each row on its state group
/// ([`place_rows`]); insert the rows; link each written row and move the current state
/// ([`link_event`], [`CurrentState::apply`]); apply redactions; write current state and the
/// derived rows ([`db::append::link_rows`]); commit.
async fn persist_in_transaction(
    store: &Store<'_>,
    room: &RoomRow,
    evs: Vec<Checked<'_>>,
    expect: Option<db::append::Expect>,
    chained: bool,
) -> Result<Vec<bool>> {
    let Store {
        db, keys, stream, ..
    } = *store;
    let accepted: Vec<bool> = evs
        .iter()
        .map(|e| e.rejected.is_none() && !e.soft_failed)
        .collect();

    // Live positions come from the stream's block (a round trip only to refill it).
    let live = evs.iter().filter(|e| !e.historical).count();
    let live_guards = live_positions(db, stream, live).await?.into_iter();
    let redactions = redaction_rights(store, room, &evs, &accepted).await?;
    let all_ids = ids_to_number(&evs, &redactions);
    // Push rules are evaluated on another connection while the transaction opens and
    // numbers the events: the two round trips overlap.
    let opening = async {
        let mut tx = db::begin(store.db).await?;
        let numbers = db::append::number(&mut tx, &all_ids, evs.len() - live).await?;
        Ok::<_, Error>((tx, numbers))
    };
    let (notified, (mut tx, (nids, backfill))) =
        tokio::try_join!(notifications(store, room, &evs, &accepted), opening)?;
    let kinds: Vec<String> = evs.iter().map(|e| e.pdu.kind.to_string()).collect();
    let key_pairs: Vec<(&str, &str)> = evs
        .iter()
        .zip(&kinds)
        .filter_map(|(e, k)| e.pdu.state_key.as_deref().map(|sk| (k.as_str(), sk)))
        .collect();
    let key_nids = match key_pairs.is_empty() {
        true => HashMap::new(),
        false => db::state::intern_keys(&mut tx, &key_pairs).await?,
    };

    let order = Order {
        nids: &nids,
        key_nids: &key_nids,
        chained,
    };
    let placed = place_rows(
        &mut tx,
        room,
        &evs,
        &kinds,
        order,
        backfill.into_iter(),
        live_guards,
    )
    .await?;
    let inserted = db::events::insert_many(&mut tx, &placed.rows, &placed.row_positions).await?;
    let stored: Vec<bool> = placed
        .event_nids
        .iter()
        .zip(&placed.duplicate)
        .map(|(n, dup)| !dup && inserted.contains(n))
        .collect();
    if inserted.is_empty() {
        // Nothing new: the transaction rolls back on drop and the positions are abandoned.
        return Ok(stored);
    }

    // What hangs off the new rows, and the current state (each accepted live event in
    // turn).
    let relations: Vec<Option<Relation>> = evs.iter().map(|e| e.pdu.relation()).collect();
    let mut links = db::append::Links::default();
    let mut forward_replaced = HashSet::new();
    let mut current = CurrentState {
        group: room.state_group,
        changes: Vec::new(),
        removed_keys: Vec::new(),
    };
    for (i, ev) in evs.iter().enumerate() {
        if !stored[i] {
            continue;
        }
        let event_nid = placed.event_nids[i];
        let derived = Derived {
            notified: notified[i].as_ref().zip(placed.positions[i]),
            relation: relations[i].as_ref().filter(|_| accepted[i]),
            accepted: accepted[i],
        };
        link_event(
            &mut links,
            &mut forward_replaced,
            ev,
            event_nid,
            &nids,
            derived,
        )?;
        if !accepted[i] || ev.historical {
            continue;
        }
        let own = (placed.state_key_nids[i], placed.states_after[i]);
        current
            .apply(&mut tx, room.room_nid, ev, event_nid, own)
            .await?;
    }
    // Redactions decided now: those of this batch, and earlier ones whose target just came.
    let mut new_redactions = Vec::new();
    for (i, r) in redactions.iter().enumerate() {
        if let (Some(r), true) = (r, stored[i]) {
            new_redactions.push(db::redactions::NewRedaction {
                redaction_nid: placed.event_nids[i],
                target_nid: nid_of(&nids, r.target.as_str())?,
                room_nid: room.room_nid,
                by_power: r.by_power,
                sender_server: evs[i].pdu.sender.server_name().as_str(),
            });
        }
    }
    db::redactions::apply(&mut tx, &new_redactions, &links.written).await?;
    links.forward_new.retain(|n| !forward_replaced.contains(n));
    links.forward_replaced = forward_replaced.into_iter().collect();
    let CurrentState {
        group: current_group,
        changes,
        removed_keys,
    } = current;
    // Keys set again later in the batch come back with the changes.
    if !removed_keys.is_empty() {
        db::state::remove_current(&mut tx, room.room_nid, &removed_keys).await?;
    }
    apply_state_changes(&mut tx, room, changes, current_group).await?;
    // The state group this transaction just set is the one to find.
    let expect = expect.map(|x| db::append::Expect {
        state_group: current_group,
        ..x
    });
    let rows = db::append::LinkRows::new(room.room_nid, &links, expect);
    let queued = db::append::link_rows(&mut *tx, keys.server_name().as_str(), &rows).await?;
    tx.commit().await?;
    if queued > 0 {
        store.outbox.notify_one();
    }
    for (event_nid, guard, member) in placed.guards {
        // A position whose event was not written is dropped: skipped, never waited for.
        if inserted.contains(&event_nid) {
            guard.committed(room.room_nid, member);
        }
    }
    Ok(stored)
}

/// Every event ID the batch's transaction numbers in one statement: redaction targets, the
/// events themselves, and those they cite as prev and auth events.
fn ids_to_number<'e>(
    evs: &'e [Checked<'_>],
    redactions: &'e [Option<RedactionRight>],
) -> Vec<&'e str> {
    let mut all_ids: Vec<&str> = Vec::new();
    all_ids.extend(redactions.iter().flatten().map(|r| r.target.as_str()));
    for ev in evs {
        all_ids.push(ev.event_id.as_str());
        all_ids.extend(ev.pdu.prev_events.iter().map(|e| e.as_str()));
        all_ids.extend(ev.pdu.auth_events.iter().map(|e| e.as_str()));
    }
    all_ids
}

/// The number the transaction gave an event ID of the batch (see [`ids_to_number`]).
fn nid_of(nids: &HashMap<String, i64>, id: &str) -> Result<i64> {
    nids.get(id)
        .copied()
        .ok_or_else(|| Error::internal("event ID not interned"))
}

/// What placing the rows works from: the numbers of event IDs and state keys, and whether
/// the events stand on each other's state ([`persist_chain`]).
#[derive(Clone, Copy)]
struct Order<'n> {
    nids: &'n HashMap<String, i64>,
    key_nids: &'n HashMap<(String, String), i64>,
    chained: bool,
}

/// The batch's rows, numbered, each at its stream position and on its state group.
struct Placed<'s> {
    /// The rows to insert (an event listed twice once) and their positions.
    rows: Vec<db::events::NewEvent<'s>>,
    row_positions: Vec<Option<i64>>,
    /// Per event of the batch, duplicates included.
    positions: Vec<Option<i64>>,
    event_nids: Vec<i64>,
    state_key_nids: Vec<Option<i64>>,
    states_after: Vec<Option<i64>>,
    duplicate: Vec<bool>,
    /// The live positions taken: (event, its position's guard, the member it changes),
    /// released once committed.
    guards: Vec<(i64, InFlight, Option<String>)>,
}

/// The rows, each on its state group: a state event that is not rejected makes a new group
/// on the one it stands on (statements in event order, as the groups chain).
async fn place_rows<'s>(
    tx: &mut sqlx::PgConnection,
    room: &RoomRow,
    evs: &'s [Checked<'_>],
    kinds: &'s [String],
    order: Order<'_>,
    mut backfill: impl Iterator<Item = i64>,
    mut live_guards: impl Iterator<Item = InFlight>,
) -> Result<Placed<'s>> {
    let live = evs.iter().filter(|e| !e.historical).count();
    let mut p = Placed {
        rows: Vec::with_capacity(evs.len()),
        row_positions: Vec::with_capacity(evs.len()),
        positions: Vec::with_capacity(evs.len()),
        event_nids: Vec::with_capacity(evs.len()),
        state_key_nids: Vec::with_capacity(evs.len()),
        states_after: Vec::with_capacity(evs.len()),
        // An event listed twice is written once (one statement cannot write a row twice).
        duplicate: Vec::with_capacity(evs.len()),
        guards: Vec::with_capacity(live),
    };
    let mut seen = HashSet::with_capacity(evs.len());
    // Chain lengths of the groups this transaction makes (one per state event).
    let mut made: HashMap<i64, i32> = HashMap::new();
    for (i, (ev, kind)) in evs.iter().zip(kinds).enumerate() {
        let event_nid = nid_of(order.nids, ev.event_id.as_str())?;
        let state_before = match (order.chained, p.states_after.last()) {
            (true, Some(after)) if i > 0 => *after,
            _ => ev.state_before,
        };
        p.duplicate.push(!seen.insert(event_nid));
        let state_key_nid = match &ev.pdu.state_key {
            Some(k) => Some(
                order
                    .key_nids
                    .get(&(kind.clone(), k.clone()))
                    .copied()
                    .ok_or_else(|| Error::internal("state key not interned"))?,
            ),
            None => None,
        };
        let state_after = match state_key_nid {
            Some(sk) if ev.rejected.is_none() => {
                let known = state_before.and_then(|g| made.get(&g).map(|len| (g, *len)));
                let (group, len) = new_state_group_on(
                    &mut *tx,
                    room.room_nid,
                    state_before,
                    known,
                    &[(sk, event_nid)],
                )
                .await?;
                made.insert(group, len);
                Some(group)
            }
            _ => state_before,
        };
        let position = match ev.historical {
            true => backfill.next(),
            false => live_guards.next().map(|g| {
                let pos = g.position();
                p.guards.push((event_nid, g, member_target(ev.pdu)));
                pos
            }),
        }
        .ok_or_else(|| Error::internal("too few stream positions"))?;
        p.positions.push(Some(position));
        p.event_nids.push(event_nid);
        p.state_key_nids.push(state_key_nid);
        p.states_after.push(state_after);
        if p.duplicate.last().copied().unwrap_or(false) {
            continue;
        }
        p.row_positions.push(Some(position));
        p.rows.push(ev.row(
            room.room_nid,
            event_nid,
            kind,
            state_key_nid,
            (state_before, state_after),
        ));
    }
    Ok(p)
}

/// The derived rows one written event may bring besides its edges: whom it notifies (at its
/// position), and the relation of an accepted event.
struct Derived<'a> {
    notified: Option<(&'a Notified, i64)>,
    relation: Option<&'a Relation>,
    accepted: bool,
}

/// Add what hangs off one written row to `links`: its edges, notifications, relation,
/// forward extremities, transaction ID and outbound queue entry.
fn link_event<'a>(
    links: &mut db::append::Links<'a>,
    forward_replaced: &mut HashSet<i64>,
    ev: &'a Checked<'a>,
    event_nid: i64,
    nids: &HashMap<String, i64>,
    derived: Derived<'a>,
) -> Result<()> {
    links.written.push(event_nid);
    let prevs = ev
        .pdu
        .prev_events
        .iter()
        .map(|e| nid_of(nids, e.as_str()))
        .collect::<Result<Vec<_>>>()?;
    for a in &ev.pdu.auth_events {
        links
            .auth_edges
            .push((event_nid, nid_of(nids, a.as_str())?));
    }
    links
        .prev_edges
        .extend(prevs.iter().map(|p| (event_nid, *p)));
    if let Some((n, position)) = derived.notified {
        links.push.extend(n.rows(event_nid, position));
    }
    if let Some(r) = derived.relation {
        links
            .relations
            .push((event_nid, r.event_id.as_str(), r.rel_type.as_str()));
    }
    if derived.accepted && !ev.historical {
        links.forward_new.push(event_nid);
        forward_replaced.extend(prevs.iter().copied());
    }
    links.cited.extend(prevs);
    if let Some(t) = &ev.txn {
        links
            .txns
            .push((ev.pdu.sender.as_str(), t.device_id, t.txn_id, event_nid));
    }
    match ev.fan_out {
        _ if ev.historical => {}
        FanOut::Local => links.outbound.push(db::append::OutboundEvent {
            event_nid,
            also: removed_target_server(ev.pdu),
            except: None,
        }),
        FanOut::Forward { origin } if derived.accepted => {
            links.outbound.push(db::append::OutboundEvent {
                event_nid,
                also: None,
                except: Some(origin),
            })
        }
        FanOut::Forward { .. } | FanOut::None => {}
    }
    Ok(())
}

/// What an accepted redaction names, and whether its sender had the power to redact the
/// events of others in the state before it.
struct RedactionRight {
    target: ruma::OwnedEventId,
    by_power: bool,
}

/// Per event: its [`RedactionRight`] if it is an accepted redaction. The power levels are
/// read only for batches that hold one (rare), through the state cache.
async fn redaction_rights(
    store: &Store<'_>,
    room: &RoomRow,
    evs: &[Checked<'_>],
    accepted: &[bool],
) -> Result<Vec<Option<RedactionRight>>> {
    let mut out = Vec::with_capacity(evs.len());
    let mut rules = None;
    for (ev, ok) in evs.iter().zip(accepted) {
        if !ok || ev.pdu.kind != TimelineEventType::RoomRedaction {
            out.push(None);
            continue;
        }
        let rules = match &rules {
            Some(r) => r,
            None => rules.insert(room.rules()?),
        };
        let Some(target) = ev.pdu.redacted_event(rules) else {
            out.push(None);
            continue;
        };
        let by_power = match ev.state_before {
            Some(group) => {
                let state = super::state_cache::load_state_events(
                    store.db,
                    store.state,
                    group,
                    &super::power::state_keys(),
                )
                .await?;
                super::power::may_redact_others(rules, &state, &ev.pdu.sender)
            }
            None => false,
        };
        out.push(Some(RedactionRight {
            target: target.to_owned(),
            by_power,
        }));
    }
    Ok(out)
}

/// Whom a membership event is about (what the sync feed is told of it).
fn member_target(pdu: &super::pdu::Pdu) -> Option<String> {
    match pdu.kind {
        TimelineEventType::RoomMember => pdu.state_key.clone(),
        _ => None,
    }
}

/// Whether the batch is only new local messages on the current state: no state, no
/// redaction, nothing rejected, nothing from elsewhere. Such a batch touches no state group
/// and no current state, and is written by [`persist_plain`] in one statement.
fn is_plain(evs: &[Checked<'_>]) -> bool {
    let mut ids = HashSet::with_capacity(evs.len());
    evs.iter().all(|ev| {
        matches!(ev.fan_out, FanOut::Local)
            && matches!(ev.current, Current::Keep)
            && !ev.historical
            && ev.rejected.is_none()
            && !ev.soft_failed
            && ev.pdu.state_key.is_none()
            && ev.pdu.redacts.is_none()
            && ev.pdu.kind != TimelineEventType::RoomRedaction
            && ids.insert(ev.event_id)
    })
}

/// Store a plain batch (see [`is_plain`]): its event numbers and stream positions are taken
/// in advance (from in-memory blocks), so the rows and everything hanging off them go in a
/// single statement, atomic on its own, with no transaction to open and commit around it:
/// one round trip instead of five, shared with the plain batches of other rooms written at
/// the same moment (`writer.rs`).
async fn persist_plain(
    store: &Store<'_>,
    room: &RoomRow,
    evs: Vec<Checked<'_>>,
    expect: Option<db::append::Expect>,
) -> Result<Vec<bool>> {
    let accepted = vec![true; evs.len()];
    let numbers = async {
        let guards = live_positions(store.db, store.stream, evs.len()).await?;
        let nids = store.nids.take(store.db, evs.len()).await?;
        Ok::<_, Error>((guards, nids))
    };
    let (notified, (guards, nids)) =
        tokio::try_join!(notifications(store, room, &evs, &accepted), numbers)?;
    let in_batch: HashMap<&str, i64> = evs
        .iter()
        .zip(&nids)
        .map(|(ev, n)| (ev.event_id.as_str(), *n))
        .collect();
    let kinds: Vec<String> = evs.iter().map(|e| e.pdu.kind.to_string()).collect();
    let relations: Vec<Option<Relation>> = evs.iter().map(|e| e.pdu.relation()).collect();
    let mut links = db::append::Links::default();
    let mut cited_in_batch = HashSet::new();
    for (i, ev) in evs.iter().enumerate() {
        let event_nid = nids[i];
        let position = guards[i].position();
        for p in &ev.pdu.prev_events {
            match in_batch.get(p.as_str()) {
                Some(&n) => {
                    links.prev_edges.push((event_nid, n));
                    cited_in_batch.insert(n);
                }
                None => {
                    links.prev_by_id.push((event_nid, p.as_str()));
                    links.replaced_by_id.push(p.as_str());
                }
            }
        }
        for a in &ev.pdu.auth_events {
            match in_batch.get(a.as_str()) {
                Some(&n) => links.auth_edges.push((event_nid, n)),
                None => links.auth_by_id.push((event_nid, a.as_str())),
            }
        }
        if let Some(n) = &notified[i] {
            links.push.extend(n.rows(event_nid, position));
        }
        if let Some(r) = &relations[i] {
            links
                .relations
                .push((event_nid, r.event_id.as_str(), r.rel_type.as_str()));
        }
        if let Some(t) = &ev.txn {
            links
                .txns
                .push((ev.pdu.sender.as_str(), t.device_id, t.txn_id, event_nid));
        }
        links.outbound.push(db::append::OutboundEvent {
            event_nid,
            also: None,
            except: None,
        });
        let row = ev.row(
            room.room_nid,
            event_nid,
            &kinds[i],
            None,
            (ev.state_before, ev.state_before),
        );
        links.new_events.push((row, ev.event_id.as_str(), position));
    }
    links.replaced_by_id.sort_unstable();
    links.replaced_by_id.dedup();
    links.forward_new = nids
        .iter()
        .copied()
        .filter(|n| !cited_in_batch.contains(n))
        .collect();
    store
        .writer
        .write(super::writer::Write {
            room_nid: room.room_nid,
            rows: db::append::LinkRows::new(room.room_nid, &links, expect),
            positions: guards,
        })
        .await?;
    Ok(vec![true; evs.len()])
}

/// Whom each event notifies (push rules of the room's local members); `None` for events
/// that notify nobody (rejected, soft-failed, historical).
async fn notifications(
    store: &Store<'_>,
    room: &RoomRow,
    evs: &[Checked<'_>],
    accepted: &[bool],
) -> Result<Vec<Option<Notified>>> {
    let mut notified = Vec::with_capacity(evs.len());
    let mut push: Option<(Option<i64>, std::sync::Arc<PushContext>)> = None;
    for (ev, ok) in evs.iter().zip(accepted) {
        if !ok || ev.historical {
            notified.push(None);
            continue;
        }
        let fresh = match &push {
            Some((group, _)) => *group != ev.state_before,
            None => true,
        };
        if fresh {
            let rules = room.rules()?;
            let sources = (store.db, store.keys.server_name().as_ref(), store.state);
            let ctx = store
                .push
                .get(sources, room, &rules, ev.state_before)
                .await?;
            push = Some((ev.state_before, ctx));
        }
        match &push {
            Some((_, ctx)) => notified.push(Some(ctx.actions(ev.event_id, ev.json, ev.pdu).await?)),
            None => notified.push(None),
        }
    }
    Ok(notified)
}

/// How many live stream positions to take from the sequence at once.
const POSITION_BLOCK: usize = 256;

/// `n` live stream positions, registered as in flight.
pub(crate) async fn live_positions(
    db: &sqlx::PgPool,
    stream: &std::sync::Arc<StreamPositions>,
    n: usize,
) -> Result<Vec<InFlight>> {
    // Concurrent senders may drain a new block before this one takes from it; a few
    // refills always suffice.
    for _ in 0..8 {
        if let Some(guards) = stream.take(n) {
            return Ok(guards);
        }
        stream.add_block(db::append::position_block(db, n.max(POSITION_BLOCK)).await?);
    }
    Err(Error::internal("could not take stream positions"))
}

/// The server of a user another member put out of the room (kick, ban, invite rescinded,
/// knock refused): it hears of that event though the user is no longer in the room after it,
/// as Synapse sends it. Any other membership change goes only to the servers in the room:
/// an invite reaches the invitee's server through /invite, never /send, and a ban of someone
/// not in the room is none of their server's business.
fn removed_target_server(pdu: &super::pdu::Pdu) -> Option<&str> {
    let target = pdu.state_key.as_deref()?;
    let removed = pdu.kind == TimelineEventType::RoomMember
        && target != pdu.sender.as_str()
        && matches!(
            super::pdu::membership_of(&pdu.content),
            MembershipState::Leave | MembershipState::Ban
        );
    removed
        .then(|| target.split_once(':').map(|(_, server)| server))
        .flatten()
}

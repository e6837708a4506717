//! The append path's writes around newly stored events, in as few round trips as the data
//! allows: event numbers in one statement, and everything that hangs off the new event rows
//! (edges, push actions, extremities, client transaction IDs, the outbound federation queue,
//! relations) in another; a send then costs four round trips inside its transaction, whatever the
//! number of events stored together. A batch of plain local messages, whose numbers are
//! taken in advance ([`nid_block`]), is written whole by [`link`] in one statement, with no
//! transaction around it.

use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::{PgConnection, PgExecutor};

use super::federation::SERVER_OF_USER;
use super::sliding::BUMP_TYPES;

/// Numbers for a batch of events: every event ID interned (existing numbers kept), and
/// `backfill` new backfill positions (negative, descending), in one round trip.
pub async fn number(
    tx: &mut PgConnection,
    ids: &[&str],
    backfill: usize,
) -> Result<(HashMap<String, i64>, Vec<i64>), sqlx::Error> {
    // Rows: (event number or backfill position, event ID or NULL for a position). New
    // numbers come from RETURNING; known ones from the SELECT, whose snapshot does not see
    // the rows this statement inserts, so no ID comes twice.
    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
        "WITH new AS (
             INSERT INTO event_ids (event_id) SELECT unnest($1::text[])
             ON CONFLICT DO NOTHING RETURNING event_nid, event_id
         )
         SELECT event_nid, event_id FROM new
         UNION ALL
         SELECT event_nid, event_id FROM event_ids WHERE event_id = ANY($1)
         UNION ALL
         SELECT -nextval('events_backfill_seq'), NULL FROM generate_series(1, $2::int)",
    )
    .bind(ids)
    .bind(i32::try_from(backfill).unwrap_or(i32::MAX))
    .fetch_all(&mut *tx)
    .await?;
    let mut nids = HashMap::with_capacity(ids.len());
    let mut positions = Vec::with_capacity(backfill);
    for (n, id) in rows {
        match id {
            Some(id) => {
                nids.insert(id, n);
            }
            None => positions.push(n),
        }
    }
    if ids.iter().any(|id| !nids.contains_key(*id)) {
        // Another transaction inserted one of them while this statement ran: its snapshot
        // could not see that row, a new one can.
        nids.extend(super::events::intern_ids(tx, ids).await?);
    }
    positions.sort_unstable_by(|a, b| b.cmp(a));
    Ok((nids, positions))
}

/// `n` event numbers from the sequence `event_ids` numbers with, for events written with
/// their numbers known in advance (see [`Links::new_events`]).
pub async fn nid_block(e: impl PgExecutor<'_>, n: usize) -> Result<Vec<i64>, sqlx::Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT nextval('event_ids_event_nid_seq') FROM generate_series(1, $1::int)",
    )
    .bind(i32::try_from(n).unwrap_or(i32::MAX))
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// `n` new live stream positions from the sequence (a block for the stream's bookkeeping).
pub async fn position_block(e: impl PgExecutor<'_>, n: usize) -> Result<Vec<i64>, sqlx::Error> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT nextval('events_stream_seq') FROM generate_series(1, $1::int)")
            .bind(i32::try_from(n).unwrap_or(i32::MAX))
            .fetch_all(e)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// What hangs off newly stored events of one room.
#[derive(Default)]
pub struct Links<'a> {
    /// (event, prev event) and (event, auth event) pairs.
    pub prev_edges: Vec<(i64, i64)>,
    pub auth_edges: Vec<(i64, i64)>,
    /// Users each event notifies.
    pub push: Vec<PushRow<'a>>,
    /// The events written: no longer gaps in the room's history.
    pub written: Vec<i64>,
    /// Events they cite; those not in the timeline become backward extremities.
    pub cited: Vec<i64>,
    /// New forward extremities, and those they replace (disjoint sets).
    pub forward_new: Vec<i64>,
    pub forward_replaced: Vec<i64>,
    /// Client transaction IDs: (user, device, transaction ID, event).
    pub txns: Vec<(&'a str, &'a str, &'a str, i64)>,
    /// Events to send to other servers.
    pub outbound: Vec<OutboundEvent<'a>>,
    /// New events written by this same statement (numbers taken in advance, see
    /// [`nid_block`]) with their IDs and stream positions: a batch needs no transaction of
    /// its own.
    pub new_events: Vec<(super::events::NewEvent<'a>, &'a str, i64)>,
    /// Edges to events already stored, by ID: (event, prev or auth event ID).
    pub prev_by_id: Vec<(i64, &'a str)>,
    pub auth_by_id: Vec<(i64, &'a str)>,
    /// Forward extremities replaced, by ID.
    pub replaced_by_id: Vec<&'a str>,
    /// Relations of accepted events: (event, parent event ID, relation type).
    pub relations: Vec<(i64, &'a str, &'a str)>,
}

/// One user to notify of one event.
pub struct PushRow<'a> {
    pub event_nid: i64,
    pub user_id: &'a str,
    pub stream_ordering: i64,
    pub highlight: bool,
    pub thread_id: &'a str,
    /// The push rule's actions, a JSON array.
    pub actions: &'a str,
}

/// An event to send to the servers with a joined member in its room: also to `also` (the
/// server of a membership change's target, who may just have left), never to `except` (the
/// server it came from).
pub struct OutboundEvent<'a> {
    pub event_nid: i64,
    pub also: Option<&'a str>,
    pub except: Option<&'a str>,
}

/// What a room's write must find for its batch to go in: the batch was built on the room's
/// tip as remembered in memory, so the statement checks that tip still holds (it deletes
/// exactly `replaced` forward extremities, and the room's state group is `state_group`).
/// When it does not, the whole statement fails with [`TIP_MOVED`] and writes nothing.
#[derive(Clone, Copy)]
pub struct Expect {
    pub replaced: i64,
    pub state_group: Option<i64>,
}

/// The SQLSTATE of a write whose [`Expect`] did not hold (raised by `trellis_expect`).
pub const TIP_MOVED: &str = "TR001";

/// Whether `e` means a write was built on something that no longer holds: the room's tip
/// moved ([`Expect`]) or one of its client transaction IDs is already taken (a retry). The
/// statement wrote nothing; the batch is to be rebuilt from what is stored.
pub fn is_stale_write(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some(TIP_MOVED) || d.constraint() == Some("event_txn_ids_pkey")
        }
        _ => false,
    }
}

/// The links of one or more rooms as the columns of one statement (owned, so that writes
/// of several rooms, prepared by different tasks, can be joined into one: see
/// `room::writer`).
#[derive(Default, Clone)]
pub struct LinkRows {
    prev_edges: (Vec<i64>, Vec<i64>),
    auth_edges: (Vec<i64>, Vec<i64>),
    push: PushColumns,
    written: (Vec<i64>, Vec<i64>),
    cited: (Vec<i64>, Vec<i64>),
    forward_new: (Vec<i64>, Vec<i64>),
    forward_replaced: (Vec<i64>, Vec<i64>),
    txns: TxnColumns,
    outbound: OutboundColumns,
    new_events: NewEventColumns,
    prev_by_id: (Vec<i64>, Vec<String>),
    auth_by_id: (Vec<i64>, Vec<String>),
    replaced_by_id: (Vec<i64>, Vec<String>),
    /// room, forward extremities replaced, state group.
    expect: (Vec<i64>, Vec<i64>, Vec<Option<i64>>),
    relations: RelationColumns,
}

#[derive(Default, Clone)]
struct RelationColumns {
    event: Vec<i64>,
    room: Vec<i64>,
    parent: Vec<String>,
    rel_type: Vec<String>,
}

#[derive(Default, Clone)]
struct PushColumns {
    room: Vec<i64>,
    event: Vec<i64>,
    user: Vec<String>,
    ordering: Vec<i64>,
    highlight: Vec<bool>,
    thread: Vec<String>,
    actions: Vec<String>,
}

#[derive(Default, Clone)]
struct TxnColumns {
    room: Vec<i64>,
    user: Vec<String>,
    device: Vec<String>,
    txn: Vec<String>,
    event: Vec<i64>,
}

#[derive(Default, Clone)]
struct OutboundColumns {
    room: Vec<i64>,
    event: Vec<i64>,
    also: Vec<Option<String>>,
    except: Vec<Option<String>>,
}

#[derive(Default, Clone)]
struct NewEventColumns {
    room: Vec<i64>,
    nid: Vec<i64>,
    id: Vec<String>,
    kind: Vec<String>,
    sender: Vec<String>,
    ts: Vec<i64>,
    depth: Vec<i64>,
    ordering: Vec<i64>,
    json: Vec<String>,
    state_before: Vec<Option<i64>>,
}

impl LinkRows {
    /// The rows of `links` of room `room_nid`, checked against `expect` if given.
    pub fn new(room_nid: i64, links: &Links<'_>, expect: Option<Expect>) -> LinkRows {
        let mut rows = LinkRows::default();
        rows.add(room_nid, links, expect);
        rows
    }

    fn add(&mut self, room: i64, l: &Links<'_>, expect: Option<Expect>) {
        let pairs = |to: &mut (Vec<i64>, Vec<i64>), from: &[(i64, i64)]| {
            to.0.extend(from.iter().map(|p| p.0));
            to.1.extend(from.iter().map(|p| p.1));
        };
        pairs(&mut self.prev_edges, &l.prev_edges);
        pairs(&mut self.auth_edges, &l.auth_edges);
        let of_room = |to: &mut (Vec<i64>, Vec<i64>), from: &[i64]| {
            to.0.extend(from.iter().map(|_| room));
            to.1.extend_from_slice(from);
        };
        of_room(&mut self.written, &l.written);
        of_room(&mut self.cited, &l.cited);
        of_room(&mut self.forward_new, &l.forward_new);
        of_room(&mut self.forward_replaced, &l.forward_replaced);
        for r in &l.push {
            self.push.room.push(room);
            self.push.event.push(r.event_nid);
            self.push.user.push(r.user_id.to_owned());
            self.push.ordering.push(r.stream_ordering);
            self.push.highlight.push(r.highlight);
            self.push.thread.push(r.thread_id.to_owned());
            self.push.actions.push(r.actions.to_owned());
        }
        for t in &l.txns {
            self.txns.room.push(room);
            self.txns.user.push(t.0.to_owned());
            self.txns.device.push(t.1.to_owned());
            self.txns.txn.push(t.2.to_owned());
            self.txns.event.push(t.3);
        }
        for o in &l.outbound {
            self.outbound.room.push(room);
            self.outbound.event.push(o.event_nid);
            self.outbound.also.push(o.also.map(str::to_owned));
            self.outbound.except.push(o.except.map(str::to_owned));
        }
        let n = &mut self.new_events;
        for (e, id, ordering) in &l.new_events {
            n.room.push(room);
            n.nid.push(e.event_nid);
            n.id.push((*id).to_owned());
            n.kind.push(e.event_type.to_owned());
            n.sender.push(e.sender.to_owned());
            n.ts.push(e.origin_server_ts);
            n.depth.push(e.depth);
            n.ordering.push(*ordering);
            n.json.push(e.json.to_owned());
            n.state_before.push(e.state_before);
        }
        let by_id = |to: &mut (Vec<i64>, Vec<String>), from: &[(i64, &str)]| {
            to.0.extend(from.iter().map(|p| p.0));
            to.1.extend(from.iter().map(|p| p.1.to_owned()));
        };
        by_id(&mut self.prev_by_id, &l.prev_by_id);
        by_id(&mut self.auth_by_id, &l.auth_by_id);
        self.replaced_by_id
            .0
            .extend(l.replaced_by_id.iter().map(|_| room));
        self.replaced_by_id
            .1
            .extend(l.replaced_by_id.iter().map(|s| (*s).to_owned()));
        for (event, parent, rel_type) in &l.relations {
            self.relations.event.push(*event);
            self.relations.room.push(room);
            self.relations.parent.push((*parent).to_owned());
            self.relations.rel_type.push((*rel_type).to_owned());
        }
        if let Some(x) = expect {
            self.expect.0.push(room);
            self.expect.1.push(x.replaced);
            self.expect.2.push(x.state_group);
        }
    }

    /// Add another room's rows (that room must not be among these).
    pub fn append(&mut self, o: &LinkRows) {
        fn mv<T: Clone>(a: &mut Vec<T>, b: &[T]) {
            a.extend_from_slice(b);
        }
        mv(&mut self.prev_edges.0, &o.prev_edges.0);
        mv(&mut self.prev_edges.1, &o.prev_edges.1);
        mv(&mut self.auth_edges.0, &o.auth_edges.0);
        mv(&mut self.auth_edges.1, &o.auth_edges.1);
        mv(&mut self.push.room, &o.push.room);
        mv(&mut self.push.event, &o.push.event);
        mv(&mut self.push.user, &o.push.user);
        mv(&mut self.push.ordering, &o.push.ordering);
        mv(&mut self.push.highlight, &o.push.highlight);
        mv(&mut self.push.thread, &o.push.thread);
        mv(&mut self.push.actions, &o.push.actions);
        for (a, b) in [
            (&mut self.written, &o.written),
            (&mut self.cited, &o.cited),
            (&mut self.forward_new, &o.forward_new),
            (&mut self.forward_replaced, &o.forward_replaced),
        ] {
            mv(&mut a.0, &b.0);
            mv(&mut a.1, &b.1);
        }
        mv(&mut self.txns.room, &o.txns.room);
        mv(&mut self.txns.user, &o.txns.user);
        mv(&mut self.txns.device, &o.txns.device);
        mv(&mut self.txns.txn, &o.txns.txn);
        mv(&mut self.txns.event, &o.txns.event);
        mv(&mut self.outbound.room, &o.outbound.room);
        mv(&mut self.outbound.event, &o.outbound.event);
        mv(&mut self.outbound.also, &o.outbound.also);
        mv(&mut self.outbound.except, &o.outbound.except);
        let (n, m) = (&mut self.new_events, &o.new_events);
        mv(&mut n.room, &m.room);
        mv(&mut n.nid, &m.nid);
        mv(&mut n.id, &m.id);
        mv(&mut n.kind, &m.kind);
        mv(&mut n.sender, &m.sender);
        mv(&mut n.ts, &m.ts);
        mv(&mut n.depth, &m.depth);
        mv(&mut n.ordering, &m.ordering);
        mv(&mut n.json, &m.json);
        mv(&mut n.state_before, &m.state_before);
        for (a, b) in [
            (&mut self.prev_by_id, &o.prev_by_id),
            (&mut self.auth_by_id, &o.auth_by_id),
            (&mut self.replaced_by_id, &o.replaced_by_id),
        ] {
            mv(&mut a.0, &b.0);
            mv(&mut a.1, &b.1);
        }
        mv(&mut self.expect.0, &o.expect.0);
        mv(&mut self.expect.1, &o.expect.1);
        mv(&mut self.expect.2, &o.expect.2);
        mv(&mut self.relations.event, &o.relations.event);
        mv(&mut self.relations.room, &o.relations.room);
        mv(&mut self.relations.parent, &o.relations.parent);
        mv(&mut self.relations.rel_type, &o.relations.rel_type);
    }
}

/// Write `links` of the room in one statement. The event rows must already be written (the
/// backward-extremity check looks for them); `ours` is never queued as a destination.
pub async fn link(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    ours: &str,
    links: &Links<'_>,
) -> Result<i64, sqlx::Error> {
    link_rows(e, ours, &LinkRows::new(room_nid, links, None)).await
}

/// The statement of [`link_rows`], its parameters numbered as bound there. Built once: it
/// names the server-of-user expression shared with the other federation queries.
static LINK_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH new_ids AS (
             INSERT INTO event_ids (event_nid, event_id)
             SELECT * FROM unnest($1::bigint[], $2::text[])
         ),
         new_events AS (
             INSERT INTO events (event_nid, room_nid, event_type, state_key_nid, sender,
                                 origin_server_ts, depth, stream_ordering, json, outlier,
                                 rejected_reason, soft_failed, state_before, state_after)
             SELECT nid, room, t, NULL, s, ts, d, so, j, false, NULL, false, sb, sb
             FROM unnest($1::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
                         $7::bigint[], $8::bigint[], $9::text[], $10::bigint[])
                  AS x(nid, room, t, s, ts, d, so, j, sb)
         ),
         prev_edges AS (
             INSERT INTO event_edges (event_nid, prev_event_nid)
             SELECT * FROM unnest($11::bigint[], $12::bigint[])
             UNION ALL
             SELECT w.n, i.event_nid FROM unnest($13::bigint[], $14::text[]) AS w(n, id)
             JOIN event_ids i ON i.event_id = w.id
             ON CONFLICT DO NOTHING
         ),
         auth_edges AS (
             INSERT INTO event_auth_edges (event_nid, auth_event_nid)
             SELECT * FROM unnest($15::bigint[], $16::bigint[])
             UNION ALL
             SELECT w.n, i.event_nid FROM unnest($17::bigint[], $18::text[]) AS w(n, id)
             JOIN event_ids i ON i.event_id = w.id
             ON CONFLICT DO NOTHING
         ),
         push AS (
             INSERT INTO event_push_actions
                 (room_nid, event_nid, user_id, stream_ordering, highlight, thread_id, actions)
             SELECT r, e, u, so, h, t, a::jsonb
             FROM unnest($19::bigint[], $20::bigint[], $21::text[], $22::bigint[], $23::bool[],
                         $24::text[], $48::text[]) AS x(r, e, u, so, h, t, a)
             ON CONFLICT DO NOTHING
         ),
         filled AS (
             DELETE FROM backward_extremities
             WHERE (room_nid, event_nid) IN (SELECT * FROM unnest($25::bigint[], $26::bigint[]))
         ),
         gaps AS (
             INSERT INTO backward_extremities (room_nid, event_nid)
             SELECT room, n FROM unnest($27::bigint[], $28::bigint[]) AS c(room, n)
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_nid = n AND NOT e.outlier)
             ON CONFLICT DO NOTHING
         ),
         replaced AS (
             DELETE FROM forward_extremities
             WHERE (room_nid, event_nid) IN (
                 SELECT * FROM unnest($29::bigint[], $30::bigint[])
                 UNION ALL
                 SELECT w.room, i.event_nid FROM unnest($31::bigint[], $32::text[]) AS w(room, id)
                 JOIN event_ids i ON i.event_id = w.id)
             RETURNING room_nid
         ),
         tips AS (
             INSERT INTO forward_extremities (room_nid, event_nid)
             SELECT * FROM unnest($33::bigint[], $34::bigint[]) ON CONFLICT DO NOTHING
         ),
         txns AS (
             INSERT INTO event_txn_ids (room_nid, user_id, device_id, txn_id, event_nid)
             SELECT * FROM unnest($35::bigint[], $36::text[], $37::text[], $38::text[],
                                  $39::bigint[])
         ),
         servers AS (
             SELECT DISTINCT room_nid, {SERVER_OF_USER} AS d FROM room_members
             WHERE room_nid = ANY($40) AND membership = 'join'
         ),
         outbox AS (
             INSERT INTO federation_outbox (destination, event_nid)
             SELECT d, ev.nid
             FROM unnest($40::bigint[], $41::bigint[], $42::text[], $43::text[])
                  AS ev(room, nid, also, skip)
             CROSS JOIN LATERAL (SELECT d FROM servers s WHERE s.room_nid = ev.room
                                 UNION SELECT ev.also) s
             WHERE d IS NOT NULL AND d <> $44 AND d IS DISTINCT FROM ev.skip
             ORDER BY ev.nid, d
             RETURNING 1
         ),
         relations AS (
             INSERT INTO event_relations (event_nid, room_nid, relates_to_id, rel_type)
             SELECT * FROM unnest($49::bigint[], $50::bigint[], $51::text[], $52::text[])
             ON CONFLICT DO NOTHING
         ),
         bumps AS (
             INSERT INTO room_bump_stamps (room_nid, stream)
             SELECT room, max(so) FROM unnest($3::bigint[], $4::text[], $8::bigint[])
                  AS x(room, t, so)
             WHERE t = ANY($53) GROUP BY room
             ON CONFLICT (room_nid) DO UPDATE
                 SET stream = GREATEST(room_bump_stamps.stream, EXCLUDED.stream)
         )
         SELECT (SELECT count(*) FROM outbox),
                (SELECT count(*) FROM unnest($45::bigint[], $46::bigint[], $47::bigint[])
                     AS x(room, n, sg)
                 WHERE NOT trellis_expect(
                     (SELECT count(*) FROM replaced r WHERE r.room_nid = x.room) = x.n
                     AND (SELECT state_group FROM rooms WHERE room_nid = x.room)
                         IS NOT DISTINCT FROM x.sg))"
    )
});

/// Write the links of one or more rooms in one statement, atomic on its own: new event rows
/// (numbers taken in advance), edges, push actions, extremities, client transaction IDs, the
/// outbound queue and relations. Fails with nothing written if a room's [`Expect`] does not
/// hold.
/// Returns how many entries it added to the outbound queue.
pub async fn link_rows(
    e: impl PgExecutor<'_>,
    ours: &str,
    r: &LinkRows,
) -> Result<i64, sqlx::Error> {
    let n = &r.new_events;
    let (queued, _): (i64, i64) = sqlx::query_as(LINK_ROWS_SQL.as_str())
        .bind(&n.nid)
        .bind(&n.id)
        .bind(&n.room)
        .bind(&n.kind)
        .bind(&n.sender)
        .bind(&n.ts)
        .bind(&n.depth)
        .bind(&n.ordering)
        .bind(&n.json)
        .bind(&n.state_before)
        .bind(&r.prev_edges.0)
        .bind(&r.prev_edges.1)
        .bind(&r.prev_by_id.0)
        .bind(&r.prev_by_id.1)
        .bind(&r.auth_edges.0)
        .bind(&r.auth_edges.1)
        .bind(&r.auth_by_id.0)
        .bind(&r.auth_by_id.1)
        .bind(&r.push.room)
        .bind(&r.push.event)
        .bind(&r.push.user)
        .bind(&r.push.ordering)
        .bind(&r.push.highlight)
        .bind(&r.push.thread)
        .bind(&r.written.0)
        .bind(&r.written.1)
        .bind(&r.cited.0)
        .bind(&r.cited.1)
        .bind(&r.forward_replaced.0)
        .bind(&r.forward_replaced.1)
        .bind(&r.replaced_by_id.0)
        .bind(&r.replaced_by_id.1)
        .bind(&r.forward_new.0)
        .bind(&r.forward_new.1)
        .bind(&r.txns.room)
        .bind(&r.txns.user)
        .bind(&r.txns.device)
        .bind(&r.txns.txn)
        .bind(&r.txns.event)
        .bind(&r.outbound.room)
        .bind(&r.outbound.event)
        .bind(&r.outbound.also)
        .bind(&r.outbound.except)
        .bind(ours)
        .bind(&r.expect.0)
        .bind(&r.expect.1)
        .bind(&r.expect.2)
        .bind(&r.push.actions)
        .bind(&r.relations.event)
        .bind(&r.relations.room)
        .bind(&r.relations.parent)
        .bind(&r.relations.rel_type)
        .bind(BUMP_TYPES)
        .fetch_one(e)
        .await?;
    Ok(queued)
}

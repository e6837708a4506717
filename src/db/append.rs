//! The append path's writes around newly stored events, in as few round trips as the data
//! allows: event numbers in one statement, and everything that hangs off the new event rows
//! (edges, push actions, extremities, client transaction IDs, the outbound federation queue)
//! in another; a send then costs four round trips inside its transaction, whatever the
//! number of events stored together. A batch of plain local messages, whose numbers are
//! taken in advance ([`nid_block`]), is written whole by [`link`] in one statement, with no
//! transaction around it.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor};

use super::federation::SERVER_OF_USER;

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

/// `n` new live stream positions from the sequence (a block for the stream's bookkeeping).
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
}

/// One user to notify of one event.
pub struct PushRow<'a> {
    pub event_nid: i64,
    pub user_id: &'a str,
    pub stream_ordering: i64,
    pub highlight: bool,
    pub thread_id: &'a str,
}

/// An event to send to the servers with a joined member in its room: also to `also` (the
/// server of a membership change's target, who may just have left), never to `except` (the
/// server it came from).
pub struct OutboundEvent<'a> {
    pub event_nid: i64,
    pub also: Option<&'a str>,
    pub except: Option<&'a str>,
}

/// Write `links` of the room in one statement. The event rows must already be written (the
/// backward-extremity check looks for them); `ours` is never queued as a destination.
pub async fn link(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    ours: &str,
    links: &Links<'_>,
) -> Result<(), sqlx::Error> {
    let firsts = |v: &[(i64, i64)]| v.iter().map(|e| e.0).collect::<Vec<_>>();
    let seconds = |v: &[(i64, i64)]| v.iter().map(|e| e.1).collect::<Vec<_>>();
    let push = &links.push;
    let txns = &links.txns;
    let out = &links.outbound;
    let new = &links.new_events;
    let new_col = |f: fn(&super::events::NewEvent<'_>) -> i64| {
        new.iter().map(|(e, _, _)| f(e)).collect::<Vec<_>>()
    };
    sqlx::query(&format!(
        "WITH new_ids AS (
             INSERT INTO event_ids (event_nid, event_id)
             SELECT * FROM unnest($23::bigint[], $24::text[])
         ),
         new_events AS (
             INSERT INTO events (event_nid, room_nid, event_type, state_key_nid, sender,
                                 origin_server_ts, depth, stream_ordering, json, outlier,
                                 rejected_reason, soft_failed, state_before, state_after)
             SELECT n, $1, t, NULL, s, ts, d, so, j, false, NULL, false, sb, sb
             FROM unnest($23::bigint[], $25::text[], $26::text[], $27::bigint[], $28::bigint[],
                         $29::bigint[], $30::text[], $31::bigint[]) AS x(n, t, s, ts, d, so, j, sb)
         ),
         prev_edges AS (
             INSERT INTO event_edges (event_nid, prev_event_nid)
             SELECT * FROM unnest($2::bigint[], $3::bigint[])
             UNION ALL
             SELECT w.n, i.event_nid FROM unnest($32::bigint[], $33::text[]) AS w(n, id)
             JOIN event_ids i ON i.event_id = w.id
             ON CONFLICT DO NOTHING
         ),
         auth_edges AS (
             INSERT INTO event_auth_edges (event_nid, auth_event_nid)
             SELECT * FROM unnest($4::bigint[], $5::bigint[])
             UNION ALL
             SELECT w.n, i.event_nid FROM unnest($34::bigint[], $35::text[]) AS w(n, id)
             JOIN event_ids i ON i.event_id = w.id
             ON CONFLICT DO NOTHING
         ),
         push AS (
             INSERT INTO event_push_actions
                 (room_nid, event_nid, user_id, stream_ordering, highlight, thread_id)
             SELECT $1, * FROM unnest($6::bigint[], $7::text[], $8::bigint[], $9::bool[], $10::text[])
             ON CONFLICT DO NOTHING
         ),
         filled AS (
             DELETE FROM backward_extremities WHERE room_nid = $1 AND event_nid = ANY($11)
         ),
         gaps AS (
             INSERT INTO backward_extremities (room_nid, event_nid)
             SELECT $1, n FROM unnest($12::bigint[]) AS n
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_nid = n AND NOT e.outlier)
             ON CONFLICT DO NOTHING
         ),
         replaced AS (
             DELETE FROM forward_extremities WHERE room_nid = $1 AND (event_nid = ANY($14)
                 OR event_nid IN (SELECT event_nid FROM event_ids WHERE event_id = ANY($36)))
         ),
         tips AS (
             INSERT INTO forward_extremities (room_nid, event_nid)
             SELECT $1, unnest($13::bigint[]) ON CONFLICT DO NOTHING
         ),
         txns AS (
             INSERT INTO event_txn_ids (room_nid, user_id, device_id, txn_id, event_nid)
             SELECT $1, * FROM unnest($15::text[], $16::text[], $17::text[], $18::bigint[])
         ),
         servers AS (
             SELECT DISTINCT {SERVER_OF_USER} AS d FROM room_members
             WHERE room_nid = $1 AND membership = 'join'
         ),
         outbox AS (
             INSERT INTO federation_outbox (destination, event_nid)
             SELECT d, ev.nid
             FROM unnest($20::bigint[], $21::text[], $22::text[]) AS ev(nid, also, skip)
             CROSS JOIN LATERAL (SELECT d FROM servers UNION SELECT ev.also) s
             WHERE d IS NOT NULL AND d <> $19 AND d IS DISTINCT FROM ev.skip
             ORDER BY ev.nid, d
         )
         SELECT 1"
    ))
    .bind(room_nid)
    .bind(firsts(&links.prev_edges))
    .bind(seconds(&links.prev_edges))
    .bind(firsts(&links.auth_edges))
    .bind(seconds(&links.auth_edges))
    .bind(push.iter().map(|r| r.event_nid).collect::<Vec<_>>())
    .bind(push.iter().map(|r| r.user_id).collect::<Vec<_>>())
    .bind(push.iter().map(|r| r.stream_ordering).collect::<Vec<_>>())
    .bind(push.iter().map(|r| r.highlight).collect::<Vec<_>>())
    .bind(push.iter().map(|r| r.thread_id).collect::<Vec<_>>())
    .bind(&links.written)
    .bind(&links.cited)
    .bind(&links.forward_new)
    .bind(&links.forward_replaced)
    .bind(txns.iter().map(|t| t.0).collect::<Vec<_>>())
    .bind(txns.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(txns.iter().map(|t| t.2).collect::<Vec<_>>())
    .bind(txns.iter().map(|t| t.3).collect::<Vec<_>>())
    .bind(ours)
    .bind(out.iter().map(|o| o.event_nid).collect::<Vec<_>>())
    .bind(out.iter().map(|o| o.also).collect::<Vec<_>>())
    .bind(out.iter().map(|o| o.except).collect::<Vec<_>>())
    .bind(new_col(|e| e.event_nid))
    .bind(new.iter().map(|n| n.1).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.0.event_type).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.0.sender).collect::<Vec<_>>())
    .bind(new_col(|e| e.origin_server_ts))
    .bind(new_col(|e| e.depth))
    .bind(new.iter().map(|n| n.2).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.0.json).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.0.state_before).collect::<Vec<_>>())
    .bind(links.prev_by_id.iter().map(|e| e.0).collect::<Vec<_>>())
    .bind(links.prev_by_id.iter().map(|e| e.1).collect::<Vec<_>>())
    .bind(links.auth_by_id.iter().map(|e| e.0).collect::<Vec<_>>())
    .bind(links.auth_by_id.iter().map(|e| e.1).collect::<Vec<_>>())
    .bind(&links.replaced_by_id)
    .execute(e)
    .await?;
    Ok(())
}

//! The `events`, `event_ids`, edge, extremity and transaction-ID tables.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ruma::events::room::member::MembershipState;
use sqlx::{FromRow, PgConnection, PgExecutor, Row};

use super::rooms::RoomRow;

/// An event as stored: its canonical JSON and the columns readers filter on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub event_nid: i64,
    pub event_id: String,
    pub room_nid: i64,
    pub event_type: String,
    pub sender: String,
    pub depth: i64,
    pub stream_ordering: Option<i64>,
    pub origin_server_ts: i64,
    pub json: String,
    pub rejected_reason: Option<String>,
    pub soft_failed: bool,
    pub outlier: bool,
    pub redacted_by: Option<i64>,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
}

pub(super) const SELECT_EVENT: &str =
    "SELECT e.event_nid, i.event_id, e.room_nid, e.event_type, e.sender, e.depth,
        e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason, e.soft_failed, e.outlier,
        e.redacted_by, e.state_before, e.state_after
    FROM events e JOIN event_ids i USING (event_nid)";

/// Number every event ID (existing numbers are kept). Returns id → nid.
pub async fn intern_ids(
    tx: &mut PgConnection,
    ids: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    // One round trip: the new numbers come from RETURNING, the known ones from the SELECT
    // (whose snapshot does not see the rows this statement inserts, so no ID comes twice).
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "WITH new AS (
             INSERT INTO event_ids (event_id) SELECT unnest($1::text[])
             ON CONFLICT DO NOTHING RETURNING event_nid, event_id
         )
         SELECT event_nid, event_id FROM new
         UNION ALL
         SELECT event_nid, event_id FROM event_ids WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut out: HashMap<String, i64> = rows.into_iter().map(|(n, id)| (id, n)).collect();
    if ids.iter().any(|id| !out.contains_key(*id)) {
        // Another transaction inserted one of them while this statement ran: its snapshot
        // could not see that row, a new one can.
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT event_nid, event_id FROM event_ids WHERE event_id = ANY($1)")
                .bind(ids)
                .fetch_all(&mut *tx)
                .await?;
        out.extend(rows.into_iter().map(|(n, id)| (id, n)));
    }
    Ok(out)
}

pub struct NewEvent<'a> {
    pub event_nid: i64,
    pub room_nid: i64,
    pub event_type: &'a str,
    pub state_key_nid: Option<i64>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub json: &'a str,
    pub outlier: bool,
    pub rejected_reason: Option<&'a str>,
    pub soft_failed: bool,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
}

impl<'a> NewEvent<'a> {
    /// An accepted timeline event's row, not a state event and not yet placed on any state
    /// group: callers set what differs on top (`NewEvent { outlier: true, ..NewEvent::new(…) }`).
    pub fn new(
        event_nid: i64,
        room_nid: i64,
        event_type: &'a str,
        sender: &'a str,
        origin_server_ts: i64,
        depth: i64,
        json: &'a str,
    ) -> Self {
        NewEvent {
            event_nid,
            room_nid,
            event_type,
            state_key_nid: None,
            sender,
            origin_server_ts,
            depth,
            json,
            outlier: false,
            rejected_reason: None,
            soft_failed: false,
            state_before: None,
            state_after: None,
        }
    }
}

/// The highest live stream position stored.
pub async fn max_stream_position(e: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    let (n,): (Option<i64>,) = sqlx::query_as("SELECT max(stream_ordering) FROM events")
        .fetch_one(e)
        .await?;
    Ok(n.unwrap_or(0).max(0))
}

/// Insert the event at stream position `stream` (`None` for an outlier). See
/// [`insert_many`]; returns false when a non-outlier was already there.
pub async fn insert(
    tx: &mut PgConnection,
    e: &NewEvent<'_>,
    stream: Option<i64>,
) -> Result<bool, sqlx::Error> {
    Ok(!insert_many(tx, std::slice::from_ref(e), &[stream])
        .await?
        .is_empty())
}

/// Insert events, each at its stream position (`None` for an outlier), in one statement. An
/// outlier already stored under the same number is replaced: the event has now been placed in
/// the timeline. Returns the numbers actually written (an event already in the timeline is
/// left as it was, and absent from the answer).
pub async fn insert_many(
    tx: &mut PgConnection,
    events: &[NewEvent<'_>],
    streams: &[Option<i64>],
) -> Result<HashSet<i64>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let col = |f: fn(&NewEvent<'_>) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    // The room's bump stamp moves in the same statement (see `room_bump_stamps`).
    let rows: Vec<(i64,)> = sqlx::query_as(
        "WITH written AS (
             INSERT INTO events (event_nid, room_nid, event_type, state_key_nid, sender,
                                 origin_server_ts, depth, stream_ordering, json, outlier,
                                 rejected_reason, soft_failed, state_before, state_after)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                                  $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
                                  $9::text[], $10::bool[], $11::text[], $12::bool[],
                                  $13::bigint[], $14::bigint[])
             ON CONFLICT ON CONSTRAINT events_pkey DO UPDATE SET
                 stream_ordering = EXCLUDED.stream_ordering, outlier = EXCLUDED.outlier,
                 rejected_reason = EXCLUDED.rejected_reason, soft_failed = EXCLUDED.soft_failed,
                 state_before = EXCLUDED.state_before, state_after = EXCLUDED.state_after
             WHERE events.outlier AND NOT EXCLUDED.outlier
             RETURNING event_nid, room_nid, event_type, stream_ordering, outlier,
                       rejected_reason, soft_failed
         ),
         bumps AS (
             INSERT INTO room_bump_stamps (room_nid, stream)
             SELECT room_nid, max(stream_ordering) FROM written
             WHERE stream_ordering IS NOT NULL AND NOT outlier AND rejected_reason IS NULL
               AND NOT soft_failed AND event_type = ANY($15)
             GROUP BY room_nid
             ON CONFLICT (room_nid) DO UPDATE
                 SET stream = GREATEST(room_bump_stamps.stream, EXCLUDED.stream)
         )
         SELECT event_nid FROM written",
    )
    .bind(col(|e| Some(e.event_nid)))
    .bind(col(|e| Some(e.room_nid)))
    .bind(events.iter().map(|e| e.event_type).collect::<Vec<_>>())
    .bind(col(|e| e.state_key_nid))
    .bind(events.iter().map(|e| e.sender).collect::<Vec<_>>())
    .bind(col(|e| Some(e.origin_server_ts)))
    .bind(col(|e| Some(e.depth)))
    .bind(streams)
    .bind(events.iter().map(|e| e.json).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.outlier).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.rejected_reason).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.soft_failed).collect::<Vec<_>>())
    .bind(col(|e| e.state_before))
    .bind(col(|e| e.state_after))
    .bind(super::sliding::BUMP_TYPES)
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Store outliers (events known through a state or an auth chain) in one statement; events
/// already stored are left alone.
pub async fn insert_outliers(
    tx: &mut PgConnection,
    events: &[NewEvent<'_>],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewEvent<'_>) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    let nids = col(|e| Some(e.event_nid));
    let rooms = col(|e| Some(e.room_nid));
    let keys = col(|e| e.state_key_nid);
    let ts = col(|e| Some(e.origin_server_ts));
    let depths = col(|e| Some(e.depth));
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let senders: Vec<&str> = events.iter().map(|e| e.sender).collect();
    let jsons: Vec<&str> = events.iter().map(|e| e.json).collect();
    let rejected: Vec<Option<&str>> = events.iter().map(|e| e.rejected_reason).collect();
    sqlx::query(
        "INSERT INTO events (event_nid, room_nid, event_type, state_key_nid, sender,
                             origin_server_ts, depth, json, outlier, rejected_reason)
         SELECT n, r, t, k, s, ts, d, j, TRUE, rj
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::text[], $9::text[])
              AS x(n, r, t, k, s, ts, d, j, rj)
         ON CONFLICT DO NOTHING",
    )
    .bind(&nids)
    .bind(&rooms)
    .bind(&types)
    .bind(&keys)
    .bind(&senders)
    .bind(&ts)
    .bind(&depths)
    .bind(&jsons)
    .bind(&rejected)
    .execute(tx)
    .await?;
    Ok(())
}

/// Auth edges of many events at once (outliers stored together).
pub async fn insert_auth_edges_many(
    tx: &mut PgConnection,
    edges: &[(i64, i64)],
) -> Result<(), sqlx::Error> {
    let from: Vec<i64> = edges.iter().map(|e| e.0).collect();
    let to: Vec<i64> = edges.iter().map(|e| e.1).collect();
    sqlx::query(
        "INSERT INTO event_auth_edges (event_nid, auth_event_nid)
         SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING",
    )
    .bind(&from)
    .bind(&to)
    .execute(tx)
    .await?;
    Ok(())
}

/// Events by ID (those we have), in no particular order.
pub async fn by_ids(e: impl PgExecutor<'_>, ids: &[&str]) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_EVENT} WHERE i.event_id = ANY($1)"))
        .bind(ids)
        .fetch_all(e)
        .await
}

/// The auth chains of several sets of events in one walk: for each `(set, event_nid)` root,
/// every event reachable over auth edges, as `(set, event_nid)` pairs (roots excluded unless
/// reachable). At most `cap` rows.
pub async fn auth_chains(
    e: impl PgExecutor<'_>,
    sets: &[i32],
    roots: &[i64],
    cap: i64,
) -> Result<Vec<(i32, i64)>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE chain(set_no, nid) AS (
             SELECT r.s, a.auth_event_nid
             FROM unnest($1::int[], $2::bigint[]) AS r(s, n)
             JOIN event_auth_edges a ON a.event_nid = r.n
             UNION
             SELECT c.set_no, a.auth_event_nid
             FROM chain c JOIN event_auth_edges a ON a.event_nid = c.nid
         )
         SELECT set_no, nid FROM chain LIMIT $3",
    )
    .bind(sets)
    .bind(roots)
    .bind(cap)
    .fetch_all(e)
    .await
}

/// The forward extremities with their event IDs and depths.
pub async fn forward_extremities(
    e: impl PgExecutor<'_>,
    room_nid: i64,
) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.event_nid, i.event_id, e.depth FROM forward_extremities f
         JOIN event_ids i USING (event_nid) JOIN events e USING (event_nid)
         WHERE f.room_nid = $1 ORDER BY e.depth DESC, f.event_nid DESC",
    )
    .bind(room_nid)
    .fetch_all(e)
    .await
}

pub async fn by_id(
    e: impl PgExecutor<'_>,
    event_id: &str,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_EVENT} WHERE i.event_id = $1"))
        .bind(event_id)
        .fetch_optional(e)
        .await
}

/// The client transaction IDs `user_id`'s device `device_id` sent these of `nids` with:
/// (event, transaction ID).
pub async fn transaction_ids(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    nids: &[i64],
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_nid, txn_id FROM event_txn_ids
         WHERE event_nid = ANY($1) AND user_id = $2 AND device_id = $3",
    )
    .bind(nids)
    .bind(user_id)
    .bind(device_id)
    .fetch_all(e)
    .await
}

/// Events by number, in no particular order.
pub async fn by_nids(
    e: impl PgExecutor<'_>,
    nids: &[i64],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_EVENT} WHERE e.event_nid = ANY($1)"))
        .bind(nids)
        .fetch_all(e)
        .await
}

/// One page of a room's timeline in topological order, strictly after (`forward`) or before
/// the position `(depth, stream)`. Rejected and soft-failed events are never returned.
pub async fn timeline_page(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    from: (i64, i64),
    forward: bool,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    static SQL: LazyLock<[String; 2]> =
        LazyLock::new(|| [false, true].map(|forward| page_sql("$1", forward)));
    sqlx::query_as(&SQL[usize::from(forward)])
        .bind(room_nid)
        .bind(from.0)
        .bind(from.1)
        .bind(limit)
        .fetch_all(e)
        .await
}

/// A room, a reader's membership in it and a page of its timeline (see [`timeline_page`]),
/// read together: what a client's /messages needs, in one round trip. `None` for an
/// unknown room. The page is read whether or not the reader may see it; the caller checks.
pub struct ReaderPage {
    pub room: RoomRow,
    pub membership: Option<MembershipState>,
    pub events: Vec<StoredEvent>,
}

pub async fn reader_page(
    e: impl PgExecutor<'_>,
    room_id: &str,
    user_id: &str,
    from: (i64, i64),
    forward: bool,
    limit: i64,
) -> Result<Option<ReaderPage>, sqlx::Error> {
    let rows = sqlx::query(reader_page_sql(forward))
        .bind(room_id)
        .bind(from.0)
        .bind(from.1)
        .bind(limit)
        .bind(user_id)
        .fetch_all(e)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let room = RoomRow::from_row(first)?;
    let membership = first
        .try_get::<Option<String>, _>("membership")?
        .map(MembershipState::from);
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        // A room with nothing on this side of `from` comes as one row without an event.
        if row.try_get::<Option<i64>, _>("event_nid")?.is_some() {
            events.push(StoredEvent::from_row(row)?);
        }
    }
    Ok(Some(ReaderPage {
        room,
        membership,
        events,
    }))
}

/// The statement of [`reader_page`], built once per direction. The event's room_nid is the
/// room's (read from the room's columns: the page's may be null when the page is empty).
fn reader_page_sql(forward: bool) -> &'static str {
    static SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
        [false, true].map(|forward| {
            let order = if forward { "ASC" } else { "DESC" };
            format!(
                "SELECT r.room_nid, r.room_id, r.room_version, r.state_group, r.is_public,
                        m.membership, p.event_nid, p.event_id, p.event_type, p.sender, p.depth,
                        p.stream_ordering, p.origin_server_ts, p.json, p.rejected_reason,
                        p.soft_failed, p.outlier, p.redacted_by, p.state_before, p.state_after
                 FROM rooms r
                 LEFT JOIN room_members m ON m.room_nid = r.room_nid AND m.user_id = $5
                 LEFT JOIN LATERAL ({}) p ON true
                 WHERE r.room_id = $1
                 ORDER BY p.depth {order}, p.stream_ordering {order}",
                page_sql("r.room_nid", forward)
            )
        })
    });
    &SQL[usize::from(forward)]
}

/// A page of the timeline of `room` (an SQL expression for its number, `$1`), from the
/// position `($2, $3)` in topological order, at most `$4` events.
fn page_sql(room: &str, forward: bool) -> String {
    let (cmp, order) = if forward { (">", "ASC") } else { ("<", "DESC") };
    format!(
        "{SELECT_EVENT}
         WHERE e.room_nid = {room} AND e.stream_ordering IS NOT NULL AND NOT e.outlier
           AND (e.depth, e.stream_ordering) {cmp} ($2, $3)
           AND e.rejected_reason IS NULL AND NOT e.soft_failed
         ORDER BY e.depth {order}, e.stream_ordering {order}
         LIMIT $4"
    )
}

/// (depth, stream) of the room's last timeline event at or before stream position `at`.
pub async fn last_at_stream(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    at: i64,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.depth, e.stream_ordering FROM events e
         WHERE e.room_nid = $1 AND e.stream_ordering IS NOT NULL AND NOT e.outlier
           AND e.stream_ordering <= $2
         ORDER BY e.stream_ordering DESC
         LIMIT 1",
    )
    .bind(room_nid)
    .bind(at)
    .fetch_optional(e)
    .await
}

/// Every timeline m.room.member event about `user_id` in the room (a user has few).
pub async fn member_events_of(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT_EVENT}
         JOIN state_keys k ON k.state_key_nid = e.state_key_nid
         WHERE e.room_nid = $1 AND k.event_type = 'm.room.member' AND k.state_key = $2
           AND e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL"
    ))
    .bind(room_nid)
    .bind(user_id)
    .fetch_all(e)
    .await
}

/// (state_key_nid, event_nid) of the stored, unrejected state events among `ids` (one per
/// key: the last listed wins, as a state map holds one event per key).
pub async fn state_entries_of(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    ids: &[&str],
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (e.state_key_nid) e.state_key_nid, e.event_nid
         FROM events e JOIN event_ids i USING (event_nid)
         WHERE i.event_id = ANY($2) AND e.room_nid = $1 AND e.state_key_nid IS NOT NULL
           AND e.rejected_reason IS NULL
         ORDER BY e.state_key_nid, e.event_nid DESC",
    )
    .bind(room_nid)
    .bind(ids)
    .fetch_all(e)
    .await
}

/// IDs of the room's backward extremities (referenced, not stored).
pub async fn backward_extremity_ids(
    e: impl PgExecutor<'_>,
    room_nid: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT i.event_id FROM backward_extremities b JOIN event_ids i USING (event_nid)
         WHERE b.room_nid = $1 LIMIT 20",
    )
    .bind(room_nid)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

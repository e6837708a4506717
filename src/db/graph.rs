//! Walks over the event graph: /backfill and /get_missing_events for other servers, the
//! conflicted state subgraph for state resolution. Each is one recursive query bounded by
//! depth or by a row cap, never a query per event.

use sqlx::PgExecutor;

use super::events::StoredEvent;

/// Most rows one walk may visit before it stops.
const WALK_CAP: i64 = 20_000;

/// The events `from` (included) and those before them over prev_events, newest first (by
/// depth), at most `limit`. The walk stops `limit` depths below the highest start.
pub async fn backfill(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    from: &[i64],
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE bound AS (
             SELECT COALESCE(max(depth), 0) - $3 AS min_depth FROM events
             WHERE event_nid = ANY($2) AND room_nid = $1
         ),
         walk(nid) AS (
             SELECT e.event_nid FROM events e
             WHERE e.event_nid = ANY($2) AND e.room_nid = $1
             UNION
             SELECT ed.prev_event_nid FROM walk w
             JOIN event_edges ed ON ed.event_nid = w.nid
             JOIN events p ON p.event_nid = ed.prev_event_nid
             WHERE p.room_nid = $1 AND p.depth >= (SELECT min_depth FROM bound)
         )
         SELECT e.event_nid, i.event_id, e.room_nid, e.event_type, e.sender, e.depth,
                e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason, e.soft_failed,
                e.outlier, e.redacted_by, e.state_before, e.state_after
         FROM (SELECT nid FROM walk LIMIT $4) w
         JOIN events e ON e.event_nid = w.nid JOIN event_ids i ON i.event_nid = e.event_nid
         WHERE NOT e.outlier AND e.rejected_reason IS NULL
         ORDER BY e.depth DESC, e.stream_ordering DESC NULLS LAST
         LIMIT $3",
    )
    .bind(room_nid)
    .bind(from)
    .bind(limit)
    .bind(WALK_CAP)
    .fetch_all(e)
    .await
}

/// Ancestors of `latest` (excluded) that are not `earliest` nor reached through them, with
/// depth >= `min_depth`: the nearest `limit` to `latest`, returned oldest first.
///
/// The nearest `limit` by depth all lie less than `limit` below the deepest of `latest`
/// (following each event's deepest prev event steps down one depth at a time, so that window
/// holds at least `limit` ancestors): the walk stays inside it, however far `earliest` is or
/// whether it is in the room at all.
pub async fn missing_events(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    earliest: &[i64],
    latest: &[i64],
    min_depth: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut rows: Vec<StoredEvent> = sqlx::query_as(
        "WITH RECURSIVE floor AS (
             SELECT GREATEST($4, COALESCE(max(depth), 0) - $5) AS depth
             FROM events WHERE event_nid = ANY($2)
         ),
         walk(nid) AS (
             SELECT ed.prev_event_nid FROM event_edges ed
             WHERE ed.event_nid = ANY($2) AND NOT (ed.prev_event_nid = ANY($3))
             UNION
             SELECT ed.prev_event_nid FROM walk w
             JOIN event_edges ed ON ed.event_nid = w.nid
             JOIN events p ON p.event_nid = ed.prev_event_nid
             WHERE p.room_nid = $1 AND p.depth >= (SELECT depth FROM floor)
               AND NOT (ed.prev_event_nid = ANY($3))
         )
         SELECT e.event_nid, i.event_id, e.room_nid, e.event_type, e.sender, e.depth,
                e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason, e.soft_failed,
                e.outlier, e.redacted_by, e.state_before, e.state_after
         FROM (SELECT nid FROM walk LIMIT $6) w
         JOIN events e ON e.event_nid = w.nid JOIN event_ids i ON i.event_nid = e.event_nid
         WHERE e.room_nid = $1 AND NOT e.outlier AND e.depth >= $4
           AND NOT (e.event_nid = ANY($2))
         ORDER BY e.depth DESC, e.stream_ordering DESC NULLS LAST
         LIMIT $5",
    )
    .bind(room_nid)
    .bind(latest)
    .bind(earliest)
    .bind(min_depth)
    .bind(limit)
    .bind(WALK_CAP)
    .fetch_all(e)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// Event numbers of IDs we know (unknown IDs are left out).
pub async fn nids_of(
    e: impl PgExecutor<'_>,
    ids: &[&str],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT event_id, event_nid FROM event_ids WHERE event_id = ANY($1)")
        .bind(ids)
        .fetch_all(e)
        .await
}

/// Event IDs of numbers.
pub async fn ids_of(e: impl PgExecutor<'_>, nids: &[i64]) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT event_id FROM event_ids WHERE event_nid = ANY($1)")
            .bind(nids)
            .fetch_all(e)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Which of `ids` have a stored event (outliers included).
pub async fn stored_ids(e: impl PgExecutor<'_>, ids: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT i.event_id FROM event_ids i JOIN events e USING (event_nid) WHERE i.event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Whether history we lack lies right next to the event: before it (one of its prev_events
/// is a backward extremity) or after it. False for an event we do not know.
pub async fn next_to_gap(e: impl PgExecutor<'_>, event_id: &str) -> Result<bool, sqlx::Error> {
    // Before it: it cites an event we lack. After it: nothing stored in the timeline cites it,
    // yet it is not a forward extremity (history fetched by itself, its successors unknown).
    let row: Option<(bool,)> = sqlx::query_as(
        "SELECT EXISTS (
                    SELECT 1 FROM event_edges ed
                    JOIN backward_extremities b ON b.event_nid = ed.prev_event_nid
                    WHERE ed.event_nid = i.event_nid)
                OR (NOT EXISTS (
                        SELECT 1 FROM event_edges ed
                        JOIN events c ON c.event_nid = ed.event_nid AND NOT c.outlier
                        WHERE ed.prev_event_nid = i.event_nid)
                    AND NOT EXISTS (
                        SELECT 1 FROM forward_extremities f WHERE f.event_nid = i.event_nid))
         FROM event_ids i WHERE i.event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(e)
    .await?;
    Ok(row.is_some_and(|r| r.0))
}

/// The conflicted state subgraph of state resolution v2.1 (room version 12): the events on
/// some auth-event path between two of `conflicted` (those included), found as the
/// descendants of `conflicted` among their ancestors. `also_from`: extra starting points of
/// the ancestor walk (the auth events of a conflicted event not stored yet). The ancestor
/// walk visits at most `cap` events; the second value is whether it stopped there, when
/// the answer would be incomplete.
pub async fn conflicted_subgraph(
    e: impl PgExecutor<'_>,
    conflicted: &[i64],
    also_from: &[i64],
    cap: i64,
) -> Result<(Vec<i64>, bool), sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "WITH RECURSIVE up(nid) AS (
             SELECT n FROM unnest($1::bigint[] || $2::bigint[]) AS n
             UNION
             SELECT a.auth_event_nid FROM up JOIN event_auth_edges a ON a.event_nid = up.nid
         ),
         ancestors AS MATERIALIZED (SELECT nid FROM up LIMIT $3),
         down(nid) AS (
             SELECT n FROM unnest($1::bigint[]) AS n
             UNION
             SELECT a.event_nid FROM down d
             JOIN event_auth_edges a ON a.auth_event_nid = d.nid
             JOIN ancestors x ON x.nid = a.event_nid
         )
         SELECT nid, (SELECT count(*) FROM ancestors) FROM down",
    )
    .bind(conflicted)
    .bind(also_from)
    .bind(cap)
    .fetch_all(e)
    .await?;
    let truncated = rows.first().is_some_and(|r| r.1 >= cap);
    Ok((rows.into_iter().map(|r| r.0).collect(), truncated))
}

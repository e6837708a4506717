//! Server-side search over room events (`POST /search`), through the expression index of
//! migration 0015: `events_search_idx` holds each message, name and topic event's words and
//! a word naming its room, so a search ANDs the term with the searcher's rooms inside the
//! index and reads only rows that match both.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Postgres, Row};

use super::events::StoredEvent;
use super::rooms::RoomRow;

/// At most this many of the newest matches are ranked for `order_by: rank`: ranking reads
/// every candidate's text again, so the cost of a search is bounded here, not by how common
/// its words are. Their count is still reported whole.
pub const RANK_CANDIDATES: i64 = 10_000;

/// A room a user may search: joined, or left (or banned) and not forgotten, in which case only
/// events up to their departure (`until`, a stream position) are theirs to find.
#[derive(Debug, Clone)]
pub struct SearchableRoom {
    pub room: RoomRow,
    pub until: Option<i64>,
}

/// The rooms `user_id` may search. A departure that is not in the timeline (an invite
/// rejected or withdrawn out of band) gives no room: its user never saw the room.
pub async fn searchable_rooms(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<SearchableRoom>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.room_nid, r.room_id, r.room_version, r.state_group, r.is_public,
                CASE WHEN m.membership = 'join' THEN NULL ELSE e.stream_ordering END AS until
         FROM room_members m
         JOIN rooms r ON r.room_nid = m.room_nid
         JOIN events e ON e.event_nid = m.event_nid
         WHERE m.user_id = $1 AND NOT m.forgotten
           AND (m.membership = 'join'
                OR (m.membership IN ('leave', 'ban') AND e.stream_ordering IS NOT NULL))",
    )
    .bind(user_id)
    .fetch_all(e)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SearchableRoom {
                room: RoomRow::from_row(row)?,
                until: row.try_get("until")?,
            })
        })
        .collect()
}

/// Where a page of results continues: after the result at this rank and stream position
/// (`rank` is that of `order_by: rank`; recent order reads only the position).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct After {
    pub rank: f32,
    pub stream: i64,
}

/// One search: the term, where to look and what to keep.
#[derive(Debug, Clone)]
pub struct EventSearch<'a> {
    pub term: &'a str,
    /// Rooms searched (numbers) and, per room, the last stream position searched in it.
    pub rooms: &'a [i64],
    pub until: &'a [Option<i64>],
    /// The event types whose keys are searched (m.room.message for `content.body`...).
    pub types: &'a [&'a str],
    /// The filter's senders (`None`: anyone) and excluded senders.
    pub senders: Option<&'a [String]>,
    pub not_senders: &'a [String],
    /// The filter's event types and excluded types, as LIKE patterns.
    pub type_patterns: Option<&'a [String]>,
    pub not_type_patterns: &'a [String],
    /// Only events with (true) or without (false) a `url` in their content.
    pub contains_url: Option<bool>,
    /// No event after this stream position is searched, so that the candidates ranked
    /// stay the same from one page to the next.
    pub upto: i64,
    /// Rank order (else recent: newest first).
    pub by_rank: bool,
    pub after: Option<After>,
    pub limit: i64,
    /// Also count every match (an approximate total for the client).
    pub count: bool,
}

/// A matching event and its rank (`ts_rank` of its words against the term).
#[derive(Debug, Clone)]
pub struct Hit {
    pub event: StoredEvent,
    pub rank: f32,
}

/// Matching events in the searched rooms, not outliers, rejected, soft-failed or redacted.
/// `$1` term, `$2`/`$3` rooms and their bounds, `$4` types, `$5` upto, `$6`..`$10` filter.
///
/// The index's matches are read on their own (`g`, which the planner cannot look through)
/// and only then bounded by room and position: with the rooms beside the index condition, the
/// generic plan Postgres settles on after five runs of the statement read every event of the
/// searched rooms through the room index and computed its words again, ten times slower
/// (0.8 s against 0.08 s, 21 rooms of 29,000 events, 3,000 matches); with the position there,
/// it ANDed the index with a scan of the whole stream index.
const MATCHES: &str = "
    WITH q AS (
        SELECT trellis_search_query($1) AS q,
               (SELECT string_agg('''!' || r || '''', ' | ') FROM unnest($2::bigint[]) AS r)::tsquery
                   AS rooms
    ),
    g AS MATERIALIZED (
        SELECT e.event_nid, e.room_nid, e.stream_ordering
        FROM q, events e
        WHERE numnode(q.q) > 0
          AND trellis_search_vector(e.room_nid, e.event_type, e.json) @@ (q.q && q.rooms)
          AND e.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
          AND e.event_type = ANY($4) AND e.stream_ordering IS NOT NULL
          AND NOT e.outlier AND e.rejected_reason IS NULL AND NOT e.soft_failed
          AND e.redacted_by IS NULL
          AND ($6::text[] IS NULL OR e.sender = ANY($6)) AND NOT (e.sender = ANY($7))
          AND ($8::text[] IS NULL OR e.event_type LIKE ANY($8))
          AND NOT (e.event_type LIKE ANY($9))
          AND ($10::bool IS NULL OR $10 = coalesce(
                  jsonb_typeof(trellis_event_content(e.json) -> 'url') = 'string', false))
    ),
    m AS MATERIALIZED (
        SELECT g.event_nid, g.stream_ordering
        FROM g JOIN unnest($2::bigint[], $3::bigint[]) AS s(room_nid, until)
             ON s.room_nid = g.room_nid
        WHERE g.stream_ordering <= $5 AND (s.until IS NULL OR g.stream_ordering <= s.until)
    )";

/// The page's rows with the count beside them; one row of NULL events when the page is empty,
/// so the count still comes back. `page` is a CTE of (event_nid, rank); the caller adds the
/// order.
const PAGE: &str = "
    SELECT c.count, p.rank, p.event_nid, p.event_id, p.room_nid, p.event_type, p.sender,
           p.depth, p.stream_ordering, p.origin_server_ts, p.json, p.rejected_reason,
           p.soft_failed, p.outlier, p.redacted_by, p.state_before, p.state_after
    FROM (SELECT CASE WHEN $11 THEN (SELECT count(*) FROM m) END AS count) c
    LEFT JOIN (
        SELECT pg.rank, e.event_nid, i.event_id, e.room_nid, e.event_type, e.sender, e.depth,
               e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason, e.soft_failed,
               e.outlier, e.redacted_by, e.state_before, e.state_after
        FROM page pg
        JOIN events e ON e.event_nid = pg.event_nid
        JOIN event_ids i ON i.event_nid = pg.event_nid
    ) p ON true";

/// A page of matches in the order asked for, after `after`, and (when asked) how many match
/// in all. One statement: the index yields the matches in the searched rooms, the newest
/// [`RANK_CANDIDATES`] of them are ranked (rank order) or the newest taken (recent order).
pub async fn search_events(
    e: impl PgExecutor<'_>,
    s: &EventSearch<'_>,
) -> Result<(Vec<Hit>, Option<i64>), sqlx::Error> {
    let sql = if s.by_rank {
        format!(
            "{MATCHES},
            cand AS (SELECT event_nid, stream_ordering FROM m
                     ORDER BY stream_ordering DESC LIMIT {RANK_CANDIDATES}),
            ranked AS (
                SELECT c.event_nid, c.stream_ordering,
                       ts_rank(trellis_search_vector(e.room_nid, e.event_type, e.json), q.q) AS rank
                FROM q, cand c JOIN events e ON e.event_nid = c.event_nid
            ),
            page AS (
                SELECT event_nid, rank FROM ranked
                WHERE $12::real IS NULL OR (rank, stream_ordering) < ($12, $13)
                ORDER BY rank DESC, stream_ordering DESC LIMIT $14
            )
            {PAGE}
            ORDER BY p.rank DESC, p.stream_ordering DESC"
        )
    } else {
        format!(
            "{MATCHES},
            newest AS (
                SELECT event_nid, stream_ordering FROM m
                WHERE $13::bigint IS NULL OR stream_ordering < $13
                ORDER BY stream_ordering DESC LIMIT $14
            ),
            page AS (
                SELECT n.event_nid,
                       ts_rank(trellis_search_vector(e.room_nid, e.event_type, e.json), q.q) AS rank
                FROM q, newest n JOIN events e ON e.event_nid = n.event_nid
            )
            {PAGE}
            ORDER BY p.stream_ordering DESC"
        )
    };
    let rows = sqlx::query::<Postgres>(&sql)
        .bind(s.term)
        .bind(s.rooms)
        .bind(s.until)
        .bind(s.types)
        .bind(s.upto)
        .bind(s.senders)
        .bind(s.not_senders)
        .bind(s.type_patterns)
        .bind(s.not_type_patterns)
        .bind(s.contains_url)
        .bind(s.count)
        .bind(s.after.map(|a| a.rank))
        .bind(s.after.map(|a| a.stream))
        .bind(s.limit)
        .fetch_all(e)
        .await?;
    let count = match rows.first() {
        Some(row) => row.try_get("count")?,
        None => None,
    };
    let mut hits = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(rank) = row.try_get::<Option<f32>, _>("rank")? {
            hits.push(hit(row, rank)?);
        }
    }
    Ok((hits, count))
}

fn hit(row: &PgRow, rank: f32) -> Result<Hit, sqlx::Error> {
    Ok(Hit {
        event: StoredEvent::from_row(row)?,
        rank,
    })
}

/// `ts_headline` of each text against the term, with `options` (one per text: the
/// selectors marking matched words differ by text, see `room::search`), in order.
pub async fn headlines(
    e: impl PgExecutor<'_>,
    term: &str,
    texts: &[String],
    options: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT ts_headline('pg_catalog.english', x.t, trellis_search_query($1), x.o)
         FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(t, o, n)
         ORDER BY x.n",
    )
    .bind(term)
    .bind(texts)
    .bind(options)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0.unwrap_or_default()).collect())
}

//! The `event_relations` table: which events relate to which (written by the append path),
//! read for /relations, /threads and the aggregations bundled into served events. Only
//! children a client may be shown count: in the timeline, neither rejected nor soft-failed.

use std::collections::HashMap;

use sqlx::PgExecutor;

use super::events::{SELECT_EVENT, StoredEvent};

/// Which children of a parent a page holds.
pub struct ChildFilter<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// How many levels of relations to follow below the parent (1: direct children only).
    pub depth: i32,
}

/// A page of the children of `parent` in room `room_nid`, in topological order strictly
/// after (`forward`) or before `from` (depth, stream), at most `limit`; with each one's
/// level below the parent. Children of children are followed up to `filter.depth` levels
/// whatever their types; the filter picks among all the events found (MSC3981: it applies
/// to every event returned, direct or not).
pub async fn children_page(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    parent: &str,
    filter: &ChildFilter<'_>,
    from: (i64, i64),
    forward: bool,
    limit: i64,
) -> Result<Vec<(StoredEvent, i32)>, sqlx::Error> {
    let (cmp, order) = if forward { (">", "ASC") } else { ("<", "DESC") };
    let rows: Vec<ChildRow> = sqlx::query_as(&format!(
        "WITH RECURSIVE tree(event_nid, rel_type, level) AS (
             SELECT r.event_nid, r.rel_type, 1 FROM event_relations r
             WHERE r.relates_to_id = $2 AND r.room_nid = $1
             UNION
             SELECT r.event_nid, r.rel_type, t.level + 1 FROM tree t
             JOIN event_ids p ON p.event_nid = t.event_nid
             JOIN event_relations r ON r.relates_to_id = p.event_id AND r.room_nid = $1
             WHERE t.level < $5
         )
         SELECT ev.*, t.level FROM (SELECT DISTINCT ON (event_nid) event_nid, rel_type, level
                                    FROM tree ORDER BY event_nid, level) t
         JOIN LATERAL ({SELECT_EVENT} WHERE e.event_nid = t.event_nid) ev ON true
         WHERE ev.stream_ordering IS NOT NULL AND NOT ev.outlier
           AND ev.rejected_reason IS NULL AND NOT ev.soft_failed
           AND ($3::text IS NULL OR t.rel_type = $3)
           AND ($4::text IS NULL OR ev.event_type = $4)
           AND (ev.depth, ev.stream_ordering) {cmp} ($6, $7)
         ORDER BY ev.depth {order}, ev.stream_ordering {order}
         LIMIT $8"
    ))
    .bind(room_nid)
    .bind(parent)
    .bind(filter.rel_type)
    .bind(filter.event_type)
    .bind(filter.depth.max(1))
    .bind(from.0)
    .bind(from.1)
    .bind(limit)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| (r.event, r.level)).collect())
}

#[derive(sqlx::FromRow)]
struct ChildRow {
    #[sqlx(flatten)]
    event: StoredEvent,
    level: i32,
}

/// A thread of a room: its root's ID and the position (depth, stream) of its latest reply.
#[derive(Debug, sqlx::FromRow)]
pub struct ThreadRow {
    pub root_id: String,
    pub depth: i64,
    pub stream_ordering: i64,
}

/// A page of the threads of room `room_nid`, latest activity first, those whose latest
/// reply is strictly before `before` (depth, stream); with `participant`, only threads that
/// user started or replied in.
pub async fn threads_page(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    participant: Option<&str>,
    before: (i64, i64),
    limit: i64,
) -> Result<Vec<ThreadRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT root_id, depth, stream_ordering FROM (
             SELECT DISTINCT ON (r.relates_to_id) r.relates_to_id AS root_id, c.depth,
                    c.stream_ordering
             FROM event_relations r JOIN events c ON c.event_nid = r.event_nid
             WHERE r.room_nid = $1 AND r.rel_type = 'm.thread'
               AND c.stream_ordering IS NOT NULL AND NOT c.outlier
               AND c.rejected_reason IS NULL AND NOT c.soft_failed AND c.redacted_by IS NULL
             ORDER BY r.relates_to_id, c.depth DESC, c.stream_ordering DESC
         ) t
         WHERE (depth, stream_ordering) < ($3, $4)
           AND ($2::text IS NULL
                OR EXISTS (SELECT 1 FROM event_ids i JOIN events root USING (event_nid)
                           WHERE i.event_id = t.root_id AND root.sender = $2)
                OR EXISTS (SELECT 1 FROM event_relations r JOIN events c USING (event_nid)
                           WHERE r.relates_to_id = t.root_id AND r.rel_type = 'm.thread'
                             AND r.room_nid = $1 AND c.sender = $2
                             AND c.rejected_reason IS NULL AND NOT c.soft_failed))
         ORDER BY depth DESC, stream_ordering DESC
         LIMIT $5",
    )
    .bind(room_nid)
    .bind(participant)
    .bind(before.0)
    .bind(before.1)
    .bind(limit)
    .fetch_all(e)
    .await
}

/// A parent a served event may have aggregations for: its ID, sender and type (an edit
/// counts only from the same sender, with the same type).
pub struct Parent<'a> {
    pub event_id: &'a str,
    pub sender: &'a str,
    pub event_type: &'a str,
}

/// The aggregations of some parents, as stored.
#[derive(Debug, Default)]
pub struct Aggregations {
    /// Per thread root: replies, whether the viewer sent one, the latest reply.
    pub threads: HashMap<String, (i64, bool, i64)>,
    /// Per edited event: the edit that wins (latest `origin_server_ts`, then highest ID).
    pub edits: HashMap<String, i64>,
    /// Per referenced event: the IDs of the events referencing it, in topological order.
    pub references: HashMap<String, Vec<String>>,
}

/// One aggregate of one parent: (parent, relation type, count, viewer participated,
/// chosen event, referencing IDs).
type AggregateRow = (String, String, i64, bool, Option<i64>, Option<Vec<String>>);

/// The aggregations of `parents` in one statement: thread summaries, the winning edit,
/// references. Children redacted, rejected, soft-failed or outside the timeline are not
/// counted; `viewer` is who `participated` is about.
pub async fn aggregations(
    e: impl PgExecutor<'_>,
    parents: &[Parent<'_>],
    viewer: &str,
) -> Result<Aggregations, sqlx::Error> {
    let mut out = Aggregations::default();
    if parents.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = parents.iter().map(|p| p.event_id).collect();
    let senders: Vec<&str> = parents.iter().map(|p| p.sender).collect();
    let types: Vec<&str> = parents.iter().map(|p| p.event_type).collect();
    let rows: Vec<AggregateRow> = sqlx::query_as(
        "WITH p AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS p(id, sender, kind)
             ),
             c AS (
                 SELECT p.id AS parent, p.sender AS parent_sender, p.kind AS parent_kind,
                        r.rel_type, e.event_nid, e.sender, e.event_type, e.depth,
                        e.stream_ordering, e.origin_server_ts, i.event_id,
                        e.state_key_nid IS NULL AS plain
                 FROM p
                 JOIN event_relations r ON r.relates_to_id = p.id
                      AND r.rel_type IN ('m.thread', 'm.replace', 'm.reference')
                 JOIN events e ON e.event_nid = r.event_nid
                 JOIN event_ids i ON i.event_nid = e.event_nid
                 WHERE e.stream_ordering IS NOT NULL AND NOT e.outlier
                   AND e.rejected_reason IS NULL AND NOT e.soft_failed
                   AND e.redacted_by IS NULL
             )
             SELECT parent, 'm.thread', count(*), bool_or(sender = $4),
                    (array_agg(event_nid ORDER BY depth DESC, stream_ordering DESC))[1],
                    NULL::text[]
             FROM c WHERE rel_type = 'm.thread' GROUP BY parent
             UNION ALL
             SELECT parent, 'm.replace', 0, false,
                    (array_agg(event_nid ORDER BY origin_server_ts DESC, event_id DESC))[1],
                    NULL
             FROM c
             WHERE rel_type = 'm.replace' AND plain AND sender = parent_sender
               AND event_type = parent_kind
             GROUP BY parent
             UNION ALL
             SELECT parent, 'm.reference', count(*), false, NULL,
                    array_agg(event_id ORDER BY depth, stream_ordering)
             FROM c WHERE rel_type = 'm.reference' GROUP BY parent",
    )
    .bind(&ids)
    .bind(&senders)
    .bind(&types)
    .bind(viewer)
    .fetch_all(e)
    .await?;
    for (parent, rel_type, count, participated, latest, referencing) in rows {
        match (rel_type.as_str(), latest, referencing) {
            ("m.thread", Some(latest), _) => {
                out.threads.insert(parent, (count, participated, latest));
            }
            ("m.replace", Some(latest), _) => {
                out.edits.insert(parent, latest);
            }
            ("m.reference", _, Some(ids)) => {
                out.references.insert(parent, ids);
            }
            _ => {}
        }
    }
    Ok(out)
}

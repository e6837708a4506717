//! The `receipts` table, plus the room-sharing lookups that presence visibility needs (they
//! belong to the ephemeral domain, whose only SQL lives here).

use sqlx::PgExecutor;

/// A stored receipt, as /sync hands it out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    pub room_nid: i64,
    pub user_id: String,
    pub receipt_type: String,
    /// '' for unthreaded.
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

/// Store a user's receipt, replacing their previous one of that type and thread, and move
/// it to the head of the stream. Returns its stream position.
#[allow(clippy::too_many_arguments)]
pub async fn upsert(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
    receipt_type: &str,
    thread_id: &str,
    event_id: &str,
    ts: i64,
) -> Result<i64, sqlx::Error> {
    let (stream_id,): (i64,) = sqlx::query_as(
        "INSERT INTO receipts (room_nid, user_id, receipt_type, thread_id, event_id, ts, stream_id)
         VALUES ($1, $2, $3, $4, $5, $6, nextval('receipts_stream'))
         ON CONFLICT ON CONSTRAINT receipts_pkey DO UPDATE
         SET event_id = EXCLUDED.event_id, ts = EXCLUDED.ts, stream_id = EXCLUDED.stream_id
         RETURNING stream_id",
    )
    .bind(room_nid)
    .bind(user_id)
    .bind(receipt_type)
    .bind(thread_id)
    .bind(event_id)
    .bind(ts)
    .fetch_one(e)
    .await?;
    Ok(stream_id)
}

/// The highest committed receipt position. Read from the table rather than the sequence: a
/// sequence value is taken before its row commits, and a reader must not move past a row it
/// cannot see yet (writers are serialized by the caller, so rows commit in stream order).
pub async fn max_stream(e: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    let (n,): (Option<i64>,) = sqlx::query_as("SELECT max(stream_id) FROM receipts")
        .fetch_one(e)
        .await?;
    Ok(n.unwrap_or(0))
}

/// Receipts of the given rooms with positions in (`after`, `upto`], in one query across
/// rooms. Private receipts are only returned for `viewer`.
pub async fn since(
    e: impl PgExecutor<'_>,
    room_nids: &[i64],
    viewer: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<ReceiptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_nid, user_id, receipt_type, thread_id, event_id, ts FROM receipts
         WHERE room_nid = ANY($1) AND stream_id > $3 AND stream_id <= $4
           AND (receipt_type <> 'm.read.private' OR user_id = $2)
         ORDER BY room_nid, stream_id",
    )
    .bind(room_nids)
    .bind(viewer)
    .bind(after)
    .bind(upto)
    .fetch_all(e)
    .await
}

/// Whether `event_id` is an event of the room that clients can see (not an outlier, not
/// rejected): receipts may only point at those.
pub async fn event_in_room(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    let (found,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (
            SELECT 1 FROM event_ids i JOIN events e USING (event_nid)
            WHERE i.event_id = $1 AND e.room_nid = $2 AND NOT e.outlier
              AND e.rejected_reason IS NULL)",
    )
    .bind(event_id)
    .bind(room_nid)
    .fetch_one(e)
    .await?;
    Ok(found)
}

/// Which of `candidates` share a joined room with `user` (presence is visible to them).
pub async fn sharing_a_room(
    e: impl PgExecutor<'_>,
    user: &str,
    candidates: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT theirs.user_id
         FROM room_members mine JOIN room_members theirs USING (room_nid)
         WHERE mine.user_id = $1 AND mine.membership = 'join'
           AND theirs.user_id = ANY($2) AND theirs.membership = 'join'",
    )
    .bind(user)
    .bind(candidates)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

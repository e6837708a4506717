//! Read-side look-ups for member lists, event context and `/timestamp_to_event`: positions
//! in a room's timeline turned into state groups, and events found by timestamp.

use ruma::events::room::member::MembershipState;
use sqlx::PgExecutor;

/// The state group in force at the topological position `at` (a pagination token's
/// `(depth, stream)`): the state before the event at exactly that position, or else the state
/// after the nearest timeline event before it. `None` when no event lies at or before `at`.
///
/// A backward page of `/messages` (and a sync `prev_batch`) hands out the position of the
/// oldest event it returned, meaning "just before it", so the event at the position itself
/// is not yet counted.
pub async fn state_group_at(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    at: (i64, i64),
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT CASE WHEN (depth, stream_ordering) = ($2, $3) THEN state_before ELSE state_after END
         FROM events
         WHERE room_nid = $1 AND stream_ordering IS NOT NULL AND NOT outlier
           AND (depth, stream_ordering) <= ($2, $3)
           AND rejected_reason IS NULL AND NOT soft_failed
         ORDER BY depth DESC, stream_ordering DESC
         LIMIT 1",
    )
    .bind(room_nid)
    .bind(at.0)
    .bind(at.1)
    .fetch_optional(e)
    .await?;
    Ok(row.and_then(|r| r.0))
}

/// A user's current membership in a room with the position of the event that set it and
/// the state after that event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipAt {
    #[sqlx(try_from = "String")]
    pub membership: MembershipState,
    pub depth: i64,
    pub stream_ordering: Option<i64>,
    pub state_after: Option<i64>,
    /// The user left and then forgot the room.
    pub forgotten: bool,
}

pub async fn membership_at(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
) -> Result<Option<MembershipAt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.membership, e.depth, e.stream_ordering, e.state_after, m.forgotten
         FROM room_members m JOIN events e ON e.event_nid = m.event_nid
         WHERE m.room_nid = $1 AND m.user_id = $2",
    )
    .bind(room_nid)
    .bind(user_id)
    .fetch_optional(e)
    .await
}

/// The timeline event nearest to `ts`: the earliest at or after it (`forward`) or the latest
/// at or before it, as (event_id, origin_server_ts). Rejected, soft-failed and outlier events
/// are skipped. One range scan on `events_room_ts_idx`; ties go to the earlier (forward) or
/// later (backward) stream position.
pub async fn event_near_ts(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    ts: i64,
    forward: bool,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let (cmp, order) = if forward {
        (">=", "ASC")
    } else {
        ("<=", "DESC")
    };
    let sql = format!(
        "SELECT i.event_id, e.origin_server_ts
         FROM events e JOIN event_ids i USING (event_nid)
         WHERE e.room_nid = $1 AND e.origin_server_ts {cmp} $2
           AND e.stream_ordering IS NOT NULL AND NOT e.outlier
           AND e.rejected_reason IS NULL AND NOT e.soft_failed
         ORDER BY e.origin_server_ts {order}, e.stream_ordering {order}
         LIMIT 1"
    );
    sqlx::query_as(&sql)
        .bind(room_nid)
        .bind(ts)
        .fetch_optional(e)
        .await
}

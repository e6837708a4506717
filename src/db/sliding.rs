//! Queries for simplified sliding sync (MSC4186): the user's rooms with their bump stamps,
//! timelines and state changes of many rooms at once (each room with its own bounds), and
//! the per-connection state (`sliding_connections`, `sliding_positions`).

use ruma::events::room::member::MembershipState;
use sqlx::PgExecutor;
use sqlx::types::Json;

use super::events::StoredEvent;

/// The event types that move a room up sliding sync's lists (MSC4186's defaults, as Synapse
/// has them), besides the user's own membership: messages and the like, not state changes.
/// The append path keeps each room's latest in `room_bump_stamps` (migration 0020 wrote it
/// for the rooms stored before, with this list as it was then).
pub const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "org.matrix.msc3381.poll.start",
    "m.beacon_info",
    "org.matrix.msc3672.beacon_info",
];

/// A room the user has a membership in, with its recency.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SlidingRoom {
    pub room_nid: i64,
    pub room_id: String,
    #[sqlx(try_from = "String")]
    pub room_version: ruma::RoomVersionId,
    #[sqlx(try_from = "String")]
    pub membership: MembershipState,
    pub member_event_nid: i64,
    /// Who sent the user's membership event (for an invite, the inviter).
    pub member_sender: String,
    /// Stream position of the user's membership event.
    pub member_stream: i64,
    /// The room's current state group.
    pub state_group: Option<i64>,
    /// The state right after the user's membership event (for a former member, the state
    /// they may still read).
    pub member_state_after: Option<i64>,
    pub forgotten: bool,
    /// Stripped state sent by another server with an invite to a room we are not in.
    pub invite_state: Option<String>,
    /// Stream position of the room's latest event of a bump type at or before the cap (the
    /// user's own membership counts): the room's recency.
    pub bump_stamp: i64,
}

/// Every room `user_id` has a membership in, with its bump stamp: the latest event of one of
/// [`BUMP_TYPES`], or the user's own membership event, whichever is later. Events after
/// `upto`, and for a room the user is not joined to, after their membership event, do not
/// count (nothing of a room after the leave shows, not even its recency). A joined room's
/// stamp is read from `room_bump_stamps`; the room's events are searched (newest first,
/// one index probe) only when that is past `upto` (written, but not yet safe to read) or the
/// user is not joined.
///
/// `only`: just these of the user's rooms (a read patching one it made before).
pub async fn user_rooms(
    e: impl PgExecutor<'_>,
    user_id: &str,
    upto: i64,
    only: Option<&[i64]>,
) -> Result<Vec<SlidingRoom>, sqlx::Error> {
    // Two statements, so that each has a plan of its own: all of a user's rooms by the user
    // index, a few of them by the members' primary key.
    let which = match only {
        None => "m.user_id = $1",
        Some(_) => "m.user_id = $1 AND m.room_nid = ANY($4)",
    };
    let query = format!(
        "SELECT m.room_nid, r.room_id, r.room_version, m.membership,
                m.event_nid AS member_event_nid, me.sender AS member_sender,
                COALESCE(me.stream_ordering, 0) AS member_stream, r.state_group,
                me.state_after AS member_state_after, m.forgotten, m.invite_state,
                GREATEST(COALESCE(me.stream_ordering, 0), CASE
                    WHEN m.membership = 'join' AND (b.stream IS NULL OR b.stream <= $2)
                        THEN COALESCE(b.stream, 0)
                    ELSE COALESCE((
                        SELECT e.stream_ordering FROM events e
                        WHERE e.room_nid = m.room_nid AND e.stream_ordering IS NOT NULL
                          AND e.stream_ordering <= CASE WHEN m.membership = 'join' THEN $2
                                ELSE LEAST($2, COALESCE(me.stream_ordering, 0)) END
                          AND e.event_type = ANY($3) AND NOT e.outlier
                          AND e.rejected_reason IS NULL AND NOT e.soft_failed
                        ORDER BY e.stream_ordering DESC LIMIT 1), 0)
                END) AS bump_stamp
         FROM room_members m
         JOIN rooms r USING (room_nid)
         JOIN events me ON me.event_nid = m.event_nid
         LEFT JOIN room_bump_stamps b ON b.room_nid = m.room_nid
         WHERE {which}"
    );
    let q = sqlx::query_as(&query)
        .bind(user_id)
        .bind(upto)
        .bind(BUMP_TYPES);
    match only {
        Some(nids) => q.bind(nids).fetch_all(e).await,
        None => q.fetch_all(e).await,
    }
}

/// One room's bounds for a read: events with positions in (`after`, `upto`].
#[derive(Debug, Clone, Copy)]
pub struct RoomBounds {
    pub room_nid: i64,
    pub after: i64,
    pub upto: i64,
}

fn columns(bounds: &[RoomBounds]) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    (
        bounds.iter().map(|b| b.room_nid).collect(),
        bounds.iter().map(|b| b.after).collect(),
        bounds.iter().map(|b| b.upto).collect(),
    )
}

/// For each room, its newest `per_room + 1` timeline events within its bounds, newest first
/// (the extra one tells the caller the timeline is limited).
///
/// Events of the `ignored` users are left out, but for state events (spec, "Ignoring
/// Users").
pub async fn timelines(
    e: impl PgExecutor<'_>,
    bounds: &[RoomBounds],
    per_room: i64,
    ignored: &[String],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let (nids, after, upto) = columns(bounds);
    sqlx::query_as(
        "SELECT x.* FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(nid, after, upto)
         CROSS JOIN LATERAL (
            SELECT e.event_nid, i.event_id, e.room_nid, e.event_type, e.sender, e.depth,
                   e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason,
                   e.soft_failed, e.outlier, e.redacted_by, e.state_before, e.state_after
            FROM events e JOIN event_ids i USING (event_nid)
            WHERE e.room_nid = r.nid AND e.stream_ordering IS NOT NULL
              AND e.stream_ordering > r.after AND e.stream_ordering <= r.upto AND NOT e.outlier
              AND e.rejected_reason IS NULL AND NOT e.soft_failed
              AND NOT (e.sender = ANY($5) AND e.state_key_nid IS NULL)
            ORDER BY e.stream_ordering DESC
            LIMIT $4 + 1
         ) x",
    )
    .bind(&nids)
    .bind(&after)
    .bind(&upto)
    .bind(per_room)
    .bind(ignored)
    .fetch_all(e)
    .await
}

/// The rooms among `bounds` with an event in the timeline within their bounds: those whose
/// timeline, state or summary may have changed. One index probe per room.
pub async fn rooms_with_events(
    e: impl PgExecutor<'_>,
    bounds: &[RoomBounds],
) -> Result<Vec<i64>, sqlx::Error> {
    let (nids, after, upto) = columns(bounds);
    sqlx::query_scalar(
        "SELECT r.nid FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(nid, after, upto)
         WHERE EXISTS (
            SELECT 1 FROM events e
            WHERE e.room_nid = r.nid AND e.stream_ordering IS NOT NULL
              AND e.stream_ordering > r.after AND e.stream_ordering <= r.upto)",
    )
    .bind(&nids)
    .bind(&after)
    .bind(&upto)
    .fetch_all(e)
    .await
}

/// A state event with its key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyedEvent {
    #[sqlx(flatten)]
    pub event: StoredEvent,
    pub state_type: String,
    pub state_key: String,
}

/// For each room, the latest state event of each key within its bounds: what changed.
pub async fn state_changes(
    e: impl PgExecutor<'_>,
    bounds: &[RoomBounds],
) -> Result<Vec<KeyedEvent>, sqlx::Error> {
    let (nids, after, upto) = columns(bounds);
    sqlx::query_as(
        "SELECT DISTINCT ON (e.room_nid, e.state_key_nid) e.event_nid, i.event_id, e.room_nid,
                e.event_type, e.sender, e.depth, e.stream_ordering, e.origin_server_ts, e.json,
                e.rejected_reason, e.soft_failed, e.outlier, e.redacted_by, e.state_before,
                e.state_after, k.event_type AS state_type, k.state_key
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(nid, after, upto)
         JOIN events e ON e.room_nid = r.nid
         JOIN event_ids i ON i.event_nid = e.event_nid
         JOIN state_keys k ON k.state_key_nid = e.state_key_nid
         WHERE e.stream_ordering > r.after AND e.stream_ordering <= r.upto
           AND e.rejected_reason IS NULL AND NOT e.outlier AND NOT e.soft_failed
         ORDER BY e.room_nid, e.state_key_nid, e.stream_ordering DESC",
    )
    .bind(&nids)
    .bind(&after)
    .bind(&upto)
    .fetch_all(e)
    .await
}

/// A connection's position and its stored state.
pub struct Position<T> {
    pub conn_nid: i64,
    pub state: T,
    /// When the connection was last marked used.
    pub last_used_ts: i64,
}

/// The state stored at `pos`, if `pos` is a position of this user's device's connection
/// `conn_id`.
pub async fn position<T>(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    conn_id: &str,
    pos: i64,
) -> Result<Option<Position<T>>, sqlx::Error>
where
    T: serde::de::DeserializeOwned + Send + Unpin + 'static,
{
    let row: Option<(i64, Json<T>, i64)> = sqlx::query_as(
        "SELECT p.conn_nid, p.state, c.last_used_ts FROM sliding_positions p
         JOIN sliding_connections c USING (conn_nid)
         WHERE p.pos = $4 AND c.user_id = $1 AND c.device_id = $2 AND c.conn_id = $3",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(conn_id)
    .bind(pos)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|(conn_nid, state, last_used_ts)| Position {
        conn_nid,
        state: state.0,
        last_used_ts,
    }))
}

/// Start the connection afresh (a request without `pos`): its positions are dropped, so
/// none handed out before can match any more. Returns the connection's number, which stays
/// the same: fresh requests racing on one connection (a retry, two tabs) then share it, and
/// neither pulls the row from under the other (a request whose positions a racing reset
/// dropped is told `M_UNKNOWN_POS` next time, and starts again).
pub async fn reset_connection(
    tx: &mut sqlx::PgConnection,
    user_id: &str,
    device_id: &str,
    conn_id: &str,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let conn_nid: i64 = sqlx::query_scalar(
        "INSERT INTO sliding_connections (user_id, device_id, conn_id, last_used_ts)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT sliding_connections_key
             DO UPDATE SET last_used_ts = EXCLUDED.last_used_ts
         RETURNING conn_nid",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(conn_id)
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM sliding_positions WHERE conn_nid = $1")
        .bind(conn_nid)
        .execute(&mut *tx)
        .await?;
    Ok(conn_nid)
}

/// Store the connection's new position with `state` and mark the connection used, in one
/// statement (atomic on its own: a request is answered only after its position is
/// stored). Positions before `acked` (the one the client sent, which it has moved past)
/// are dropped, and beyond the newest `keep` all but `acked` (a client may retry it).
/// Returns the new position.
pub async fn save_position<T: serde::Serialize>(
    e: impl PgExecutor<'_>,
    conn_nid: i64,
    acked: Option<i64>,
    keep: i64,
    state: &T,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    // The DELETE sees the positions as they were before the INSERT: it keeps `keep - 1` of
    // them, and the new one makes `keep`. The commit does not wait for the disk
    // (`synchronous_commit` off for this statement's transaction alone): a position lost in
    // a crash only makes its client start the connection again (`M_UNKNOWN_POS`), while
    // waiting for the flush was a third of a woken request's time.
    sqlx::query_scalar(
        "WITH unflushed AS (SELECT set_config('synchronous_commit', 'off', true)),
         new AS (
             INSERT INTO sliding_positions (conn_nid, state) VALUES ($1, $2) RETURNING pos
         ),
         dropped AS (
             DELETE FROM sliding_positions
             WHERE conn_nid = $1 AND pos IS DISTINCT FROM $3 AND (
                pos < COALESCE($3, 0)
                OR pos NOT IN (SELECT pos FROM sliding_positions WHERE conn_nid = $1
                               ORDER BY pos DESC LIMIT GREATEST($4 - 1, 0)))
         ),
         used AS (
             UPDATE sliding_connections SET last_used_ts = $5 WHERE conn_nid = $1
         )
         SELECT pos FROM new, unflushed",
    )
    .bind(conn_nid)
    .bind(Json(state))
    .bind(acked)
    .bind(keep)
    .bind(now_ms)
    .fetch_one(e)
    .await
}

/// Mark the connection used now.
pub async fn touch(e: impl PgExecutor<'_>, conn_nid: i64, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sliding_connections SET last_used_ts = $2 WHERE conn_nid = $1")
        .bind(conn_nid)
        .bind(now_ms)
        .execute(e)
        .await?;
    Ok(())
}

/// Drop connections idle since before `idle_before`, and the user's least recently used
/// ones beyond `per_user`.
pub async fn expire_connections(
    e: impl PgExecutor<'_>,
    user_id: &str,
    idle_before: i64,
    per_user: i64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM sliding_connections
         WHERE last_used_ts < $2
            OR (user_id = $1 AND conn_nid NOT IN (
                SELECT conn_nid FROM sliding_connections WHERE user_id = $1
                ORDER BY last_used_ts DESC, conn_nid DESC LIMIT $3))",
    )
    .bind(user_id)
    .bind(idle_before)
    .bind(per_user)
    .execute(e)
    .await?;
    Ok(r.rows_affected())
}

//! Queries for /sync: each reads one kind of data for all of a user's rooms at once.

use ruma::events::room::member::MembershipState;
use sqlx::PgExecutor;

use super::events::StoredEvent;

/// A room the user has a membership in, with where that membership was set.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRoom {
    pub room_nid: i64,
    pub room_id: String,
    #[sqlx(try_from = "String")]
    pub room_version: ruma::RoomVersionId,
    #[sqlx(try_from = "String")]
    pub membership: MembershipState,
    pub member_event_nid: i64,
    pub member_stream: i64,
    pub state_group: Option<i64>,
    pub forgotten: bool,
    /// Stripped state sent by another server with an invite to a room we are not in.
    pub invite_state: Option<String>,
}

pub async fn user_rooms(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<UserRoom>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.room_nid, r.room_id, r.room_version, m.membership, m.event_nid AS member_event_nid,
                COALESCE(e.stream_ordering, 0) AS member_stream, r.state_group, m.forgotten,
                m.invite_state
         FROM room_members m JOIN rooms r USING (room_nid) JOIN events e ON e.event_nid = m.event_nid
         WHERE m.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(e)
    .await
}

/// Which events a timeline keeps, in SQL terms: type LIKE patterns and senders (`None`: all).
#[derive(Debug, Clone, Default)]
pub struct TimelineSelect {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    /// Users the syncing user ignores: their events are left out, except state events
    /// (spec, "Ignoring Users").
    pub ignored: Vec<String>,
}

impl TimelineSelect {
    /// Whether it keeps every event (no type or sender is left out).
    pub fn keeps_all(&self) -> bool {
        self.types.is_none()
            && self.not_types.is_empty()
            && self.senders.is_none()
            && self.not_senders.is_empty()
    }
}

/// For each room, its newest `per_room + 1` timeline events that `select` keeps, with
/// positions in (`after`, `upto`], newest first, room after room (the extra one tells the
/// caller the timeline is limited).
pub async fn recent_events(
    e: impl PgExecutor<'_>,
    room_nids: &[i64],
    after: i64,
    upto: i64,
    per_room: i64,
    select: &TimelineSelect,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    // One index scan per room, newest first, stopping at the limit: the cost follows the
    // rooms and the limit, not the length of their histories.
    sqlx::query_as(
        "SELECT x.* FROM unnest($1::bigint[]) AS r(nid)
         CROSS JOIN LATERAL (
            SELECT e.event_nid, i.event_id, e.room_nid, e.event_type, e.sender, e.depth,
                   e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason,
                   e.soft_failed, e.outlier, e.redacted_by, e.state_before, e.state_after
            FROM events e JOIN event_ids i USING (event_nid)
            WHERE e.room_nid = r.nid AND e.stream_ordering IS NOT NULL
              AND e.stream_ordering > $2 AND e.stream_ordering <= $3 AND NOT e.outlier
              AND e.rejected_reason IS NULL AND NOT e.soft_failed
              AND ($5::text[] IS NULL OR e.event_type LIKE ANY($5))
              AND NOT (e.event_type LIKE ANY($6))
              AND ($7::text[] IS NULL OR e.sender = ANY($7))
              AND NOT (e.sender = ANY($8))
              AND NOT (e.sender = ANY($9) AND e.state_key_nid IS NULL)
            ORDER BY e.stream_ordering DESC
            LIMIT $4 + 1
         ) x",
    )
    .bind(room_nids)
    .bind(after)
    .bind(upto)
    .bind(per_room)
    .bind(&select.types)
    .bind(&select.not_types)
    .bind(&select.senders)
    .bind(&select.not_senders)
    .bind(&select.ignored)
    .fetch_all(e)
    .await
}

/// State events of the given rooms with positions in (`after`, `before`), one per room, for
/// the state delta ahead of a limited timeline.
pub async fn state_events_between(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    after: i64,
    before: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (e.state_key_nid) e.event_nid, i.event_id, e.room_nid, e.event_type,
                e.sender, e.depth, e.stream_ordering, e.origin_server_ts, e.json, e.rejected_reason,
                e.soft_failed, e.outlier, e.redacted_by, e.state_before, e.state_after
         FROM events e JOIN event_ids i USING (event_nid)
         WHERE e.room_nid = $1 AND e.state_key_nid IS NOT NULL
           AND e.stream_ordering > $2 AND e.stream_ordering < $3 AND e.rejected_reason IS NULL AND NOT e.outlier
         ORDER BY e.state_key_nid, e.stream_ordering DESC",
    )
    .bind(room_nid)
    .bind(after)
    .bind(before)
    .fetch_all(e)
    .await
}

/// The user's membership in each of the rooms as of stream position `at`: (room_nid,
/// membership), rooms where they had none left out.
pub async fn memberships_at(
    e: impl PgExecutor<'_>,
    user_id: &str,
    room_nids: &[i64],
    at: i64,
) -> Result<Vec<(i64, MembershipState)>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (e.room_nid) e.room_nid,
                COALESCE(e.json::jsonb -> 'content' ->> 'membership', '')
         FROM events e JOIN state_keys k USING (state_key_nid)
         WHERE e.room_nid = ANY($1) AND k.event_type = 'm.room.member' AND k.state_key = $2
           AND e.stream_ordering <= $3 AND NOT e.outlier
           AND e.rejected_reason IS NULL AND NOT e.soft_failed
         ORDER BY e.room_nid, e.stream_ordering DESC",
    )
    .bind(room_nids)
    .bind(user_id)
    .bind(at)
    .fetch_all(e)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(nid, membership)| (nid, MembershipState::from(membership)))
        .collect())
}

/// Full state of several groups in one query: (group, state_key_nid, event_nid).
pub async fn states_of_groups(
    e: impl PgExecutor<'_>,
    groups: &[i64],
) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{}
        SELECT root, state_key_nid, event_nid FROM (
            SELECT DISTINCT ON (c.root, s.state_key_nid) c.root, s.state_key_nid, s.event_nid
            FROM chain c {}
            ORDER BY c.root, s.state_key_nid, c.lvl
        ) x",
        super::state::CHAINS,
        super::state::ENTRIES
    ))
    .bind(groups)
    .bind(super::state::MAX_CHAIN_LEN)
    .fetch_all(e)
    .await
}

/// Account data changed after `after`: (room_id or '', type, content JSON, stream_id).
pub async fn account_data_since(
    e: impl PgExecutor<'_>,
    user_id: &str,
    after: i64,
) -> Result<Vec<(String, String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_id, data_type, content::text, stream_id FROM account_data
         WHERE user_id = $1 AND stream_id > $2 ORDER BY stream_id",
    )
    .bind(user_id)
    .bind(after)
    .fetch_all(e)
    .await
}

/// The newest committed position among `user_id`'s account data. Read from the rows, not
/// the sequence: a position is drawn before its row commits, and a reader must not move
/// past a row it cannot see yet (one user's writers are serialised by
/// [`super::account_data::lock_user_stream`], so their rows commit in position order).
pub async fn max_account_data_stream(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(stream_id), 0) FROM account_data WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(e)
        .await
}

/// Joined and invited member counts of each room: (room_nid, joined, invited).
pub async fn member_counts(
    e: impl PgExecutor<'_>,
    room_nids: &[i64],
) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_nid,
                count(*) FILTER (WHERE membership = 'join'),
                count(*) FILTER (WHERE membership = 'invite')
         FROM room_members WHERE room_nid = ANY($1) GROUP BY room_nid",
    )
    .bind(room_nids)
    .fetch_all(e)
    .await
}

/// Up to `per_room` joined or invited members of each room other than `user_id`, by user ID:
/// the heroes a client names an unnamed room after.
pub async fn heroes(
    e: impl PgExecutor<'_>,
    room_nids: &[i64],
    user_id: &str,
    per_room: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_nid, user_id FROM (
            SELECT room_nid, user_id,
                   row_number() OVER (PARTITION BY room_nid ORDER BY user_id) AS n
            FROM room_members
            WHERE room_nid = ANY($1) AND membership IN ('join', 'invite') AND user_id <> $2
         ) x WHERE n <= $3",
    )
    .bind(room_nids)
    .bind(user_id)
    .bind(per_room)
    .fetch_all(e)
    .await
}

/// The committed events of the live stream with positions in (`after`, `upto`], in order, at
/// most `limit`: (position, room_nid, the user a membership event is about). Outliers
/// count: an invite from another server is one.
pub async fn stream_events(
    e: impl PgExecutor<'_>,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<(i64, i64, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.stream_ordering, e.room_nid,
                CASE WHEN e.event_type = 'm.room.member' THEN k.state_key END
         FROM events e LEFT JOIN state_keys k ON k.state_key_nid = e.state_key_nid
         WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2
         ORDER BY e.stream_ordering LIMIT $3",
    )
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(e)
    .await
}

/// The rooms `user_id` is joined to.
pub async fn joined_room_nids(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT room_nid FROM room_members WHERE user_id = $1 AND membership = 'join'",
    )
    .bind(user_id)
    .fetch_all(e)
    .await
}

//! Push actions: which stored events notify which local users (`event_push_actions`).

use serde_json::value::RawValue;
use sqlx::PgExecutor;
use sqlx::types::Json;

/// Local users joined to the room, with their displayname in the room's current state
/// (member event content) and their stored push rules, if any:
/// (user_id, displayname, push rules content), and how many members are joined.
pub async fn local_members_with_rules(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    server: &str,
) -> Result<LocalMembers, sqlx::Error> {
    // The count is an uncorrelated subquery: evaluated once, not per row.
    let rows: Vec<(String, Option<String>, StoredRules, i64)> = sqlx::query_as(
        "SELECT m.user_id, (ev.json::jsonb -> 'content' ->> 'displayname'), a.content,
                (SELECT count(*) FROM room_members WHERE room_nid = $1 AND membership = 'join')
         FROM room_members m
         JOIN events ev ON ev.event_nid = m.event_nid
         LEFT JOIN account_data a
           ON a.user_id = m.user_id AND a.room_id = '' AND a.data_type = 'm.push_rules'
         WHERE m.room_nid = $1 AND m.membership = 'join'
           AND substring(m.user_id from position(':' in m.user_id) + 1) = $2",
    )
    .bind(room_nid)
    .bind(server)
    .fetch_all(e)
    .await?;
    let joined = rows.first().map_or(0, |r| r.3);
    let members = rows
        .into_iter()
        .map(|(user, name, rules, _)| (user, name, rules))
        .collect();
    Ok(LocalMembers { members, joined })
}

/// A user's stored push rules (account data), if any.
pub type StoredRules = Option<Json<Box<RawValue>>>;

/// The room's local joined members with their display names and stored push rules, and
/// the number of joined members (push rules' member_count condition).
pub struct LocalMembers {
    pub members: Vec<(String, Option<String>, StoredRules)>,
    pub joined: i64,
}

/// The stream position of the newest read receipt (public or private) of user `$1` that
/// covers the push action `a` (unthreaded, or of `a`'s thread), 0 without one.
const READ_UPTO: &str = "COALESCE((
        SELECT max(e.stream_ordering) FROM receipts r
        JOIN event_ids i ON i.event_id = r.event_id
        JOIN events e ON e.event_nid = i.event_nid
        WHERE r.room_nid = a.room_nid AND r.user_id = $1
          AND r.receipt_type IN ('m.read', 'm.read.private')
          AND r.thread_id IN ('', a.thread_id)
    ), 0)";

/// Unread notification counts of a user in some rooms, per thread, after the user's newest
/// read receipt (public or private) that covers that thread:
/// (room_nid, thread_id, notifications, highlights).
pub async fn unread_counts(
    e: impl PgExecutor<'_>,
    user_id: &str,
    room_nids: &[i64],
) -> Result<Vec<(i64, String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT a.room_nid, a.thread_id, count(*), count(*) FILTER (WHERE a.highlight)
         FROM event_push_actions a
         WHERE a.user_id = $1 AND a.room_nid = ANY($2) AND a.stream_ordering > {READ_UPTO}
         GROUP BY a.room_nid, a.thread_id"
    ))
    .bind(user_id)
    .bind(room_nids)
    .fetch_all(e)
    .await
}

/// A stored push action: one event that notified one user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionRow {
    pub event_nid: i64,
    pub room_id: String,
    pub stream_ordering: i64,
    pub highlight: bool,
    /// The push rule's actions (a JSON array); `None` on rows older than the column.
    pub actions: Option<String>,
    /// When the row was written, ms since the epoch.
    pub ts: i64,
    /// Whether the user's read receipt covers the event.
    pub read: bool,
}

/// A page of a user's push actions, newest first: those at positions below `before` (all
/// when `None`), only highlights if `highlights_only`, at most `limit`.
pub async fn notifications(
    e: impl PgExecutor<'_>,
    user_id: &str,
    before: Option<i64>,
    highlights_only: bool,
    limit: i64,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT a.event_nid, r.room_id, a.stream_ordering, a.highlight, a.actions::text,
                a.ts, a.stream_ordering <= {READ_UPTO} AS read
         FROM event_push_actions a JOIN rooms r USING (room_nid)
         WHERE a.user_id = $1 AND a.stream_ordering < COALESCE($2, 9223372036854775807)
           AND (a.highlight OR NOT $3)
         ORDER BY a.stream_ordering DESC
         LIMIT $4"
    ))
    .bind(user_id)
    .bind(before)
    .bind(highlights_only)
    .bind(limit)
    .fetch_all(e)
    .await
}

/// A user's push actions at positions in (`after`, `upto`], oldest first, at most `limit`:
/// what a pusher has still to send (`read` is left false: a pusher does not ask).
pub async fn actions_between(
    e: impl PgExecutor<'_>,
    user_id: &str,
    (after, upto): (i64, i64),
    limit: i64,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.event_nid, r.room_id, a.stream_ordering, a.highlight, a.actions::text,
                a.ts, false AS read
         FROM event_push_actions a JOIN rooms r USING (room_nid)
         WHERE a.user_id = $1 AND a.stream_ordering > $2 AND a.stream_ordering <= $3
         ORDER BY a.stream_ordering
         LIMIT $4",
    )
    .bind(user_id)
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(e)
    .await
}

/// A pusher as stored (`pushers`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PusherRow {
    pub user_id: String,
    pub device_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The data object as the client gave it (JSON text).
    pub data: String,
    /// ms since the epoch.
    pub pushkey_ts: i64,
    pub last_stream_ordering: i64,
}

const PUSHER_COLUMNS: &str = "user_id, device_id, app_id, pushkey, kind, app_display_name,
    device_display_name, profile_tag, lang, data::text AS data, pushkey_ts, last_stream_ordering";

/// A user's pushers.
pub async fn pushers_of(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<PusherRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey"
    ))
    .bind(user_id)
    .fetch_all(e)
    .await
}

/// Pushers with push actions at positions in (their position, `upto`].
pub async fn pushers_with_work(
    e: impl PgExecutor<'_>,
    upto: i64,
) -> Result<Vec<PusherRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PUSHER_COLUMNS} FROM pushers p
         WHERE EXISTS (SELECT 1 FROM event_push_actions a
                       WHERE a.user_id = p.user_id AND a.stream_ordering > p.last_stream_ordering
                         AND a.stream_ordering <= $1)"
    ))
    .bind(upto)
    .fetch_all(e)
    .await
}

/// Create or update the pusher `p` (keyed by user, app ID and pushkey). An update keeps the
/// pusher's position; a new one starts at `p.last_stream_ordering`. Unless `append`, the
/// same app ID and pushkey are removed from other users, in the same statement.
pub async fn set_pusher(
    e: impl PgExecutor<'_>,
    p: &PusherRow,
    append: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH others AS (
             DELETE FROM pushers
             WHERE app_id = $3 AND pushkey = $4 AND user_id <> $1 AND NOT $13
         )
         INSERT INTO pushers (user_id, device_id, app_id, pushkey, kind, app_display_name,
                              device_display_name, profile_tag, lang, data, pushkey_ts,
                              last_stream_ordering)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)
         ON CONFLICT ON CONSTRAINT pushers_pkey DO UPDATE
         SET device_id = EXCLUDED.device_id, kind = EXCLUDED.kind,
             app_display_name = EXCLUDED.app_display_name,
             device_display_name = EXCLUDED.device_display_name,
             profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data,
             pushkey_ts = EXCLUDED.pushkey_ts",
    )
    .bind(&p.user_id)
    .bind(&p.device_id)
    .bind(&p.app_id)
    .bind(&p.pushkey)
    .bind(&p.kind)
    .bind(&p.app_display_name)
    .bind(&p.device_display_name)
    .bind(&p.profile_tag)
    .bind(&p.lang)
    .bind(&p.data)
    .bind(p.pushkey_ts)
    .bind(p.last_stream_ordering)
    .bind(append)
    .execute(e)
    .await?;
    Ok(())
}

/// Remove a user's pusher; whether there was one.
pub async fn delete_pusher(
    e: impl PgExecutor<'_>,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .execute(e)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// A pusher is done with everything up to `position` (never moves back); false when the
/// pusher is gone, or already past it.
pub async fn advance_pusher(
    e: impl PgExecutor<'_>,
    (user_id, app_id, pushkey): (&str, &str, &str),
    position: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE pushers SET last_stream_ordering = $4
         WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND last_stream_ordering < $4",
    )
    .bind(user_id)
    .bind(app_id)
    .bind(pushkey)
    .bind(position)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

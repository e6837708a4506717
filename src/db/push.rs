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

/// Unread notification counts of a user in some rooms, per thread, after the user's newest
/// read receipt (public or private) that covers that thread:
/// (room_nid, thread_id, notifications, highlights).
pub async fn unread_counts(
    e: impl PgExecutor<'_>,
    user_id: &str,
    room_nids: &[i64],
) -> Result<Vec<(i64, String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.room_nid, a.thread_id, count(*), count(*) FILTER (WHERE a.highlight)
         FROM event_push_actions a
         WHERE a.user_id = $1 AND a.room_nid = ANY($2)
           AND a.stream_ordering > COALESCE((
               SELECT max(e.stream_ordering) FROM receipts r
               JOIN event_ids i ON i.event_id = r.event_id
               JOIN events e ON e.event_nid = i.event_nid
               WHERE r.room_nid = a.room_nid AND r.user_id = $1
                 AND r.receipt_type IN ('m.read', 'm.read.private')
                 AND r.thread_id IN ('', a.thread_id)
           ), 0)
         GROUP BY a.room_nid, a.thread_id",
    )
    .bind(user_id)
    .bind(room_nids)
    .fetch_all(e)
    .await
}

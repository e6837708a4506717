//! Space hierarchies: the rooms of a batch this server can summarise, the current
//! `m.space.child` events of many spaces, and where a user or a server is a member. Each
//! function reads a whole batch of rooms in one query.

use sqlx::PgExecutor;

use super::federation::SERVER_OF_USER;

/// A room some user of ours is joined to, so its current state is live.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResidentRoom {
    pub room_nid: i64,
    pub room_id: String,
    #[sqlx(try_from = "String")]
    pub room_version: ruma::RoomVersionId,
    /// Members whose membership is `join`.
    pub joined: i64,
}

/// The rooms of `room_ids` in which a user of server `ours` is joined, with their joined
/// member counts. Rooms we only left, were invited to or never saw are not returned: their
/// state here is stale or absent.
pub async fn resident_rooms(
    e: impl PgExecutor<'_>,
    room_ids: &[String],
    ours: &str,
) -> Result<Vec<ResidentRoom>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT r.room_nid, r.room_id, r.room_version,
                (SELECT count(*) FROM room_members m
                 WHERE m.room_nid = r.room_nid AND m.membership = 'join') AS joined
         FROM rooms r
         WHERE r.room_id = ANY($1) AND r.state_group IS NOT NULL
           AND EXISTS (SELECT 1 FROM room_members m
                       WHERE m.room_nid = r.room_nid AND m.membership = 'join'
                         AND {SERVER_OF_USER} = $2)"
    ))
    .bind(room_ids)
    .bind(ours)
    .fetch_all(e)
    .await
}

/// A current `m.space.child` event of a space.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChildRow {
    pub room_nid: i64,
    /// The child's room ID.
    pub state_key: String,
    pub sender: String,
    pub origin_server_ts: i64,
    /// The event's content, as JSON text.
    pub content: String,
}

/// The current `m.space.child` events of the spaces `room_nids` that name a child: not
/// redacted, with a non-empty `via` list (an event without one removes the child), and
/// marked `suggested` when `suggested_only`. At most `per_space` per space, the oldest first.
pub async fn space_children(
    e: impl PgExecutor<'_>,
    room_nids: &[i64],
    suggested_only: bool,
    per_space: i64,
) -> Result<Vec<ChildRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_nid, state_key, sender, origin_server_ts, content FROM (
            SELECT c.room_nid, k.state_key, e.sender, e.origin_server_ts, j.content::text AS content,
                   row_number() OVER (PARTITION BY c.room_nid
                                      ORDER BY e.origin_server_ts, k.state_key) AS n
            FROM current_state c
            JOIN state_keys k ON k.state_key_nid = c.state_key_nid
            JOIN events e ON e.event_nid = c.event_nid
            CROSS JOIN LATERAL (SELECT e.json::jsonb -> 'content' AS content) j
            WHERE c.room_nid = ANY($1) AND k.event_type = 'm.space.child'
              AND e.redacted_by IS NULL
              AND jsonb_typeof(j.content -> 'via') = 'array'
              AND j.content -> 'via' <> '[]'::jsonb
              AND (NOT $2 OR j.content -> 'suggested' = 'true'::jsonb)
         ) x
         WHERE n <= $3",
    )
    .bind(room_nids)
    .bind(suggested_only)
    .bind(per_space)
    .fetch_all(e)
    .await
}

/// Whose memberships to read.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    User(&'a str),
    /// Any user of this server.
    Server(&'a str),
}

/// For each room of `room_ids` where the member is joined or invited: the room ID and
/// whether the membership is a join (for a server: whether any of its users is joined).
pub async fn memberships(
    e: impl PgExecutor<'_>,
    member: Member<'_>,
    room_ids: &[String],
) -> Result<Vec<(String, bool)>, sqlx::Error> {
    let (who, name) = match member {
        Member::User(u) => ("m.user_id", u),
        Member::Server(s) => (SERVER_OF_USER, s),
    };
    sqlx::query_as(&format!(
        "SELECT r.room_id, bool_or(m.membership = 'join')
         FROM rooms r JOIN room_members m ON m.room_nid = r.room_nid
         WHERE r.room_id = ANY($1) AND m.membership IN ('join', 'invite') AND {who} = $2
         GROUP BY r.room_id"
    ))
    .bind(room_ids)
    .bind(name)
    .fetch_all(e)
    .await
}

//! The user directory (`POST /user_directory/search`), read from the membership tables the
//! append path keeps and the `users` table, through the expression indexes of migration 0015:
//! remote users by the words of their current join events (`events_member_directory_idx`),
//! local users by their own profile (`users_directory_idx`).

use sqlx::PgExecutor;

/// At most this many matching memberships of each kind (remote join events, local users'
/// joins) are weighed per search, so a one-letter term costs what this bound allows, not
/// what the server holds; a search that reaches it says its answer is limited.
pub const MAX_MATCHES: i64 = 5_000;

/// A user the directory shows, with the profile it shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DirectoryRow {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// The matches reached [`MAX_MATCHES`]: more users may match than were weighed.
    pub capped: bool,
}

/// Users matching `query` (a `to_tsquery('simple', …)` text of prefix words) whom `searcher`
/// may find, best first, at most `limit`: users joined to a room the searcher is joined to,
/// or to a room whose current join rule is public, and the searcher themselves. Deactivated
/// accounts are left out. A local user's profile is their own; a remote user's is the one
/// their newest matching join event states. Users who share a room with the searcher come
/// first, then by `ts_rank_cd` (display name words count more than user ID words), then
/// those with a display name, then by user ID.
pub async fn search(
    e: impl PgExecutor<'_>,
    searcher: &str,
    query: &str,
    limit: i64,
) -> Result<Vec<DirectoryRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH q AS (SELECT to_tsquery('pg_catalog.simple', $2) AS q),
        mine AS (SELECT room_nid FROM room_members WHERE user_id = $1 AND membership = 'join'),
        remote AS (
            SELECT m.user_id, m.room_nid, e.event_nid
            FROM q, events e
            JOIN state_keys k ON k.state_key_nid = e.state_key_nid
            JOIN room_members m ON m.room_nid = e.room_nid AND m.user_id = k.state_key
            WHERE e.event_type = 'm.room.member' AND trellis_member_vector(e.json) @@ q.q
              AND m.event_nid = e.event_nid AND m.membership = 'join'
              AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = m.user_id)
            LIMIT $4
        ),
        local AS (
            SELECT u.user_id, m.room_nid
            FROM q, users u
            JOIN room_members m ON m.user_id = u.user_id AND m.membership = 'join'
            WHERE trellis_user_vector(u.user_id, u.displayname) @@ q.q AND NOT u.deactivated
            LIMIT $4
        ),
        hits AS (
            SELECT user_id, room_nid, event_nid, room_nid IN (SELECT room_nid FROM mine) AS shared
            FROM (SELECT user_id, room_nid, event_nid FROM remote
                  UNION ALL SELECT user_id, room_nid, NULL FROM local) h
        ),
        public AS (
            SELECT c.room_nid
            FROM current_state c
            JOIN state_keys k ON k.state_key_nid = c.state_key_nid
            JOIN events j ON j.event_nid = c.event_nid
            WHERE c.room_nid IN (SELECT room_nid FROM hits WHERE NOT shared)
              AND k.event_type = 'm.room.join_rules' AND k.state_key = ''
              AND trellis_event_content(j.json) ->> 'join_rule' = 'public'
        ),
        seen AS (
            SELECT DISTINCT ON (user_id) user_id, event_nid, shared
            FROM hits
            WHERE shared OR room_nid IN (SELECT room_nid FROM public)
            ORDER BY user_id, shared DESC, event_nid DESC NULLS LAST
        ),
        profiles AS (
            SELECT s.user_id, s.shared, p.displayname, p.avatar_url
            FROM seen s
            LEFT JOIN users u ON s.event_nid IS NULL AND u.user_id = s.user_id
            LEFT JOIN events e ON e.event_nid = s.event_nid
            CROSS JOIN LATERAL (
                SELECT trellis_event_content(e.json) AS content OFFSET 0
            ) c
            CROSS JOIN LATERAL (
                SELECT CASE WHEN s.event_nid IS NULL THEN u.displayname
                            ELSE c.content ->> 'displayname' END AS displayname,
                       CASE WHEN s.event_nid IS NULL THEN u.avatar_url
                            ELSE c.content ->> 'avatar_url' END AS avatar_url
            ) p
            UNION ALL
            SELECT u.user_id, TRUE, u.displayname, u.avatar_url
            FROM q, users u
            WHERE u.user_id = $1 AND NOT u.deactivated
              AND trellis_user_vector(u.user_id, u.displayname) @@ q.q
              AND NOT EXISTS (SELECT 1 FROM seen WHERE seen.user_id = $1)
        )
        SELECT p.user_id, p.displayname, p.avatar_url,
               (SELECT count(*) FROM remote) >= $4 OR (SELECT count(*) FROM local) >= $4
                   AS capped
        FROM q, profiles p
        ORDER BY p.shared DESC,
                 ts_rank_cd(trellis_user_vector(p.user_id, p.displayname), q.q) DESC,
                 p.displayname IS NULL, p.user_id
        LIMIT $3",
    )
    .bind(searcher)
    .bind(query)
    .bind(limit)
    .bind(MAX_MATCHES)
    .fetch_all(e)
    .await
}

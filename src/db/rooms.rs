//! The `rooms`, `room_aliases` and `room_members` tables.

use ruma::RoomVersionId;
use ruma::events::room::member::MembershipState;
use ruma::room_version_rules::RoomVersionRules;
use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoomRow {
    pub room_nid: i64,
    pub room_id: String,
    /// Parsed once, as the row is read (a stored version is always a valid ID: rooms are
    /// only ever created or joined with a parsed one).
    #[sqlx(try_from = "String")]
    pub room_version: RoomVersionId,
    pub state_group: Option<i64>,
    pub is_public: bool,
}

impl RoomRow {
    /// The rules of the room's version (see [`rules_of`]).
    pub fn rules(&self) -> crate::error::Result<RoomVersionRules> {
        rules_of(&self.room_version)
    }

    /// The room's ID, as stored.
    pub fn id(&self) -> crate::error::Result<ruma::OwnedRoomId> {
        ruma::OwnedRoomId::try_from(self.room_id.as_str())
            .map_err(|e| crate::error::Error::internal(format!("stored room ID invalid: {e}")))
    }
}

/// The rules of a room version; the one error for a version this server does not know
/// (no room of one is ever stored).
pub fn rules_of(version: &RoomVersionId) -> crate::error::Result<RoomVersionRules> {
    version.rules().ok_or_else(|| {
        crate::error::Error::internal(format!("room version {version} has no rules"))
    })
}

/// A new room's row, numbered; `None` when a room of that ID exists already.
pub async fn insert(
    tx: &mut PgConnection,
    room_id: &str,
    version: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rooms (room_id, room_version) VALUES ($1, $2) \
         ON CONFLICT (room_id) DO NOTHING RETURNING room_nid",
    )
    .bind(room_id)
    .bind(version)
    .fetch_optional(tx)
    .await
}

pub async fn by_id(e: impl PgExecutor<'_>, room_id: &str) -> Result<Option<RoomRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_nid, room_id, room_version, state_group, is_public FROM rooms WHERE room_id = $1",
    )
    .bind(room_id)
    .fetch_optional(e)
    .await
}

/// The room and `user_id`'s membership in it, in one query.
pub async fn with_membership(
    e: impl PgExecutor<'_>,
    room_id: &str,
    user_id: &str,
) -> Result<Option<(RoomRow, Option<MembershipState>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        room: RoomRow,
        membership: Option<String>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT r.room_nid, r.room_id, r.room_version, r.state_group, r.is_public, m.membership
         FROM rooms r
         LEFT JOIN room_members m ON m.room_nid = r.room_nid AND m.user_id = $2
         WHERE r.room_id = $1",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|r| (r.room, r.membership.map(MembershipState::from))))
}

/// What appending to a room starts from, in one query: the room, its forward extremities
/// (event number, ID, depth; deepest first), and the events that earlier client transactions
/// among `txns` (user, device, transaction ID) produced in it, keyed by transaction.
pub async fn with_extremities(
    e: impl PgExecutor<'_>,
    room_id: &str,
    txns: &[(&str, &str, &str)],
) -> Result<Option<SendStart>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        room: RoomRow,
        event_nid: Option<i64>,
        event_id: Option<String>,
        depth: Option<i64>,
        seen: Option<String>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.room_nid, r.room_id, r.room_version, r.state_group, r.is_public,
                f.event_nid, i.event_id, e.depth,
                (SELECT json_agg(json_build_array(t.user_id, t.device_id, t.txn_id, ti.event_id))::text
                 FROM unnest($2::text[], $3::text[], $4::text[]) AS w(u, d, x)
                 JOIN event_txn_ids t ON t.room_nid = r.room_nid
                      AND t.user_id = w.u AND t.device_id = w.d AND t.txn_id = w.x
                 JOIN event_ids ti ON ti.event_nid = t.event_nid) AS seen
         FROM rooms r
         LEFT JOIN forward_extremities f ON f.room_nid = r.room_nid
         LEFT JOIN event_ids i ON i.event_nid = f.event_nid
         LEFT JOIN events e ON e.event_nid = f.event_nid
         WHERE r.room_id = $1
         ORDER BY e.depth DESC, f.event_nid DESC",
    )
    .bind(room_id)
    .bind(txns.iter().map(|t| t.0).collect::<Vec<_>>())
    .bind(txns.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(txns.iter().map(|t| t.2).collect::<Vec<_>>())
    .fetch_all(e)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let room = first.room.clone();
    let seen: Vec<(String, String, String, String)> = match &first.seen {
        Some(json) => serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        None => Vec::new(),
    };
    let extremities = rows
        .into_iter()
        .filter_map(|r| Some((r.event_nid?, r.event_id?, r.depth?)))
        .collect();
    Ok(Some(SendStart {
        room,
        extremities,
        seen: seen
            .into_iter()
            .map(|(u, d, x, id)| ((u, d, x), id))
            .collect(),
    }))
}

/// See [`with_extremities`].
pub struct SendStart {
    pub room: RoomRow,
    pub extremities: Vec<(i64, String, i64)>,
    pub seen: std::collections::HashMap<(String, String, String), String>,
}

pub async fn set_state_group(
    tx: &mut PgConnection,
    room_nid: i64,
    group: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rooms SET state_group = $2 WHERE room_nid = $1")
        .bind(room_nid)
        .bind(group)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn set_public(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    public: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_nid = $1")
        .bind(room_nid)
        .bind(public)
        .execute(e)
        .await?;
    Ok(())
}

/// Record a user's membership as of `event_nid`.
pub async fn set_membership(
    tx: &mut PgConnection,
    room_nid: i64,
    user_id: &str,
    membership: &MembershipState,
    event_nid: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_members (room_nid, user_id, membership, event_nid) VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT room_members_pkey DO UPDATE
         SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid, forgotten = FALSE",
    )
    .bind(room_nid)
    .bind(user_id)
    .bind(membership.as_str())
    .bind(event_nid)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn membership(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
) -> Result<Option<MembershipState>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT membership FROM room_members WHERE room_nid = $1 AND user_id = $2")
            .bind(room_nid)
            .bind(user_id)
            .fetch_optional(e)
            .await?;
    Ok(row.map(|r| MembershipState::from(r.0)))
}

/// Room IDs where the user's membership is `membership`.
pub async fn rooms_of_user(
    e: impl PgExecutor<'_>,
    user_id: &str,
    membership: &MembershipState,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT r.room_id FROM room_members m JOIN rooms r USING (room_nid)
         WHERE m.user_id = $1 AND m.membership = $2 ORDER BY r.room_nid",
    )
    .bind(user_id)
    .bind(membership.as_str())
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Members of a room with their current membership.
pub async fn members(
    e: impl PgExecutor<'_>,
    room_nid: i64,
) -> Result<Vec<(String, MembershipState)>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT user_id, membership FROM room_members WHERE room_nid = $1 ORDER BY user_id",
    )
    .bind(room_nid)
    .fetch_all(e)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, membership)| (user, MembershipState::from(membership)))
        .collect())
}

pub async fn set_forgotten(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE room_members SET forgotten = TRUE WHERE room_nid = $1 AND user_id = $2")
        .bind(room_nid)
        .bind(user_id)
        .execute(e)
        .await?;
    Ok(())
}

pub const ALIASES_PKEY: &str = "room_aliases_pkey";

pub async fn insert_alias(
    e: impl PgExecutor<'_>,
    alias: &str,
    room_nid: i64,
    creator: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO room_aliases (alias, room_nid, creator) VALUES ($1, $2, $3)")
        .bind(alias)
        .bind(room_nid)
        .bind(creator)
        .execute(e)
        .await?;
    Ok(())
}

/// The room an alias points to, and who created the alias.
pub async fn resolve_alias(
    e: impl PgExecutor<'_>,
    alias: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.room_id, a.creator FROM room_aliases a JOIN rooms r USING (room_nid) WHERE a.alias = $1",
    )
    .bind(alias)
    .fetch_optional(e)
    .await
}

pub async fn delete_alias(e: impl PgExecutor<'_>, alias: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
        .bind(alias)
        .execute(e)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Create the room row unless it exists (a room first seen through an invite or a join from
/// another server); returns its number.
pub async fn ensure(
    tx: &mut PgConnection,
    room_id: &str,
    version: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO rooms (room_id, room_version) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT rooms_room_id_key DO NOTHING",
    )
    .bind(room_id)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    let (nid,): (i64,) = sqlx::query_as("SELECT room_nid FROM rooms WHERE room_id = $1")
        .bind(room_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(nid)
}

/// Many memberships at once: (user_id, membership, event_nid).
pub async fn set_memberships(
    tx: &mut PgConnection,
    room_nid: i64,
    rows: &[(&str, &MembershipState, i64)],
) -> Result<(), sqlx::Error> {
    let users: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let memberships: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let events: Vec<i64> = rows.iter().map(|r| r.2).collect();
    sqlx::query(
        "INSERT INTO room_members (room_nid, user_id, membership, event_nid)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[])
         ON CONFLICT ON CONSTRAINT room_members_pkey DO UPDATE
         SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid, forgotten = FALSE,
             invite_state = NULL",
    )
    .bind(room_nid)
    .bind(&users)
    .bind(&memberships)
    .bind(&events)
    .execute(tx)
    .await?;
    Ok(())
}

/// A membership known only from another server (an invite to, or a rejection of an invite
/// to, a room we are not in), with the stripped state shown to the invitee.
pub async fn set_out_of_band_membership(
    tx: &mut PgConnection,
    room_nid: i64,
    user_id: &str,
    membership: &MembershipState,
    event_nid: i64,
    invite_state: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_members (room_nid, user_id, membership, event_nid, invite_state)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ON CONSTRAINT room_members_pkey DO UPDATE
         SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid, forgotten = FALSE,
             invite_state = EXCLUDED.invite_state",
    )
    .bind(room_nid)
    .bind(user_id)
    .bind(membership.as_str())
    .bind(event_nid)
    .bind(invite_state)
    .execute(tx)
    .await?;
    Ok(())
}

/// The sender of the event that set a user's membership (who invited them, for an invite).
pub async fn membership_sender(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT e.sender FROM room_members m JOIN events e USING (event_nid)
         WHERE m.room_nid = $1 AND m.user_id = $2",
    )
    .bind(room_nid)
    .bind(user_id)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|r| r.0))
}

/// The event that set `user_id`'s membership in the room: (event ID, depth).
pub async fn membership_event(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    user_id: &str,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.event_id, e.depth
         FROM room_members m JOIN events e USING (event_nid) JOIN event_ids i USING (event_nid)
         WHERE m.room_nid = $1 AND m.user_id = $2",
    )
    .bind(room_nid)
    .bind(user_id)
    .fetch_optional(e)
    .await
}

/// The room ID of a room number.
pub async fn id_of(e: impl PgExecutor<'_>, room_nid: i64) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT room_id FROM rooms WHERE room_nid = $1")
        .bind(room_nid)
        .fetch_optional(e)
        .await?;
    Ok(row.map(|r| r.0))
}

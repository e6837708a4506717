//! The room directory: alias look-ups beyond `rooms.rs`, and pages of published rooms with
//! the current state fields a directory entry shows.

use sqlx::{PgExecutor, Postgres, QueryBuilder};

/// A local alias with the room it points to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AliasRow {
    pub room_nid: i64,
    pub room_id: String,
    pub creator: String,
}

pub async fn alias(e: impl PgExecutor<'_>, alias: &str) -> Result<Option<AliasRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.room_nid, r.room_id, a.creator FROM room_aliases a JOIN rooms r USING (room_nid)
         WHERE a.alias = $1",
    )
    .bind(alias)
    .fetch_optional(e)
    .await
}

/// Every local alias of a room, sorted.
pub async fn aliases_of_room(
    e: impl PgExecutor<'_>,
    room_nid: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT alias FROM room_aliases WHERE room_nid = $1 ORDER BY alias")
            .bind(room_nid)
            .fetch_all(e)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The server names of the room's joined members (the part of the user ID after the first
/// colon, so a port stays with its host), sorted.
pub async fn joined_servers(
    e: impl PgExecutor<'_>,
    room_nid: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT substr(user_id, strpos(user_id, ':') + 1) AS server
         FROM room_members WHERE room_nid = $1 AND membership = 'join' ORDER BY server",
    )
    .bind(room_nid)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// One current state event (state key `""`) of a room.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateContentRow {
    pub room_nid: i64,
    pub event_type: String,
    pub sender: String,
    /// The PDU as stored (unredacted): readers apply redaction when `redacted` is set.
    pub json: String,
    pub redacted: bool,
}

/// The current `(type, "")` state events of `types` for every room of `room_nids`, in one
/// query.
pub async fn current_state_events(
    e: impl PgExecutor<'_>,
    room_nids: &[i64],
    types: &[&str],
) -> Result<Vec<StateContentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.room_nid, k.event_type, e.sender, e.json, e.redacted_by IS NOT NULL AS redacted
         FROM current_state c
         JOIN state_keys k ON k.state_key_nid = c.state_key_nid
         JOIN events e ON e.event_nid = c.event_nid
         WHERE c.room_nid = ANY($1) AND k.event_type = ANY($2) AND k.state_key = ''",
    )
    .bind(room_nids)
    .bind(types)
    .fetch_all(e)
    .await
}

/// Where a page of the directory starts: strictly after or strictly before a room in the
/// directory order (most joined members first, then room ID).
#[derive(Debug, Clone)]
pub struct Keyset<'a> {
    pub forward: bool,
    pub joined: i64,
    pub room_id: &'a str,
}

/// What to list: one page of published rooms matching the filters.
#[derive(Debug, Clone, Default)]
pub struct PublicRoomsQuery<'a> {
    /// Case-insensitive substring of the name, topic, canonical alias or a local alias.
    pub search: Option<&'a str>,
    /// Room types (`m.room.create` content `type`) to keep; `None` keeps every type.
    pub room_types: Option<RoomTypes<'a>>,
    pub from: Option<Keyset<'a>>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RoomTypes<'a> {
    /// Keep rooms without a type.
    pub untyped: bool,
    pub types: Vec<&'a str>,
}

/// A published room on a page.
#[derive(Debug, Clone)]
pub struct PublicRoomRow {
    pub room_nid: i64,
    pub room_id: String,
    pub room_version: ruma::RoomVersionId,
    pub joined: i64,
}

/// A string field of the content of a room's current `(event_type, "")` state event, as SQL.
/// Redaction strips names, topics and aliases, so `stripped_by_redaction` makes a redacted
/// event count as absent.
fn state_field(event_type: &str, field: &str, stripped_by_redaction: bool) -> String {
    let unredacted = if stripped_by_redaction {
        "AND e.redacted_by IS NULL"
    } else {
        ""
    };
    format!(
        "(SELECT e.json::jsonb -> 'content' ->> '{field}' FROM current_state c
          JOIN state_keys k ON k.state_key_nid = c.state_key_nid
          JOIN events e ON e.event_nid = c.event_nid
          WHERE c.room_nid = r.room_nid AND k.event_type = '{event_type}' AND k.state_key = ''
            {unredacted})"
    )
}

/// `term` as a LIKE pattern matching any string that contains it.
fn contains_pattern(term: &str) -> String {
    let mut p = String::with_capacity(term.len() + 2);
    p.push('%');
    for c in term.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// One page of published rooms in directory order (reversed for a backward page), up to
/// `limit` rows, and how many rooms match the filters in all. The state fields the filters
/// need are read inside the same query, so a filtered page is still one round trip; the
/// page's own entries are read afterwards with [`current_state_events`]. Every published
/// room is counted and sorted by its joined members on each call, which suits a directory
/// of thousands of rooms, not millions.
pub async fn public_rooms_page(
    e: impl PgExecutor<'_>,
    q: &PublicRoomsQuery<'_>,
) -> Result<(Vec<PublicRoomRow>, i64), sqlx::Error> {
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
        "WITH candidates AS (
            SELECT r.room_nid, r.room_id, r.room_version,
                   (SELECT count(*) FROM room_members m
                    WHERE m.room_nid = r.room_nid AND m.membership = 'join') AS joined
            FROM rooms r
            WHERE r.is_public",
    );
    if let Some(types) = &q.room_types {
        let room_type = state_field("m.room.create", "type", false);
        b.push(" AND (");
        if types.untyped {
            b.push(format!("{room_type} IS NULL OR "));
        }
        b.push(format!("{room_type} = ANY("))
            .push_bind(types.types.clone())
            .push("))");
    }
    if let Some(term) = q.search {
        let pattern = contains_pattern(term);
        b.push(" AND (");
        for (t, f) in [
            ("m.room.name", "name"),
            ("m.room.topic", "topic"),
            ("m.room.canonical_alias", "alias"),
        ] {
            b.push(format!("{} ILIKE ", state_field(t, f, true)))
                .push_bind(pattern.clone())
                .push(" OR ");
        }
        b.push(
            "EXISTS (SELECT 1 FROM room_aliases a WHERE a.room_nid = r.room_nid AND a.alias ILIKE ",
        )
        .push_bind(pattern)
        .push("))");
    }
    // The count comes from outside the page, so a page past the end still reports it.
    b.push(
        ")
        SELECT t.total, p.room_nid, p.room_id, p.room_version, p.joined
        FROM (SELECT count(*) AS total FROM candidates) t
        LEFT JOIN LATERAL (
            SELECT room_nid, room_id, room_version, joined FROM candidates",
    );
    let forward = match &q.from {
        Some(k) => {
            let (more, after) = if k.forward { ("<", ">") } else { (">", "<") };
            b.push(format!(" WHERE (joined {more} "))
                .push_bind(k.joined)
                .push(" OR (joined = ")
                .push_bind(k.joined)
                .push(format!(" AND room_id COLLATE \"C\" {after} "))
                .push_bind(k.room_id.to_owned())
                .push("))");
            k.forward
        }
        None => true,
    };
    let order = if forward {
        "joined DESC, room_id COLLATE \"C\" ASC"
    } else {
        "joined ASC, room_id COLLATE \"C\" DESC"
    };
    b.push(format!(" ORDER BY {order} LIMIT "))
        .push_bind(q.limit)
        .push(format!(") p ON TRUE ORDER BY {order}"));
    let rows: Vec<PageRow> = b.build_query_as().fetch_all(e).await?;
    let total = rows.first().map_or(0, |r| r.total);
    let mut rooms = Vec::with_capacity(rows.len());
    for r in rows {
        let (Some(room_nid), Some(room_id), Some(version), Some(joined)) =
            (r.room_nid, r.room_id, r.room_version, r.joined)
        else {
            continue;
        };
        let room_version =
            ruma::RoomVersionId::try_from(version).map_err(|e| sqlx::Error::ColumnDecode {
                index: "room_version".into(),
                source: Box::new(e),
            })?;
        rooms.push(PublicRoomRow {
            room_nid,
            room_id,
            room_version,
            joined,
        });
    }
    Ok((rooms, total))
}

/// A row of [`public_rooms_page`]'s query: the room columns are NULL when the page is empty.
#[derive(sqlx::FromRow)]
struct PageRow {
    total: i64,
    room_nid: Option<i64>,
    room_id: Option<String>,
    room_version: Option<String>,
    joined: Option<i64>,
}

/// Point every local alias of room `from` at room `to` (a room upgrade).
pub async fn move_aliases(e: impl PgExecutor<'_>, from: i64, to: i64) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("UPDATE room_aliases SET room_nid = $2 WHERE room_nid = $1")
        .bind(from)
        .bind(to)
        .execute(e)
        .await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern(""), "%%");
    }
}

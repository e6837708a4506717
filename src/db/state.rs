//! State groups (capped delta chains), interned state keys and `current_state`.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor};

/// Reading a state walks at most this many deltas back to a snapshot; a group that would be
/// further away is written as a new snapshot instead.
pub const MAX_CHAIN_LEN: i32 = 50;

/// Number (type, state_key) pairs; returns pair → nid.
pub async fn intern_keys(
    tx: &mut PgConnection,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let skeys: Vec<&str> = keys.iter().map(|k| k.1).collect();
    sqlx::query(
        "INSERT INTO state_keys (event_type, state_key)
         SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&types)
    .bind(&skeys)
    .execute(&mut *tx)
    .await?;
    lookup_keys(&mut *tx, keys).await
}

/// Numbers of already-interned pairs (unknown pairs are absent from the map).
pub async fn lookup_keys(
    e: impl PgExecutor<'_>,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
    let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let skeys: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT s.state_key_nid, s.event_type, s.state_key FROM state_keys s
         JOIN unnest($1::text[], $2::text[]) AS k(t, sk) ON s.event_type = k.t AND s.state_key = k.sk",
    )
    .bind(&types)
    .bind(&skeys)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|(n, t, k)| ((t, k), n)).collect())
}

/// One entry of a state: (state_key_nid, event_nid, type, state_key).
pub type StateRow = (i64, i64, String, String);

pub async fn load(e: impl PgExecutor<'_>, group: i64) -> Result<Vec<StateRow>, sqlx::Error> {
    Ok(load_many(e, &[group])
        .await?
        .into_iter()
        .map(|(_, key, event, kind, state_key)| (key, event, kind, state_key))
        .collect())
}

/// Only the given keys of a state (what authorising one event needs), as [`keyed_state`]
/// reads them.
pub async fn load_keys(
    e: impl PgExecutor<'_>,
    group: i64,
    keys: &[(&str, &str)],
) -> Result<Vec<StateRow>, sqlx::Error> {
    Ok(load_keys_of_many(e, &[group], keys)
        .await?
        .into_iter()
        .map(|(_, key, event, kind, state_key)| (key, event, kind, state_key))
        .collect())
}

/// A new group: a delta of `entries` on top of `prev`, or a snapshot when `prev` is None.
/// The caller passes the full state for a snapshot.
pub async fn create_group(
    tx: &mut PgConnection,
    room_nid: i64,
    prev: Option<(i64, i32)>,
    entries: &[(i64, i64)],
) -> Result<i64, sqlx::Error> {
    let keys: Vec<i64> = entries.iter().map(|e| e.0).collect();
    let events: Vec<i64> = entries.iter().map(|e| e.1).collect();
    // The group and its entries in one statement.
    let (group,): (i64,) = sqlx::query_as(
        "WITH g AS (
             INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, $2, $3)
             RETURNING state_group
         ),
         e AS (
             INSERT INTO state_group_entries (state_group, state_key_nid, event_nid)
             SELECT g.state_group, x.k, x.e FROM g, unnest($4::bigint[], $5::bigint[]) AS x(k, e)
         )
         SELECT state_group FROM g",
    )
    .bind(room_nid)
    .bind(prev.map(|p| p.0))
    .bind(prev.map_or(0, |p| p.1 + 1))
    .bind(&keys)
    .bind(&events)
    .fetch_one(&mut *tx)
    .await?;
    Ok(group)
}

pub async fn chain_len(e: impl PgExecutor<'_>, group: i64) -> Result<i32, sqlx::Error> {
    let (len,): (i32,) =
        sqlx::query_as("SELECT chain_len FROM state_groups WHERE state_group = $1")
            .bind(group)
            .fetch_one(e)
            .await?;
    Ok(len)
}

pub async fn set_current(
    tx: &mut PgConnection,
    room_nid: i64,
    state_key_nid: i64,
    event_nid: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO current_state (room_nid, state_key_nid, event_nid) VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT current_state_pkey DO UPDATE SET event_nid = EXCLUDED.event_nid",
    )
    .bind(room_nid)
    .bind(state_key_nid)
    .bind(event_nid)
    .execute(tx)
    .await?;
    Ok(())
}

/// The delta chains of several groups at once: `chain(root, sg, prev, lvl)`, each walk
/// bounded by `$2` (pass [`MAX_CHAIN_LEN`]), starting from the groups in `$1`.
///
/// Each step, and each level's entries ([`ENTRIES`], [`KEYED_ENTRIES`]), is a lateral
/// lookup by primary key rather than a join: a prepared statement soon runs on a generic
/// plan, and with a join that plan may hash whole tables at every level (5.8 ms against
/// 0.3 ms for a five-deep chain in a small database).
pub(crate) const CHAINS: &str = "WITH RECURSIVE chain(root, sg, prev, lvl) AS (
        SELECT state_group, state_group, prev_group, 0 FROM state_groups WHERE state_group = ANY($1)
        UNION ALL
        SELECT c.root, g.state_group, g.prev_group, c.lvl + 1
        FROM chain c CROSS JOIN LATERAL (
            SELECT state_group, prev_group FROM state_groups WHERE state_group = c.prev LIMIT 1
        ) g
        WHERE c.lvl < $2
    )";

/// The entries of a chain level `c`, as `s(state_key_nid, event_nid)`. `OFFSET 0` keeps the
/// subquery from being flattened back into a join.
pub(crate) const ENTRIES: &str = "CROSS JOIN LATERAL (
        SELECT state_key_nid, event_nid FROM state_group_entries WHERE state_group = c.sg OFFSET 0
    ) s";

/// The entry of a chain level `c` for the wanted key `w`, as `s(state_key_nid, event_nid)`.
const KEYED_ENTRIES: &str = "CROSS JOIN LATERAL (
        SELECT state_key_nid, event_nid FROM state_group_entries
        WHERE state_group = c.sg AND state_key_nid = w.state_key_nid LIMIT 1
    ) s";

/// For each of `groups`, the entries for `keys` (a handful of (type, state_key) pairs) with
/// their events, in one query: (group, type, state_key, event ID, event JSON).
pub async fn load_keys_many(
    e: impl PgExecutor<'_>,
    groups: &[i64],
    keys: &[(&str, &str)],
) -> Result<Vec<(i64, String, String, String, String)>, sqlx::Error> {
    let (types, skeys) = key_columns(keys);
    sqlx::query_as(&format!(
        "SELECT x.root, x.event_type, x.state_key, i.event_id, ev.json FROM ({}) x
         JOIN events ev ON ev.event_nid = x.event_nid
         JOIN event_ids i ON i.event_nid = x.event_nid",
        keyed_state()
    ))
    .bind(groups)
    .bind(MAX_CHAIN_LEN)
    .bind(&types)
    .bind(&skeys)
    .fetch_all(e)
    .await
}

/// The entries for `keys` of several groups in one query, in the form [`load_many`] gives:
/// (group, state_key_nid, event_nid, type, state_key).
pub async fn load_keys_of_many(
    e: impl PgExecutor<'_>,
    groups: &[i64],
    keys: &[(&str, &str)],
) -> Result<Vec<(i64, i64, i64, String, String)>, sqlx::Error> {
    let (types, skeys) = key_columns(keys);
    sqlx::query_as(&keyed_state())
        .bind(groups)
        .bind(MAX_CHAIN_LEN)
        .bind(&types)
        .bind(&skeys)
        .fetch_all(e)
        .await
}

/// The entries for some keys of several groups: `(root, state_key_nid, event_nid,
/// event_type, state_key)`, binding `$1` the groups, `$2` [`MAX_CHAIN_LEN`], `$3` and `$4`
/// the keys' types and state keys. The keys are numbered first, so each level of each chain
/// is probed by its primary key for just those numbers rather than scanned whole (a
/// snapshot may hold thousands of members).
fn keyed_state() -> String {
    format!(
        "{CHAINS},
        want AS (
            SELECT k.state_key_nid, k.event_type, k.state_key FROM state_keys k
            JOIN unnest($3::text[], $4::text[]) AS w(t, sk)
              ON k.event_type = w.t AND k.state_key = w.sk
        )
        SELECT DISTINCT ON (c.root, s.state_key_nid)
               c.root, s.state_key_nid, s.event_nid, w.event_type, w.state_key
        FROM chain c CROSS JOIN want w {KEYED_ENTRIES}
        ORDER BY c.root, s.state_key_nid, c.lvl"
    )
}

/// Keys as the two text arrays the queries bind.
fn key_columns<'a>(keys: &[(&'a str, &'a str)]) -> (Vec<&'a str>, Vec<&'a str>) {
    keys.iter().copied().unzip()
}

/// Full state of several groups in one query: (group, state_key_nid, event_nid, type,
/// state_key).
pub async fn load_many(
    e: impl PgExecutor<'_>,
    groups: &[i64],
) -> Result<Vec<(i64, i64, i64, String, String)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{CHAINS}
        SELECT DISTINCT ON (c.root, s.state_key_nid)
               c.root, s.state_key_nid, s.event_nid, k.event_type, k.state_key
        FROM chain c {ENTRIES}
        JOIN state_keys k ON k.state_key_nid = s.state_key_nid
        ORDER BY c.root, s.state_key_nid, c.lvl"
    ))
    .bind(groups)
    .bind(MAX_CHAIN_LEN)
    .fetch_all(e)
    .await
}

/// (type, state_key) of interned keys: (state_key_nid, type, state_key).
pub async fn keys_by_nid(
    e: impl PgExecutor<'_>,
    nids: &[i64],
) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT state_key_nid, event_type, state_key FROM state_keys WHERE state_key_nid = ANY($1)",
    )
    .bind(nids)
    .fetch_all(e)
    .await
}

/// Many current-state entries at once: (state_key_nid, event_nid).
pub async fn set_current_many(
    tx: &mut PgConnection,
    room_nid: i64,
    entries: &[(i64, i64)],
) -> Result<(), sqlx::Error> {
    let keys: Vec<i64> = entries.iter().map(|e| e.0).collect();
    let events: Vec<i64> = entries.iter().map(|e| e.1).collect();
    sqlx::query(
        "INSERT INTO current_state (room_nid, state_key_nid, event_nid)
         SELECT $1, * FROM unnest($2::bigint[], $3::bigint[])
         ON CONFLICT ON CONSTRAINT current_state_pkey DO UPDATE SET event_nid = EXCLUDED.event_nid",
    )
    .bind(room_nid)
    .bind(&keys)
    .bind(&events)
    .execute(tx)
    .await?;
    Ok(())
}

/// Drop keys from the room's current state (entries state resolution left without an event).
pub async fn remove_current(
    tx: &mut PgConnection,
    room_nid: i64,
    keys: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM current_state WHERE room_nid = $1 AND state_key_nid = ANY($2)")
        .bind(room_nid)
        .bind(keys)
        .execute(tx)
        .await?;
    Ok(())
}

/// For each of `groups`, its history visibility entry and the membership entries of the
/// users of `server`: (group, type, state_key, event_nid).
pub async fn visibility_for_server(
    e: impl PgExecutor<'_>,
    groups: &[i64],
    server: &str,
) -> Result<Vec<(i64, String, String, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{CHAINS}
        SELECT DISTINCT ON (c.root, s.state_key_nid) c.root, k.event_type, k.state_key, s.event_nid
        FROM chain c {ENTRIES}
        JOIN state_keys k ON k.state_key_nid = s.state_key_nid
        WHERE (k.event_type = 'm.room.history_visibility' AND k.state_key = '')
           OR (k.event_type = 'm.room.member'
               AND substring(k.state_key from position(':' in k.state_key) + 1) = $3)
        ORDER BY c.root, s.state_key_nid, c.lvl"
    ))
    .bind(groups)
    .bind(MAX_CHAIN_LEN)
    .bind(server)
    .fetch_all(e)
    .await
}

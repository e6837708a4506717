//! End-to-end encryption tables: device, one-time, fallback and cross-signing keys, key
//! signatures, the device-list change stream, to-device messages, the device-list versions and
//! to-device deduplication of federation, and room key backups.
//!
//! Key objects are stored and returned as JSON text; nothing here looks inside them except
//! the backup metadata the spec asks us to compare.

use sqlx::PgExecutor;

/// Advisory lock keys that serialise writers of a stream, so positions commit in order.
pub const DEVICE_LIST_LOCK: i64 = 0x7472_6c73_0001;
pub const TO_DEVICE_LOCK: i64 = 0x7472_6c73_0002;

/// Hold `lock` until the end of the transaction `e` belongs to.
pub async fn lock_stream(e: impl PgExecutor<'_>, lock: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(e)
        .await?;
    Ok(())
}

// ---- device keys, one-time and fallback keys ----

/// Store the device's identity keys; `false` when they are unchanged (no device-list bump).
pub async fn upsert_device_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    key_json: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT ON CONSTRAINT e2e_device_keys_pkey DO UPDATE SET key_json = EXCLUDED.key_json
         WHERE e2e_device_keys.key_json IS DISTINCT FROM EXCLUDED.key_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(key_json)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Add one-time keys (parallel arrays); a key ID already stored keeps its first upload.
pub async fn insert_one_time_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithms: &[String],
    key_ids: &[String],
    key_jsons: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
         SELECT $1, $2, a, k, j::jsonb FROM unnest($3::text[], $4::text[], $5::text[]) AS t(a, k, j)
         ON CONFLICT ON CONSTRAINT e2e_one_time_keys_pkey DO NOTHING",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithms)
    .bind(key_ids)
    .bind(key_jsons)
    .execute(e)
    .await?;
    Ok(())
}

/// Replace the fallback key of each algorithm given (at most one per algorithm), unused.
pub async fn upsert_fallback_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    algorithms: &[String],
    key_ids: &[String],
    key_jsons: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json)
         SELECT $1, $2, a, k, j::jsonb FROM unnest($3::text[], $4::text[], $5::text[]) AS t(a, k, j)
         ON CONFLICT ON CONSTRAINT e2e_fallback_keys_pkey DO UPDATE
         SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = FALSE",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithms)
    .bind(key_ids)
    .bind(key_jsons)
    .execute(e)
    .await?;
    Ok(())
}

/// Unclaimed one-time keys of a device: (algorithm, count).
pub async fn one_time_key_counts(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT algorithm, count(*) FROM e2e_one_time_keys
         WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(e)
    .await
}

/// With the one-time key counts, the algorithms whose fallback key has not been handed out
/// yet, in one query for /sync: (algorithm, one-time key count or `None` for an unused
/// fallback key).
pub async fn key_counts(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, Option<i64>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT algorithm, count(*) FROM e2e_one_time_keys
         WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
         UNION ALL
         SELECT algorithm, NULL FROM e2e_fallback_keys
         WHERE user_id = $1 AND device_id = $2 AND NOT used",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(e)
    .await
}

/// A device's keys with its display name (for `unsigned`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceKeysRow {
    pub user_id: String,
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

/// Device keys for (user, device) pairs in parallel arrays; a `None` device means all of the
/// user's devices.
pub async fn device_keys(
    e: impl PgExecutor<'_>,
    users: &[String],
    devices: &[Option<String>],
) -> Result<Vec<DeviceKeysRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT k.user_id, k.device_id, k.key_json::text AS key_json, d.display_name
         FROM unnest($1::text[], $2::text[]) AS r(u, dev)
         JOIN e2e_device_keys k ON k.user_id = r.u AND (r.dev IS NULL OR k.device_id = r.dev)
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id",
    )
    .bind(users)
    .bind(devices)
    .fetch_all(e)
    .await
}

/// A key handed out by a claim.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedKey {
    pub user_id: String,
    pub device_id: String,
    pub key_id: String,
    pub key_json: String,
}

/// Take (delete) one one-time key per requested (user, device, algorithm). `SKIP LOCKED` lets
/// concurrent claims take different keys instead of waiting on each other.
pub async fn claim_one_time_keys(
    e: impl PgExecutor<'_>,
    users: &[String],
    devices: &[String],
    algorithms: &[String],
) -> Result<Vec<ClaimedKey>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM e2e_one_time_keys k
         WHERE (k.user_id, k.device_id, k.algorithm, k.key_id) IN (
            SELECT r.u, r.d, r.a, (
                SELECT o.key_id FROM e2e_one_time_keys o
                WHERE o.user_id = r.u AND o.device_id = r.d AND o.algorithm = r.a
                ORDER BY o.key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
            FROM unnest($1::text[], $2::text[], $3::text[]) AS r(u, d, a))
         RETURNING k.user_id, k.device_id, k.key_id, k.key_json::text AS key_json",
    )
    .bind(users)
    .bind(devices)
    .bind(algorithms)
    .fetch_all(e)
    .await
}

/// Hand out the fallback key for each requested (user, device, algorithm), marking it used;
/// it stays stored, as the spec asks.
pub async fn claim_fallback_keys(
    e: impl PgExecutor<'_>,
    users: &[String],
    devices: &[String],
    algorithms: &[String],
) -> Result<Vec<ClaimedKey>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE e2e_fallback_keys f SET used = TRUE
         FROM unnest($1::text[], $2::text[], $3::text[]) AS r(u, d, a)
         WHERE f.user_id = r.u AND f.device_id = r.d AND f.algorithm = r.a
         RETURNING f.user_id, f.device_id, f.key_id, f.key_json::text AS key_json",
    )
    .bind(users)
    .bind(devices)
    .bind(algorithms)
    .fetch_all(e)
    .await
}

// ---- cross-signing keys and signatures ----

/// Store cross-signing keys of one user (parallel arrays: type, public key, JSON).
pub async fn upsert_cross_signing_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    key_types: &[String],
    key_ids: &[String],
    key_jsons: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_id, key_json)
         SELECT $1, t, k, j::jsonb FROM unnest($2::text[], $3::text[], $4::text[]) AS x(t, k, j)
         ON CONFLICT ON CONSTRAINT e2e_cross_signing_keys_pkey DO UPDATE
         SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json",
    )
    .bind(user_id)
    .bind(key_types)
    .bind(key_ids)
    .bind(key_jsons)
    .execute(e)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CrossSigningRow {
    pub user_id: String,
    pub key_type: String,
    pub key_id: String,
    pub key_json: String,
}

pub async fn cross_signing_keys(
    e: impl PgExecutor<'_>,
    users: &[String],
) -> Result<Vec<CrossSigningRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, key_type, key_id, key_json::text AS key_json
         FROM e2e_cross_signing_keys WHERE user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(e)
    .await
}

/// One uploaded signature.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignatureRow {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

pub async fn insert_signatures(
    e: impl PgExecutor<'_>,
    rows: &[SignatureRow],
) -> Result<(), sqlx::Error> {
    let col = |f: fn(&SignatureRow) -> &String| rows.iter().map(f).cloned().collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO e2e_key_signatures
            (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT ON CONSTRAINT e2e_key_signatures_pkey DO UPDATE
         SET signature = EXCLUDED.signature",
    )
    .bind(col(|r| &r.target_user_id))
    .bind(col(|r| &r.target_key_id))
    .bind(col(|r| &r.signer_user_id))
    .bind(col(|r| &r.signer_key_id))
    .bind(col(|r| &r.signature))
    .execute(e)
    .await?;
    Ok(())
}

/// Signatures on any key of the given users.
pub async fn signatures_on(
    e: impl PgExecutor<'_>,
    users: &[String],
) -> Result<Vec<SignatureRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
         FROM e2e_key_signatures WHERE target_user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(e)
    .await
}

// ---- device-list stream ----

/// Record that the keys of `users` changed. Call under [`DEVICE_LIST_LOCK`].
pub async fn mark_device_lists_changed(
    e: impl PgExecutor<'_>,
    users: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_list_changes (stream_id, user_id)
         SELECT nextval('device_list_stream'), u FROM unnest($1::text[]) AS t(u)",
    )
    .bind(users)
    .execute(e)
    .await?;
    Ok(())
}

/// The newest committed device-list position.
pub async fn max_device_list_stream(e: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(stream_id), 0) FROM device_list_changes")
        .fetch_one(e)
        .await
}

/// Users the caller must re-query keys for: those sharing a joined room with the caller whose
/// keys changed in (`after`, `upto`] (and the caller), plus those who came to share a room in
/// the event window (`ev_after`, `ev_upto`].
pub async fn changed_users(
    e: impl PgExecutor<'_>,
    user_id: &str,
    after: i64,
    upto: i64,
    ev_after: i64,
    ev_upto: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.user_id FROM device_list_changes c
         WHERE c.stream_id > $2 AND c.stream_id <= $3
           AND (c.user_id = $1 OR EXISTS (
                SELECT 1 FROM room_members a JOIN room_members b USING (room_nid)
                WHERE a.user_id = $1 AND a.membership = 'join'
                  AND b.user_id = c.user_id AND b.membership = 'join'))
         UNION
         SELECT b.user_id FROM room_members a JOIN room_members b USING (room_nid)
         JOIN events ea ON ea.event_nid = a.event_nid JOIN events eb ON eb.event_nid = b.event_nid
         WHERE a.user_id = $1 AND a.membership = 'join' AND b.membership = 'join'
           AND b.user_id <> $1
           AND ((ea.stream_ordering > $4 AND ea.stream_ordering <= $5)
             OR (eb.stream_ordering > $4 AND eb.stream_ordering <= $5))",
    )
    .bind(user_id)
    .bind(after)
    .bind(upto)
    .bind(ev_after)
    .bind(ev_upto)
    .fetch_all(e)
    .await
}

/// Users who stopped sharing any joined room with the caller in the event window
/// (`ev_after`, `ev_upto`]: they left one of the caller's rooms, or the caller left theirs.
pub async fn left_users(
    e: impl PgExecutor<'_>,
    user_id: &str,
    ev_after: i64,
    ev_upto: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT b.user_id FROM room_members a JOIN room_members b USING (room_nid)
         JOIN events ea ON ea.event_nid = a.event_nid JOIN events eb ON eb.event_nid = b.event_nid
         WHERE a.user_id = $1 AND b.user_id <> $1
           AND ((a.membership = 'join' AND b.membership IN ('leave', 'ban')
                 AND eb.stream_ordering > $2 AND eb.stream_ordering <= $3)
             OR (a.membership IN ('leave', 'ban') AND b.membership = 'join'
                 AND ea.stream_ordering > $2 AND ea.stream_ordering <= $3))
           AND NOT EXISTS (
                SELECT 1 FROM room_members x JOIN room_members y USING (room_nid)
                WHERE x.user_id = $1 AND x.membership = 'join'
                  AND y.user_id = b.user_id AND y.membership = 'join')",
    )
    .bind(user_id)
    .bind(ev_after)
    .bind(ev_upto)
    .fetch_all(e)
    .await
}

// ---- to-device messages ----

/// Remember a sender's transaction; `false` when it was already used (a retry).
pub async fn insert_to_device_txn(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT to_device_txns_pkey DO NOTHING",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(txn_id)
    .bind(now_ms)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Queue messages for (user, device, content) in parallel arrays; a `None` device means all
/// of the user's devices, and unknown devices are skipped. Call under [`TO_DEVICE_LOCK`].
pub async fn insert_to_device(
    e: impl PgExecutor<'_>,
    sender: &str,
    event_type: &str,
    users: &[String],
    devices: &[Option<String>],
    contents: &[String],
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO to_device_messages
            (stream_id, recipient_user_id, recipient_device_id, sender, event_type, content)
         SELECT nextval('to_device_stream'), d.user_id, d.device_id, $1, $2, t.c::jsonb
         FROM unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS t(u, dev, c, n)
         JOIN devices d ON d.user_id = t.u AND (t.dev IS NULL OR d.device_id = t.dev)
         ORDER BY t.n, d.device_id",
    )
    .bind(sender)
    .bind(event_type)
    .bind(users)
    .bind(devices)
    .bind(contents)
    .execute(e)
    .await?;
    Ok(r.rows_affected())
}

/// Forget the messages a device has acknowledged by syncing past them.
pub async fn delete_to_device_upto(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM to_device_messages
         WHERE recipient_user_id = $1 AND recipient_device_id = $2 AND stream_id <= $3",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(upto)
    .execute(e)
    .await?;
    Ok(())
}

/// A queued to-device message: (stream_id, sender, type, content JSON).
pub type ToDeviceRow = (i64, String, String, String);

pub async fn to_device_after(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<ToDeviceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT stream_id, sender, event_type, content::text FROM to_device_messages
         WHERE recipient_user_id = $1 AND recipient_device_id = $2 AND stream_id > $3
         ORDER BY stream_id LIMIT $4",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(after)
    .bind(limit)
    .fetch_all(e)
    .await
}

// ---- across servers ----

/// Give a local user's device list a new version for an outbound m.device_list_update:
/// (new stream_id, the previous one if any). Call under [`DEVICE_LIST_LOCK`], so two updates
/// of one user never name the same predecessor.
pub async fn next_outbound_device_list(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "WITH prev AS (SELECT stream_id FROM device_list_outbound WHERE user_id = $1)
         INSERT INTO device_list_outbound (user_id, stream_id)
         VALUES ($1, nextval('device_list_outbound_stream'))
         ON CONFLICT ON CONSTRAINT device_list_outbound_pkey DO UPDATE
         SET stream_id = EXCLUDED.stream_id
         RETURNING stream_id, (SELECT stream_id FROM prev)",
    )
    .bind(user_id)
    .fetch_one(e)
    .await
}

/// The current version of a local user's device list as other servers know it (0 before any
/// m.device_list_update was made for them).
pub async fn outbound_device_list(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(stream_id), 0) FROM device_list_outbound WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(e)
    .await
}

/// Record a remote user's device-list version; `false` when it is not newer than the one
/// already recorded (a repeated or stale update).
pub async fn advance_remote_device_list(
    e: impl PgExecutor<'_>,
    user_id: &str,
    stream_id: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO device_list_remote (user_id, stream_id) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT device_list_remote_pkey DO UPDATE
         SET stream_id = EXCLUDED.stream_id
         WHERE device_list_remote.stream_id < EXCLUDED.stream_id",
    )
    .bind(user_id)
    .bind(stream_id)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Whether `user_id` is joined to a room in which a user of `server_name` (ours) is joined.
pub async fn shares_room_with_local_user(
    e: impl PgExecutor<'_>,
    user_id: &str,
    server_name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (
            SELECT 1 FROM room_members r JOIN room_members l USING (room_nid)
            WHERE r.user_id = $1 AND r.membership = 'join' AND l.membership = 'join'
              AND right(l.user_id, length($2) + 1) = ':' || $2)",
    )
    .bind(user_id)
    .bind(server_name)
    .fetch_one(e)
    .await
}

/// The server names of everyone joined to a room the user is joined to (the user's own
/// server included): where the user's device-list changes must go.
pub async fn servers_sharing_rooms(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT substr(o.user_id, strpos(o.user_id, ':') + 1)
         FROM room_members m JOIN room_members o USING (room_nid)
         WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join'",
    )
    .bind(user_id)
    .fetch_all(e)
    .await
}

/// Remember an inbound m.direct_to_device message; `false` when the origin sent this
/// message_id before (a retried transaction).
pub async fn insert_federation_to_device_txn(
    e: impl PgExecutor<'_>,
    origin: &str,
    message_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO to_device_federation_txns (origin, message_id, received_ts)
         VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT to_device_federation_txns_pkey DO NOTHING",
    )
    .bind(origin)
    .bind(message_id)
    .bind(now_ms)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

// ---- room key backups ----

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupRow {
    pub version: i64,
    pub algorithm: String,
    pub etag: i64,
    pub count: i64,
}

pub async fn create_backup(
    e: impl PgExecutor<'_>,
    user_id: &str,
    algorithm: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO room_key_backups (user_id, version, algorithm)
         VALUES ($1, nextval('room_key_backup_versions'), $2::jsonb) RETURNING version",
    )
    .bind(user_id)
    .bind(algorithm)
    .fetch_one(e)
    .await
}

/// The given backup version, or the current (highest) one when `version` is `None`.
pub async fn backup(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: Option<i64>,
) -> Result<Option<BackupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.version, b.algorithm::text AS algorithm, b.etag,
                (SELECT count(*) FROM room_key_backup_keys k
                 WHERE k.user_id = b.user_id AND k.version = b.version) AS count
         FROM room_key_backups b
         WHERE b.user_id = $1 AND ($2::BIGINT IS NULL OR b.version = $2)
         ORDER BY b.version DESC LIMIT 1",
    )
    .bind(user_id)
    .bind(version)
    .fetch_optional(e)
    .await
}

pub async fn update_backup(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
    algorithm: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE room_key_backups SET algorithm = $3::jsonb WHERE user_id = $1 AND version = $2",
    )
    .bind(user_id)
    .bind(version)
    .bind(algorithm)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Delete a backup version with its keys (through the foreign key).
pub async fn delete_backup(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM room_key_backups WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(e)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Store session keys (parallel arrays). An existing key is replaced only by a better one:
/// verified beats unverified, then the lower first_message_index, then the lower
/// forwarded_count.
pub async fn put_backup_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
    rooms: &[String],
    sessions: &[String],
    datas: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_key_backup_keys (user_id, version, room_id, session_id, key_data)
         SELECT $1, $2, r, s, d::jsonb FROM unnest($3::text[], $4::text[], $5::text[]) AS t(r, s, d)
         ON CONFLICT ON CONSTRAINT room_key_backup_keys_pkey DO UPDATE SET key_data = EXCLUDED.key_data
         WHERE (COALESCE((EXCLUDED.key_data->>'is_verified')::boolean, FALSE),
                -COALESCE((EXCLUDED.key_data->>'first_message_index')::bigint, 0),
                -COALESCE((EXCLUDED.key_data->>'forwarded_count')::bigint, 0))
             > (COALESCE((room_key_backup_keys.key_data->>'is_verified')::boolean, FALSE),
                -COALESCE((room_key_backup_keys.key_data->>'first_message_index')::bigint, 0),
                -COALESCE((room_key_backup_keys.key_data->>'forwarded_count')::bigint, 0))",
    )
    .bind(user_id)
    .bind(version)
    .bind(rooms)
    .bind(sessions)
    .bind(datas)
    .execute(e)
    .await?;
    Ok(())
}

/// Mark the backup's keys as changed.
pub async fn bump_backup_etag(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE room_key_backups SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(e)
        .await?;
    Ok(())
}

/// Backed-up keys, optionally only of one room or one session: (room, session, data JSON).
pub async fn backup_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_id, session_id, key_data::text FROM room_key_backup_keys
         WHERE user_id = $1 AND version = $2
           AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)
         ORDER BY room_id, session_id",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .fetch_all(e)
    .await
}

pub async fn delete_backup_keys(
    e: impl PgExecutor<'_>,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM room_key_backup_keys
         WHERE user_id = $1 AND version = $2
           AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .execute(e)
    .await?;
    Ok(r.rows_affected())
}

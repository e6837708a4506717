//! The `devices` and `access_tokens` tables.

use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// The device was seen now, from `ip` (kept as it was when unknown).
pub async fn seen(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    now_ms: i64,
    ip: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET last_seen_ts = $3, last_seen_ip = COALESCE($4, last_seen_ip)
         WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(now_ms)
    .bind(ip)
    .execute(e)
    .await?;
    Ok(())
}

/// The owner of a token, with the flags every authenticated request checks.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub is_guest: bool,
    pub deactivated: bool,
    /// When the token stops being valid (ms since the epoch); `None`: at logout.
    pub expires_ts: Option<i64>,
}

/// Create the device, or keep the existing one (re-login with the same device ID), updating
/// its display name when one is given; whether the device is new.
pub async fn upsert(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    now_ms: i64,
    ip: Option<&str>,
) -> Result<bool, sqlx::Error> {
    // `xmax = 0` holds for a row this statement inserted, not for one it updated: whether
    // the device is new (a change of the user's device list).
    sqlx::query_scalar(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
         VALUES ($1, $2, $3, $4, $4, $5)
         ON CONFLICT ON CONSTRAINT devices_pkey DO UPDATE
         SET display_name = COALESCE(EXCLUDED.display_name, devices.display_name),
             last_seen_ts = EXCLUDED.last_seen_ts,
             last_seen_ip = COALESCE(EXCLUDED.last_seen_ip, devices.last_seen_ip)
         RETURNING xmax = 0",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(display_name)
    .bind(now_ms)
    .bind(ip)
    .fetch_one(e)
    .await
}

pub async fn insert_token(
    e: impl PgExecutor<'_>,
    token_hash: &[u8],
    user_id: &str,
    device_id: &str,
    now_ms: i64,
    expires_ts: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(device_id)
    .bind(now_ms)
    .bind(expires_ts)
    .execute(e)
    .await?;
    Ok(())
}

/// Store a refresh token of the device, and forget the device's access tokens expired
/// before `now_ms` (those a refresh replaced).
pub async fn insert_refresh_token(
    e: impl PgExecutor<'_>,
    token_hash: &[u8],
    user_id: &str,
    device_id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH expired AS (
             DELETE FROM access_tokens
             WHERE user_id = $2 AND device_id = $3 AND expires_ts <= $4
         )
         INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(device_id)
    .bind(now_ms)
    .execute(e)
    .await?;
    Ok(())
}

/// Use up a refresh token: remove it, and answer whose device it was (user, device,
/// whether the account is deactivated). `None` for an unknown or already used one.
pub async fn take_refresh_token(
    e: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<(String, String, bool)>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM refresh_tokens r USING users u
         WHERE r.token_hash = $1 AND u.user_id = r.user_id
         RETURNING r.user_id, r.device_id, u.deactivated",
    )
    .bind(token_hash)
    .fetch_optional(e)
    .await
}

pub async fn token_owner(
    e: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<TokenOwner>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.user_id, t.device_id, u.is_guest, u.deactivated, t.expires_ts
         FROM access_tokens t JOIN users u ON u.user_id = t.user_id
         WHERE t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(e)
    .await
}

/// Remove the device and, through the foreign key, every token it holds.
pub async fn delete(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(e)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Remove those of `device_ids` that are `user_id`'s (never another user's device of the
/// same ID); returns the IDs removed.
pub async fn delete_many(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2) RETURNING device_id",
    )
    .bind(user_id)
    .bind(device_ids)
    .fetch_all(e)
    .await
}

/// Remove every device of the user except `keep` (if given), with their tokens.
pub async fn delete_all_except(
    e: impl PgExecutor<'_>,
    user_id: &str,
    keep: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM devices WHERE user_id = $1 AND ($2::TEXT IS NULL OR device_id <> $2)",
    )
    .bind(user_id)
    .bind(keep)
    .execute(e)
    .await?;
    Ok(r.rows_affected())
}

pub async fn list(e: impl PgExecutor<'_>, user_id: &str) -> Result<Vec<DeviceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices
         WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user_id)
    .fetch_all(e)
    .await
}

pub async fn get(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices
         WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(e)
    .await
}

pub async fn set_display_name(
    e: impl PgExecutor<'_>,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let r =
        sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(display_name)
            .execute(e)
            .await?;
    Ok(r.rows_affected() > 0)
}

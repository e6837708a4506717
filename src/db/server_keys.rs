//! The `server_keys` table: verified signing keys of remote servers.

use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: i64,
    pub expired_ts: Option<i64>,
}

pub async fn keys_of(
    e: impl PgExecutor<'_>,
    server_name: &str,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, public_key, valid_until_ts, expired_ts FROM server_keys WHERE server_name = $1",
    )
    .bind(server_name)
    .fetch_all(e)
    .await
}

pub async fn upsert(
    e: impl PgExecutor<'_>,
    server_name: &str,
    key: &KeyRow,
    fetched_ts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT ON CONSTRAINT server_keys_pkey DO UPDATE
         SET public_key = EXCLUDED.public_key,
             valid_until_ts = GREATEST(server_keys.valid_until_ts, EXCLUDED.valid_until_ts),
             expired_ts = EXCLUDED.expired_ts, fetched_ts = EXCLUDED.fetched_ts",
    )
    .bind(server_name)
    .bind(&key.key_id)
    .bind(&key.public_key)
    .bind(key.valid_until_ts)
    .bind(key.expired_ts)
    .bind(fetched_ts)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn store_response(
    e: impl PgExecutor<'_>,
    server_name: &str,
    json: &str,
    valid_until_ts: i64,
    fetched_ts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO server_key_responses (server_name, json, valid_until_ts, fetched_ts)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT server_key_responses_pkey DO UPDATE
         SET json = EXCLUDED.json, valid_until_ts = EXCLUDED.valid_until_ts,
             fetched_ts = EXCLUDED.fetched_ts",
    )
    .bind(server_name)
    .bind(json)
    .bind(valid_until_ts)
    .bind(fetched_ts)
    .execute(e)
    .await?;
    Ok(())
}

/// The stored key response of a server, if it is valid until at least `min_valid_until`.
pub async fn response(
    e: impl PgExecutor<'_>,
    server_name: &str,
    min_valid_until: i64,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT json FROM server_key_responses WHERE server_name = $1 AND valid_until_ts >= $2",
    )
    .bind(server_name)
    .bind(min_valid_until)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|r| r.0))
}

//! The `openid_tokens` table.

use sqlx::PgExecutor;

/// Store a token (as its hash) for `user_id` until `expires_ts`, and forget those expired
/// before `now` (so the table holds only live tokens, without a task of its own).
pub async fn insert(
    e: impl PgExecutor<'_>,
    token_hash: &[u8],
    user_id: &str,
    expires_ts: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH expired AS (DELETE FROM openid_tokens WHERE expires_ts <= $4)
         INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(expires_ts)
    .bind(now)
    .execute(e)
    .await?;
    Ok(())
}

/// The user a token stands for, if it is known and not expired at `now`.
pub async fn user_of(
    e: impl PgExecutor<'_>,
    token_hash: &[u8],
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(e)
    .await
}

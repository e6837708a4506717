//! The `uiaa_sessions` and `registration_nonces` tables.

use sqlx::PgExecutor;
use sqlx::types::Json;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub user_id: Option<String>,
    pub purpose: String,
    pub completed: Vec<String>,
    pub created_ts: i64,
    /// The parameters of the request that began the session (or of the last one that had any).
    pub params: Json<serde_json::Map<String, serde_json::Value>>,
    pub password_hash: Option<String>,
    pub registered_user_id: Option<String>,
}

pub async fn create(
    e: impl PgExecutor<'_>,
    session_id: &str,
    user_id: Option<&str>,
    purpose: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO uiaa_sessions (session_id, user_id, purpose, created_ts) VALUES ($1, $2, $3, $4)",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(purpose)
    .bind(now_ms)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn get(
    e: impl PgExecutor<'_>,
    session_id: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, purpose, completed, created_ts, params, password_hash, registered_user_id
         FROM uiaa_sessions WHERE session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(e)
    .await
}

/// Record a completed stage; returns every stage completed so far.
pub async fn add_completed(
    e: impl PgExecutor<'_>,
    session_id: &str,
    stage: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let (completed,): (Vec<String>,) = sqlx::query_as(
        "UPDATE uiaa_sessions
         SET completed = CASE WHEN $2 = ANY(completed) THEN completed ELSE array_append(completed, $2) END
         WHERE session_id = $1
         RETURNING completed",
    )
    .bind(session_id)
    .bind(stage)
    .fetch_one(e)
    .await?;
    Ok(completed)
}

/// Remember the parameters of a request of the session (and, for a registration, the hash
/// of the password it asked for, unless one is kept already).
pub async fn set_params(
    e: impl PgExecutor<'_>,
    session_id: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    password_hash: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE uiaa_sessions SET params = $2, password_hash = COALESCE(password_hash, $3)
         WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(Json(params))
    .bind(password_hash)
    .execute(e)
    .await?;
    Ok(())
}

/// Record the account a registration session created; `false` when the session has one
/// already (the row lock makes a concurrent claim wait for this one's transaction, then fail).
pub async fn claim_registration(
    e: impl PgExecutor<'_>,
    session_id: &str,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE uiaa_sessions SET registered_user_id = $2
         WHERE session_id = $1 AND registered_user_id IS NULL",
    )
    .bind(session_id)
    .bind(user_id)
    .execute(e)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete(e: impl PgExecutor<'_>, session_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM uiaa_sessions WHERE session_id = $1")
        .bind(session_id)
        .execute(e)
        .await?;
    Ok(())
}

/// Drop sessions and nonces created before `before_ms`.
pub async fn expire(e: impl PgExecutor<'_> + Copy, before_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM uiaa_sessions WHERE created_ts < $1")
        .bind(before_ms)
        .execute(e)
        .await?;
    sqlx::query("DELETE FROM registration_nonces WHERE created_ts < $1")
        .bind(before_ms)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn insert_nonce(
    e: impl PgExecutor<'_>,
    nonce: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO registration_nonces (nonce, created_ts) VALUES ($1, $2)")
        .bind(nonce)
        .bind(now_ms)
        .execute(e)
        .await?;
    Ok(())
}

/// Consume a nonce; `true` when it existed and was created at or after `not_before_ms`.
pub async fn take_nonce(
    e: impl PgExecutor<'_>,
    nonce: &str,
    not_before_ms: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("DELETE FROM registration_nonces WHERE nonce = $1 RETURNING created_ts")
            .bind(nonce)
            .fetch_optional(e)
            .await?;
    Ok(matches!(row, Some((ts,)) if ts >= not_before_ms))
}

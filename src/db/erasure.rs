//! The `erased_users` table: users erased at deactivation.

use sqlx::PgExecutor;

/// Mark `user_id` erased (again is no change).
pub async fn mark(e: impl PgExecutor<'_>, user_id: &str, at_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO erased_users (user_id, erased_at) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT erased_users_pkey DO NOTHING",
    )
    .bind(user_id)
    .bind(at_ms)
    .execute(e)
    .await?;
    Ok(())
}

/// Every erased user.
pub async fn all(e: impl PgExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT user_id FROM erased_users")
        .fetch_all(e)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

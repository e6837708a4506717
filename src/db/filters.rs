//! The `filters` table: stored sync filters.

use serde_json::value::RawValue;
use sqlx::PgExecutor;
use sqlx::types::Json;

/// Store a validated filter and return its new ID.
pub async fn insert(
    e: impl PgExecutor<'_>,
    user_id: &str,
    filter: &str,
) -> Result<i64, sqlx::Error> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, nextval('filter_ids'), $2::jsonb)
         RETURNING filter_id",
    )
    .bind(user_id)
    .bind(filter)
    .fetch_one(e)
    .await?;
    Ok(id)
}

pub async fn get(
    e: impl PgExecutor<'_>,
    user_id: &str,
    filter_id: i64,
) -> Result<Option<Box<RawValue>>, sqlx::Error> {
    let row: Option<(Json<Box<RawValue>>,)> =
        sqlx::query_as("SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(e)
            .await?;
    Ok(row.map(|(j,)| j.0))
}

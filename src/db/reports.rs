//! The `reports` table: what users reported to the server's administrators.

use sqlx::PgExecutor;

/// A report to store.
pub struct NewReport<'a> {
    pub received_ts: i64,
    pub user_id: &'a str,
    pub room_id: &'a str,
    pub event_id: Option<&'a str>,
    pub reason: &'a str,
}

/// Store a report; its number.
pub async fn insert(e: impl PgExecutor<'_>, r: &NewReport<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO reports (received_ts, user_id, room_id, event_id, reason)
         VALUES ($1, $2, $3, $4, $5) RETURNING report_id",
    )
    .bind(r.received_ts)
    .bind(r.user_id)
    .bind(r.room_id)
    .bind(r.event_id)
    .bind(r.reason)
    .fetch_one(e)
    .await
}

//! What the query planner knows about the tables.

use sqlx::PgExecutor;

/// Tables of this schema changed by at least `min_changes` rows since they were last
/// analysed, and by more rows than they held then: tables still growing from nothing. Only
/// tables this role may analyse (it owns them) are named.
pub async fn outgrown_tables(
    e: impl PgExecutor<'_>,
    min_changes: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.schemaname = current_schema() AND pg_has_role(c.relowner, 'USAGE')
           AND s.n_mod_since_analyze >= $1
           AND s.n_mod_since_analyze > greatest(c.reltuples, 0)
         ORDER BY s.n_mod_since_analyze DESC",
    )
    .bind(min_changes)
    .fetch_all(e)
    .await
}

/// Gather the planner's statistics of one table (a name [`outgrown_tables`] returned).
pub async fn analyze(e: impl PgExecutor<'_>, table: &str) -> Result<(), sqlx::Error> {
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    sqlx::query(&format!("ANALYZE {quoted}")).execute(e).await?;
    Ok(())
}

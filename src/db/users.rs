//! The `users` table: accounts, passwords and profiles.

use sqlx::PgExecutor;

/// A user row as the account logic needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_guest: bool,
    pub is_admin: bool,
    pub deactivated: bool,
}

pub struct NewUser<'a> {
    pub user_id: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_guest: bool,
    pub is_admin: bool,
    pub displayname: Option<&'a str>,
    pub created_ts: i64,
}

/// The constraint a duplicate user ID violates.
pub const USERS_PKEY: &str = "users_pkey";

pub async fn insert(e: impl PgExecutor<'_>, u: &NewUser<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (user_id, password_hash, is_guest, is_admin, displayname, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(u.user_id)
    .bind(u.password_hash)
    .bind(u.is_guest)
    .bind(u.is_admin)
    .bind(u.displayname)
    .bind(u.created_ts)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn get(e: impl PgExecutor<'_>, user_id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, password_hash, is_guest, is_admin, deactivated FROM users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(e)
    .await
}

pub async fn exists(e: impl PgExecutor<'_>, user_id: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(e)
        .await?;
    Ok(row.is_some())
}

pub async fn set_password_hash(
    e: impl PgExecutor<'_>,
    user_id: &str,
    hash: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(e)
        .await?;
    Ok(())
}

/// Make a guest account a full one with a password; `false` when `user_id` is no active
/// guest (already upgraded, say).
pub async fn upgrade_guest(
    e: impl PgExecutor<'_>,
    user_id: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET is_guest = FALSE, password_hash = $2
         WHERE user_id = $1 AND is_guest AND NOT deactivated",
    )
    .bind(user_id)
    .bind(password_hash)
    .execute(e)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The local guest accounts joined to the room, in one read.
pub async fn joined_guests(
    e: impl PgExecutor<'_>,
    room_nid: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT m.user_id FROM room_members m JOIN users u USING (user_id)
         WHERE m.room_nid = $1 AND m.membership = 'join' AND u.is_guest",
    )
    .bind(room_nid)
    .fetch_all(e)
    .await
}

/// Mark the account deactivated and drop what identified its owner.
pub async fn deactivate(e: impl PgExecutor<'_>, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET deactivated = TRUE, password_hash = NULL, displayname = NULL,
                avatar_url = NULL
         WHERE user_id = $1",
    )
    .bind(user_id)
    .execute(e)
    .await?;
    Ok(())
}

/// Display name and avatar URL; `None` when the user does not exist.
pub async fn profile(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<(Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT displayname, avatar_url FROM users WHERE user_id = $1 AND NOT deactivated",
    )
    .bind(user_id)
    .fetch_optional(e)
    .await
}

pub async fn set_displayname(
    e: impl PgExecutor<'_>,
    user_id: &str,
    displayname: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET displayname = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(displayname)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn set_avatar_url(
    e: impl PgExecutor<'_>,
    user_id: &str,
    avatar_url: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET avatar_url = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(avatar_url)
        .execute(e)
        .await?;
    Ok(())
}

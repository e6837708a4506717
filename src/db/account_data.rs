//! The `account_data` table: per-user data, global (`room_id = ''`) or per room.

use serde_json::value::RawValue;
use sqlx::PgExecutor;
use sqlx::types::Json;

/// Global account data is stored under this room ID.
pub const GLOBAL: &str = "";

pub async fn get(
    e: impl PgExecutor<'_>,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> Result<Option<Box<RawValue>>, sqlx::Error> {
    let row: Option<(Json<Box<RawValue>>,)> = sqlx::query_as(
        "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(data_type)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|(j,)| j.0))
}

/// The global account data type that lists the users a user ignores.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// The users `user_id` ignores: the keys of `ignored_users` in their `m.ignored_user_list`
/// (nobody when it is absent or not an object, as Synapse reads it).
pub async fn ignored_users(
    e: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT jsonb_object_keys(content->'ignored_users') FROM account_data
         WHERE user_id = $1 AND room_id = '' AND data_type = $2
           AND jsonb_typeof(content->'ignored_users') = 'object'",
    )
    .bind(user_id)
    .bind(IGNORED_USER_LIST)
    .fetch_all(e)
    .await
}

/// Advisory lock class (the first key of the two-key form; the second is a hash of the
/// user ID) that serialises each user's account data writers.
const USER_STREAM_LOCK: i32 = 0x7472_6c61;

/// Hold the lock on `user_id`'s account data writes until the end of the transaction `e`
/// belongs to. A position is drawn from the sequence before its row commits, so two writes
/// of one user could commit out of order (11 before 10), and a reader that took 11 would
/// never see 10; under this lock one user's rows commit in position order, and
/// [`super::sync::max_account_data_stream`] may take the highest committed one.
pub async fn lock_user_stream(e: impl PgExecutor<'_>, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(USER_STREAM_LOCK)
        .bind(user_id)
        .execute(e)
        .await?;
    Ok(())
}

/// Store `content`, replacing what was there, and move it to the head of the stream. Call
/// under [`lock_user_stream`].
pub async fn put(
    e: impl PgExecutor<'_>,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &RawValue,
) -> Result<i64, sqlx::Error> {
    let (stream_id,): (i64,) = sqlx::query_as(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)
         VALUES ($1, $2, $3, $4::jsonb, nextval('account_data_stream'))
         ON CONFLICT ON CONSTRAINT account_data_pkey DO UPDATE
         SET content = EXCLUDED.content, stream_id = EXCLUDED.stream_id
         RETURNING stream_id",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(data_type)
    .bind(content.get())
    .fetch_one(e)
    .await?;
    Ok(stream_id)
}

/// Set (`Some` content) or remove (`None`) one tag of the user's `m.tag` room account data,
/// in one statement so that concurrent changes of different tags all hold. Call under
/// [`lock_user_stream`].
pub async fn change_tag(
    e: impl PgExecutor<'_>,
    user_id: &str,
    room_id: &str,
    tag: &str,
    content: Option<&RawValue>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)
         VALUES ($1, $2, 'm.tag',
                 jsonb_build_object('tags', CASE WHEN $4::jsonb IS NULL THEN '{}'::jsonb
                                                 ELSE jsonb_build_object($3::text, $4::jsonb) END),
                 nextval('account_data_stream'))
         ON CONFLICT ON CONSTRAINT account_data_pkey DO UPDATE
         SET content = jsonb_set(
                 account_data.content, '{tags}',
                 CASE WHEN $4::jsonb IS NULL
                      THEN COALESCE(account_data.content->'tags', '{}'::jsonb) - $3::text
                      ELSE COALESCE(account_data.content->'tags', '{}'::jsonb)
                           || jsonb_build_object($3::text, $4::jsonb) END),
             stream_id = EXCLUDED.stream_id
         RETURNING stream_id",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(tag)
    .bind(content.map(RawValue::get))
    .fetch_one(e)
    .await
}

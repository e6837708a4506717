//! The media repository's tables: `media`, `media_thumbnails`, `media_url_previews`.

use sqlx::PgExecutor;

/// One row of `media`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MediaRow {
    pub server_name: String,
    pub media_id: String,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// None while an asynchronous upload is pending.
    pub size: Option<i64>,
    /// None while an asynchronous upload is pending.
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub unused_expires_ts: Option<i64>,
    pub not_an_image: bool,
}

/// What a stored file is.
pub struct NewMedia<'a> {
    pub server_name: &'a str,
    pub media_id: &'a str,
    pub uploader: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub size: i64,
    pub sha256: &'a str,
    pub now: i64,
}

const COLUMNS: &str = "server_name, media_id, uploader, content_type, filename, size, sha256, \
                       created_ts, unused_expires_ts, not_an_image";

pub async fn get(
    e: impl PgExecutor<'_>,
    server_name: &str,
    media_id: &str,
) -> Result<Option<MediaRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM media WHERE server_name = $1 AND media_id = $2"
    ))
    .bind(server_name)
    .bind(media_id)
    .fetch_optional(e)
    .await
}

/// Record media whose content is stored. A row already there (another request cached the
/// same remote media first) is kept.
pub async fn insert(e: impl PgExecutor<'_>, m: &NewMedia<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO media (server_name, media_id, uploader, content_type, filename, size, sha256,
                            created_ts, uploaded_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT ON CONSTRAINT media_pkey DO NOTHING",
    )
    .bind(m.server_name)
    .bind(m.media_id)
    .bind(m.uploader)
    .bind(m.content_type)
    .bind(m.filename)
    .bind(m.size)
    .bind(m.sha256)
    .bind(m.now)
    .execute(e)
    .await?;
    Ok(())
}

/// Reserve a URI for content uploaded later, unless `uploader` already holds `max_pending`
/// unexpired reservations. Returns whether it was reserved. One statement, so concurrent
/// reservations cannot both slip under the cap by much (READ COMMITTED: at most by the
/// number of racing requests).
pub async fn reserve(
    e: impl PgExecutor<'_>,
    server_name: &str,
    media_id: &str,
    uploader: &str,
    now: i64,
    expires: i64,
    max_pending: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO media (server_name, media_id, uploader, created_ts, unused_expires_ts)
         SELECT $1, $2, $3, $4, $5
         WHERE (SELECT count(*) FROM media
                WHERE uploader = $3 AND sha256 IS NULL AND unused_expires_ts > $4) < $6",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(uploader)
    .bind(now)
    .bind(expires)
    .bind(max_pending)
    .execute(e)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fill a reserved URI with its content, if it is still pending and unexpired. Returns
/// whether it was filled.
#[allow(clippy::too_many_arguments)]
pub async fn fill_reserved(
    e: impl PgExecutor<'_>,
    server_name: &str,
    media_id: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
    size: i64,
    sha256: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE media SET content_type = $3, filename = $4, size = $5, sha256 = $6,
                          uploaded_ts = $7
         WHERE server_name = $1 AND media_id = $2 AND sha256 IS NULL AND unused_expires_ts > $7",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(content_type)
    .bind(filename)
    .bind(size)
    .bind(sha256)
    .bind(now)
    .execute(e)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Remember that the media could not be decoded as an image.
pub async fn mark_not_an_image(
    e: impl PgExecutor<'_>,
    server_name: &str,
    media_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE media SET not_an_image = true WHERE server_name = $1 AND media_id = $2")
        .bind(server_name)
        .bind(media_id)
        .execute(e)
        .await?;
    Ok(())
}

/// One row of `media_thumbnails`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThumbnailRow {
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

pub async fn thumbnail(
    e: impl PgExecutor<'_>,
    server_name: &str,
    media_id: &str,
    width: i32,
    height: i32,
    method: &str,
) -> Result<Option<ThumbnailRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT content_type, size, sha256 FROM media_thumbnails
         WHERE server_name = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(width)
    .bind(height)
    .bind(method)
    .fetch_optional(e)
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_thumbnail(
    e: impl PgExecutor<'_>,
    server_name: &str,
    media_id: &str,
    width: i32,
    height: i32,
    method: &str,
    thumbnail: &ThumbnailRow,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO media_thumbnails
             (server_name, media_id, width, height, method, content_type, size, sha256, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT ON CONSTRAINT media_thumbnails_pkey DO NOTHING",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(width)
    .bind(height)
    .bind(method)
    .bind(&thumbnail.content_type)
    .bind(thumbnail.size)
    .bind(&thumbnail.sha256)
    .bind(now)
    .execute(e)
    .await?;
    Ok(())
}

/// A cached preview of `url` fetched at or after `since` (ms).
pub async fn url_preview(
    e: impl PgExecutor<'_>,
    url: &str,
    since: i64,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let row: Option<(serde_json::Value,)> = sqlx::query_as(
        "SELECT preview FROM media_url_previews WHERE url = $1 AND fetched_ts >= $2",
    )
    .bind(url)
    .bind(since)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|(v,)| v))
}

pub async fn store_url_preview(
    e: impl PgExecutor<'_>,
    url: &str,
    preview: &serde_json::Value,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO media_url_previews (url, fetched_ts, preview) VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT media_url_previews_pkey
         DO UPDATE SET fetched_ts = EXCLUDED.fetched_ts, preview = EXCLUDED.preview",
    )
    .bind(url)
    .bind(now)
    .bind(preview)
    .execute(e)
    .await?;
    Ok(())
}

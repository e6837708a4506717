//! The media repository: uploads (in one step or reserved first), downloads of local and
//! remote media, thumbnails and URL previews. Files are content-addressed on disk
//! ([`store`]); what they are is in Postgres (`db::media`). No HTTP types here: bodies come in
//! as byte streams and go out as open files.

pub mod multipart;
mod preview;
pub mod remote;
pub mod store;
pub mod thumbnail;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use ruma::api::error::{ErrorKind, LimitExceededErrorData};
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::{OwnedMxcUri, OwnedServerName, ServerName, UserId};
use sqlx::PgPool;
use tokio::sync::{Mutex as AsyncMutex, Notify, OwnedMutexGuard, Semaphore};

use crate::account::now_ms;
use crate::config::MediaConfig;
use crate::db::media::{self as db, MediaRow, NewMedia};
use crate::error::{Error, Result};
use crate::federation::client::FederationClient;
use store::{MediaStore, StoreError, Stored};
use thumbnail::{ThumbnailError, Wanted};

/// Longest a download waits for a reserved URI's content, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest one thumbnail may take to decode and encode.
const THUMBNAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// Thumbnails made at once (decoding is CPU- and memory-heavy).
const THUMBNAIL_WORKERS: usize = 2;

/// How a download was asked for, which decides what may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/_matrix/client/v1/media`: an authenticated user, local or remote media.
    Client,
    /// The legacy unauthenticated `/_matrix/media/v3`: only media from before the freeze.
    Legacy { allow_remote: bool },
    /// Another server, through `/_matrix/federation/v1/media`: only our own media.
    Federation,
}

/// What the uploader says about a file.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// A stored file ready to be sent.
pub struct MediaFile {
    pub file: tokio::fs::File,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

impl MediaFile {
    /// The spec's rule: `inline` only for content types browsers render safely, otherwise
    /// `attachment`; the file name is the one asked for in the URL, else the uploaded one.
    pub fn content_disposition(&self, requested_name: Option<&str>) -> ContentDisposition {
        let essence = essence(&self.content_type);
        let kind = if ruma::api::client::media::is_safe_inline_content_type(&essence) {
            ContentDispositionType::Inline
        } else {
            ContentDispositionType::Attachment
        };
        let name = requested_name
            .or(self.filename.as_deref())
            .map(str::to_owned);
        ContentDisposition::new(kind).with_filename(name)
    }
}

/// A content type without parameters, lowercased: `Text/Plain; charset=x` is `text/plain`.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    store: MediaStore,
    config: MediaConfig,
    server_name: OwnedServerName,
    client: Arc<FederationClient>,
    /// Woken whenever a reserved URI gets its content.
    uploaded: Notify,
    /// One remote fetch or thumbnail at a time per media, so a burst of requests for the
    /// same file does the work once.
    busy: KeyedLocks,
    thumbnail_workers: Arc<Semaphore>,
}

impl Media {
    pub fn new(
        db: PgPool,
        root: std::path::PathBuf,
        config: MediaConfig,
        server_name: OwnedServerName,
        client: Arc<FederationClient>,
    ) -> Result<Self> {
        Ok(Media {
            inner: Arc::new(Inner {
                db,
                store: MediaStore::open(root)?,
                config,
                server_name,
                client,
                uploaded: Notify::new(),
                busy: KeyedLocks::default(),
                thumbnail_workers: Arc::new(Semaphore::new(THUMBNAIL_WORKERS)),
            }),
        })
    }

    pub fn max_upload_size(&self) -> u64 {
        self.inner.config.max_upload_size
    }

    fn ours(&self, server: &ServerName) -> bool {
        server == self.inner.server_name
    }

    /// Store an upload and give it a new URI.
    #[tracing::instrument(skip_all, fields(%uploader))]
    pub async fn upload<S, E>(
        &self,
        uploader: &UserId,
        meta: Upload,
        body: S,
    ) -> Result<OwnedMxcUri>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        check_upload(&meta)?;
        let stored = self.store(body).await?;
        let media_id = new_media_id();
        let inner = &self.inner;
        db::insert(
            &inner.db,
            &NewMedia {
                server_name: inner.server_name.as_str(),
                media_id: &media_id,
                uploader: Some(uploader.as_str()),
                content_type: meta.content_type.as_deref(),
                filename: meta.filename.as_deref(),
                size: stored.size as i64,
                sha256: &stored.sha256,
                now: now_ms(),
            },
        )
        .await?;
        Ok(self.mxc(&media_id))
    }

    /// Reserve a URI whose content is uploaded later: the URI and when the reservation lapses.
    pub async fn reserve(&self, uploader: &UserId) -> Result<(OwnedMxcUri, i64)> {
        let inner = &self.inner;
        let media_id = new_media_id();
        let now = now_ms();
        let expires = now + (inner.config.pending_upload_expiry_secs * 1000) as i64;
        let reserved = db::reserve(
            &inner.db,
            inner.server_name.as_str(),
            &media_id,
            uploader.as_str(),
            now,
            expires,
            i64::from(inner.config.max_pending_uploads),
        )
        .await?;
        if !reserved {
            return Err(Error::new(
                ErrorKind::LimitExceeded(LimitExceededErrorData::new()),
                "Too many reserved media URIs are waiting for their content",
            ));
        }
        Ok((self.mxc(&media_id), expires))
    }

    /// Upload the content of a URI reserved by [`Self::reserve`].
    #[tracing::instrument(skip_all, fields(%uploader, %media_id))]
    pub async fn upload_reserved<S, E>(
        &self,
        uploader: &UserId,
        server: &ServerName,
        media_id: &str,
        meta: Upload,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        check_server_name(server)?;
        check_media_id(media_id)?;
        check_upload(&meta)?;
        let inner = &self.inner;
        let unknown = || Error::not_found("No such reserved media URI");
        if !self.ours(server) {
            return Err(unknown());
        }
        let row = db::get(&inner.db, server.as_str(), media_id)
            .await?
            .ok_or_else(unknown)?;
        if row.uploader.as_deref() != Some(uploader.as_str()) {
            return Err(Error::forbidden(
                "This media URI was reserved by someone else",
            ));
        }
        if row.sha256.is_some() {
            return Err(cannot_overwrite());
        }
        if row.unused_expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(unknown());
        }
        let stored = self.store(body).await?;
        let filled = db::fill_reserved(
            &inner.db,
            server.as_str(),
            media_id,
            meta.content_type.as_deref(),
            meta.filename.as_deref(),
            stored.size as i64,
            &stored.sha256,
            now_ms(),
        )
        .await?;
        if !filled {
            // Another upload won the race, or the reservation lapsed meanwhile.
            let row = db::get(&inner.db, server.as_str(), media_id).await?;
            return Err(match row.and_then(|r| r.sha256) {
                Some(_) => cannot_overwrite(),
                None => unknown(),
            });
        }
        inner.uploaded.notify_waiters();
        Ok(())
    }

    /// The file behind `mxc://server/media_id`, fetched from `server` first when it is
    /// another server's and not cached. A reserved URI is waited for up to `wait`.
    #[tracing::instrument(skip_all, fields(%server, %media_id))]
    pub async fn download(
        &self,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
        access: Access,
    ) -> Result<MediaFile> {
        let row = self.resolve(server, media_id, wait, access).await?;
        let sha256 = row.sha256.as_deref().ok_or_else(missing_file)?;
        let (file, size) = self.open(sha256).await?;
        Ok(MediaFile {
            file,
            size,
            content_type: stored_content_type(row.content_type.as_deref()),
            filename: row.filename,
        })
    }

    /// A thumbnail of an image, at the recommended size nearest to what is asked, made once
    /// and stored.
    #[tracing::instrument(skip_all, fields(%server, %media_id, width = wanted.width, height = wanted.height))]
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        wanted: Wanted,
        wait: Duration,
        access: Access,
    ) -> Result<MediaFile> {
        if wanted.width == 0 || wanted.height == 0 {
            return Err(Error::invalid_param("width and height must be positive"));
        }
        let row = self.resolve(server, media_id, wait, access).await?;
        if row.not_an_image {
            return Err(not_thumbnailable());
        }
        let size = thumbnail::choose(wanted.width, wanted.height, wanted.fit);
        let inner = &self.inner;
        let stored = || {
            db::thumbnail(
                &inner.db,
                server.as_str(),
                media_id,
                size.width as i32,
                size.height as i32,
                size.method.as_str(),
            )
        };
        let thumb = match stored().await? {
            Some(t) => t,
            None => {
                let _busy = inner.busy.lock(format!("thumb/{server}/{media_id}")).await;
                match stored().await? {
                    Some(t) => t,
                    None => self.make_thumbnail(&row, size).await?,
                }
            }
        };
        let (file, len) = self.open(&thumb.sha256).await?;
        Ok(MediaFile {
            file,
            size: len,
            content_type: thumb.content_type,
            filename: None,
        })
    }

    async fn make_thumbnail(
        &self,
        row: &MediaRow,
        size: thumbnail::Size,
    ) -> Result<db::ThumbnailRow> {
        let inner = &self.inner;
        let sha256 = row.sha256.as_deref().ok_or_else(missing_file)?;
        let path = inner.store.path(sha256);
        let max_pixels = inner.config.max_image_pixels;
        // The permit goes with the work: a render abandoned at the timeout still holds it
        // until it really ends, so abandoned renders cannot pile up.
        let worker = inner
            .thumbnail_workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("thumbnail workers closed"))?;
        let job = tokio::task::spawn_blocking(move || {
            let rendered = thumbnail::render(&path, size, max_pixels);
            drop(worker);
            rendered
        });
        let rendered = match tokio::time::timeout(THUMBNAIL_TIMEOUT, job).await {
            Err(_) => {
                tracing::warn!("thumbnail took too long; abandoned");
                return Err(Error::bad_request(
                    "This media could not be thumbnailed in time",
                ));
            }
            Ok(Err(e)) => return Err(Error::internal(format!("thumbnail task: {e}"))),
            Ok(Ok(Err(ThumbnailError::NotAnImage))) => {
                db::mark_not_an_image(&inner.db, &row.server_name, &row.media_id).await?;
                return Err(not_thumbnailable());
            }
            Ok(Ok(Err(ThumbnailError::TooManyPixels(_)))) => {
                return Err(Error::bad_request("This image is too large to thumbnail"));
            }
            Ok(Ok(Err(e))) => return Err(Error::internal(e.to_string())),
            Ok(Ok(Ok(r))) => r,
        };
        let stored = inner
            .store
            .write_bytes(Bytes::from(rendered.bytes))
            .await
            .map_err(store_error)?;
        let thumb = db::ThumbnailRow {
            content_type: rendered.content_type.to_owned(),
            size: stored.size as i64,
            sha256: stored.sha256,
        };
        db::insert_thumbnail(
            &inner.db,
            &row.server_name,
            &row.media_id,
            size.width as i32,
            size.height as i32,
            size.method.as_str(),
            &thumb,
            now_ms(),
        )
        .await?;
        Ok(thumb)
    }

    /// The row of a media with content, as far as `access` may see it.
    async fn resolve(
        &self,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
        access: Access,
    ) -> Result<MediaRow> {
        check_server_name(server)?;
        check_media_id(media_id)?;
        let row = if self.ours(server) {
            self.local(media_id, wait.min(MAX_WAIT)).await?
        } else {
            self.remote(server, media_id, wait, access).await?
        };
        if let Access::Legacy { .. } = access
            && row.created_ts >= self.inner.config.legacy_unauthenticated_before_ms
        {
            return Err(frozen());
        }
        Ok(row)
    }

    /// A local media row with content, waiting up to `wait` for a reserved URI's upload.
    async fn local(&self, media_id: &str, wait: Duration) -> Result<MediaRow> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the read, so an upload landing in between still wakes us.
            let uploaded = inner.uploaded.notified();
            let row = db::get(&inner.db, inner.server_name.as_str(), media_id)
                .await?
                .ok_or_else(unknown_media)?;
            if row.sha256.is_some() {
                return Ok(row);
            }
            if row.unused_expires_ts.is_some_and(|t| t <= now_ms()) {
                return Err(unknown_media());
            }
            if tokio::time::timeout_at(deadline, uploaded).await.is_err() {
                return Err(Error::new(
                    ErrorKind::NotYetUploaded,
                    "The content of this media has not been uploaded yet",
                ));
            }
        }
    }

    /// A remote media row, fetched over federation when not cached.
    async fn remote(
        &self,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
        access: Access,
    ) -> Result<MediaRow> {
        let inner = &self.inner;
        if let Some(row) = self.cached(server, media_id).await? {
            return Ok(row);
        }
        let may_fetch = match access {
            Access::Client => true,
            Access::Federation => false,
            // Fetching now would store it after the freeze: it could never be served here.
            Access::Legacy { allow_remote } => {
                allow_remote && now_ms() < inner.config.legacy_unauthenticated_before_ms
            }
        };
        if !may_fetch || !inner.config.fetch_remote {
            return Err(unknown_media());
        }
        let _busy = inner.busy.lock(format!("fetch/{server}/{media_id}")).await;
        // Whoever held the lock before us may have fetched it.
        if let Some(row) = self.cached(server, media_id).await? {
            return Ok(row);
        }
        self.fetch_remote(server, media_id, wait).await
    }

    /// A remote media's row, when its content is cached here.
    async fn cached(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRow>> {
        let row = db::get(&self.inner.db, server.as_str(), media_id).await?;
        Ok(row.filter(|r| r.sha256.is_some()))
    }

    async fn store<S, E>(&self, body: S) -> Result<Stored>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.inner
            .store
            .write(body, self.inner.config.max_upload_size)
            .await
            .map_err(store_error)
    }

    async fn open(&self, sha256: &str) -> Result<(tokio::fs::File, u64)> {
        self.inner.store.open_file(sha256).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                missing_file()
            } else {
                Error::Io(e)
            }
        })
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.inner.server_name))
    }
}

/// Media IDs are opaque to clients but, per the spec, only `[A-Za-z0-9_-]`.
fn check_media_id(media_id: &str) -> Result<()> {
    let ok = !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_param("Malformed media ID"))
    }
}

/// The server of an `mxc://` URI, before it is looked up or asked for the media.
fn check_server_name(server: &ServerName) -> Result<()> {
    if crate::federation::discovery::is_valid_server_name(server) {
        Ok(())
    } else {
        Err(Error::invalid_param("Malformed server name"))
    }
}

fn check_upload(meta: &Upload) -> Result<()> {
    if meta.filename.as_ref().is_some_and(|f| f.len() > 255) {
        return Err(Error::invalid_param("File name is longer than 255 bytes"));
    }
    if meta
        .content_type
        .as_ref()
        .is_some_and(|c| !is_header_safe(c))
    {
        return Err(Error::invalid_param("Invalid content type"));
    }
    Ok(())
}

/// Short, visible ASCII: safe to repeat in a header of a response or a multipart part.
fn is_header_safe(value: &str) -> bool {
    value.len() <= 255 && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn new_media_id() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Media stored without a content type is served as bytes, never guessed at.
fn stored_content_type(content_type: Option<&str>) -> String {
    content_type
        .filter(|c| !c.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned()
}

fn unknown_media() -> Error {
    Error::not_found("Media not found")
}

fn frozen() -> Error {
    Error::not_found("This media is only served through the authenticated media endpoints")
}

fn missing_file() -> Error {
    Error::internal("a media row points at no stored file")
}

fn cannot_overwrite() -> Error {
    Error::new(
        ErrorKind::CannotOverwriteMedia,
        "This media URI already has content",
    )
}

fn not_thumbnailable() -> Error {
    Error::bad_request("This media cannot be thumbnailed")
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::TooLarge(limit) => {
            Error::too_large(format!("Content is larger than {limit} bytes"))
        }
        StoreError::Source(why) => Error::bad_request(format!("Reading the content failed: {why}")),
        StoreError::Io(e) => Error::Io(e),
    }
}

/// Async locks by name, dropped from the map once nobody holds or waits for them.
#[derive(Default)]
struct KeyedLocks(Mutex<HashMap<String, Arc<AsyncMutex<()>>>>);

struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: String) -> KeyedGuard<'_> {
        let mutex = self.0.lock().entry(key.clone()).or_default().clone();
        KeyedGuard {
            locks: self,
            key,
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.0.lock();
        self.guard = None;
        // Only the map's reference left: nobody holds or waits for this lock.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_checked() {
        assert!(check_media_id("abcXYZ019_-").is_ok());
        for bad in ["", "a/b", "..", "a b", "é", &"a".repeat(256)] {
            assert!(check_media_id(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn dispositions_follow_the_spec() {
        let file = |ct: &str, name: Option<&str>| MediaFile {
            file: tokio::fs::File::from_std(tempfile::tempfile().unwrap()),
            size: 0,
            content_type: ct.to_owned(),
            filename: name.map(str::to_owned),
        };
        let d = file("image/png", Some("cat.png")).content_disposition(None);
        assert_eq!(d.to_string(), "inline; filename=cat.png");
        let d = file("text/html", Some("x.html")).content_disposition(Some("y.html"));
        assert_eq!(d.to_string(), "attachment; filename=y.html");
        let d = file("Text/Plain; charset=utf-8", None).content_disposition(None);
        assert_eq!(d.to_string(), "inline");
    }
}

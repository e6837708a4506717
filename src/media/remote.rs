//! Fetching another server's media over federation and caching it here.

use std::time::Duration;

use ruma::ServerName;
use ruma::api::federation::authenticated_media::get_content;
use ruma::http_headers::ContentDisposition;

use super::multipart::{self, MultipartError, MultipartReader};
use super::{Media, store_error};
use crate::account::now_ms;
use crate::db::media::{self as db, MediaRow, NewMedia};
use crate::error::{Error, Result};
use crate::federation::client::FederationError;

/// Largest metadata part accepted (the spec's is `{}`).
const MAX_METADATA: usize = 64 * 1024;

impl Media {
    /// Download `mxc://server/media_id` from `server` with
    /// `GET /_matrix/federation/v1/media/download`:
    ///
    /// 1. signed request; the answer's body is `multipart/mixed`;
    /// 2. the first part is JSON metadata (checked to be an object, otherwise unused);
    /// 3. the second part is the file, streamed into the store under the upload size limit,
    ///    or a `Location` header, whose URL is fetched through the same address guard;
    /// 4. the media row is recorded, with the content type and file name the remote gave.
    pub(super) async fn fetch_remote(
        &self,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<MediaRow> {
        let inner = &self.inner;
        let timeout = Duration::from_secs(inner.config.remote_timeout_secs);
        let mut request = get_content::v1::Request::new(media_id.to_owned());
        request.timeout_ms = wait;
        let response = inner
            .client
            .send_streaming(server, request, timeout)
            .await
            .map_err(fetch_error)?;
        let bad = |e: MultipartError| Error::Upstream(format!("{server}: media answer: {e}"));
        let boundary =
            multipart::boundary(header(response.headers(), "content-type").unwrap_or(""))
                .map_err(bad)?;
        let mut reader = MultipartReader::new(Box::pin(response.bytes_stream()), &boundary);

        reader
            .next_part()
            .await
            .map_err(bad)?
            .ok_or_else(|| bad(MultipartError::Malformed("no metadata part")))?;
        let metadata = reader.body_to_vec(MAX_METADATA).await.map_err(bad)?;
        if !serde_json::from_slice::<serde_json::Value>(&metadata).is_ok_and(|v| v.is_object()) {
            return Err(bad(MultipartError::Malformed(
                "metadata is not a JSON object",
            )));
        }
        let part = reader
            .next_part()
            .await
            .map_err(bad)?
            .ok_or_else(|| bad(MultipartError::Malformed("no content part")))?;

        let max = inner.config.max_upload_size;
        let (stored, content_type, disposition) = match part.get("location") {
            Some(location) => {
                let redirected = inner
                    .client
                    .get_url(location, timeout)
                    .await
                    .map_err(fetch_error)?;
                let content_type = header(redirected.headers(), "content-type").map(str::to_owned);
                let disposition =
                    header(redirected.headers(), "content-disposition").map(str::to_owned);
                let stored = inner.store.write(redirected.bytes_stream(), max).await;
                (stored, content_type, disposition)
            }
            None => {
                let content_type = part.get("content-type").map(str::to_owned);
                let disposition = part.get("content-disposition").map(str::to_owned);
                let stored = inner.store.write(reader.body_stream(), max).await;
                (stored, content_type, disposition)
            }
        };
        let stored = stored.map_err(|e| match store_error(e) {
            // Their content, not our caller's request, was at fault.
            Error::Matrix { message, .. } | Error::BadRequest(message) => {
                Error::Upstream(format!("{server}: {message}"))
            }
            other => other,
        })?;
        let filename = disposition
            .and_then(|d| d.parse::<ContentDisposition>().ok())
            .and_then(|d| d.filename)
            .filter(|f| f.len() <= 255);
        let content_type = content_type.filter(|c| super::is_header_safe(c));
        db::insert(
            &inner.db,
            &NewMedia {
                server_name: server.as_str(),
                media_id,
                uploader: None,
                content_type: content_type.as_deref(),
                filename: filename.as_deref(),
                size: stored.size as i64,
                sha256: &stored.sha256,
                now: now_ms(),
            },
        )
        .await?;
        tracing::debug!(size = stored.size, "remote media cached");
        db::get(&inner.db, server.as_str(), media_id)
            .await?
            .ok_or_else(|| Error::internal("cached remote media row vanished"))
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A remote's 404 is the client's 404; everything else is the remote's failure (502).
fn fetch_error(e: FederationError) -> Error {
    if e.is_not_found() {
        Error::not_found("Media not found on its server")
    } else {
        Error::Upstream(e.to_string())
    }
}

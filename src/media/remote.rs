//! Fetching another server's media over federation and caching it here.

use std::time::Duration;

use ruma::ServerName;
use ruma::api::federation::authenticated_media::get_content;
use ruma::http_headers::ContentDisposition;

use super::multipart::{self, MultipartError, MultipartReader};
use super::store::{StoreError, Stored};
use super::{Media, store_error};
use crate::account::now_ms;
use crate::db::media::{self as db, MediaRow, NewMedia};
use crate::error::{Error, Result};
use crate::federation::client::FederationError;

/// Largest metadata part accepted (the spec's is `{}`).
pub const MAX_METADATA: usize = 64 * 1024;

/// A fetched file: where it was stored, with the content type and disposition it came with.
struct Fetched {
    stored: std::result::Result<Stored, StoreError>,
    content_type: Option<String>,
    disposition: Option<String>,
}

impl Media {
    /// Download `mxc://server/media_id` from `server` and cache it:
    ///
    /// 1. signed `GET /_matrix/federation/v1/media/download`; the answer is `multipart/mixed`
    ///    (a server that does not know the endpoint is asked on the legacy unauthenticated
    ///    `/_matrix/media/v3/download` instead, with `allow_remote=false`);
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
        let fetched = match inner.client.send_streaming(server, request, timeout).await {
            Ok(response) => self.read_multipart(server, response, timeout).await?,
            Err(e) if e.is_unrecognized() => {
                let path = format!(
                    "/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false&timeout_ms={}",
                    wait.as_millis()
                );
                let response = inner
                    .client
                    .get_unsigned(server, &path, timeout)
                    .await
                    .map_err(fetch_error)?;
                self.read_plain(response).await
            }
            Err(e) => return Err(fetch_error(e)),
        };
        let stored = fetched.stored.map_err(|e| match store_error(e) {
            // Their content, not our caller's request, was at fault.
            Error::Matrix { message, .. } | Error::BadRequest(message) => {
                Error::Upstream(format!("{server}: {message}"))
            }
            other => other,
        })?;
        let (content_type, filename) = described(fetched.content_type, fetched.disposition);
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

    /// Steps 2 and 3: the parts of a federation media answer.
    async fn read_multipart(
        &self,
        server: &ServerName,
        response: reqwest::Response,
        timeout: Duration,
    ) -> Result<Fetched> {
        let bad = |e: MultipartError| Error::Upstream(format!("{server}: media answer: {e}"));
        let content_type = header(response.headers(), "content-type").unwrap_or("");
        let boundary = multipart::boundary(content_type).map_err(bad)?;
        let mut reader = MultipartReader::new(Box::pin(response.bytes_stream()), &boundary);
        let part = multipart::read_head(&mut reader, MAX_METADATA)
            .await
            .map_err(bad)?;
        if let Some(location) = part.get("location") {
            let redirected = self
                .inner
                .client
                .get_url(location, timeout)
                .await
                .map_err(fetch_error)?;
            return Ok(self.read_plain(redirected).await);
        }
        let stored = self
            .inner
            .store
            .write(reader.body_stream(), self.inner.config.max_upload_size)
            .await;
        Ok(Fetched {
            stored,
            content_type: part.get("content-type").map(str::to_owned),
            disposition: part.get("content-disposition").map(str::to_owned),
        })
    }

    /// A file that is a whole HTTP response body, described by the response's headers.
    async fn read_plain(&self, response: reqwest::Response) -> Fetched {
        let content_type = header(response.headers(), "content-type").map(str::to_owned);
        let disposition = header(response.headers(), "content-disposition").map(str::to_owned);
        let max = self.inner.config.max_upload_size;
        Fetched {
            stored: self.inner.store.write(response.bytes_stream(), max).await,
            content_type,
            disposition,
        }
    }
}

/// What another server's `Content-Type` and `Content-Disposition` for a file say, as much
/// as is kept: a content type safe to repeat in a header, and a file name of at most 255
/// bytes.
pub fn described(
    content_type: Option<String>,
    disposition: Option<String>,
) -> (Option<String>, Option<String>) {
    let filename = disposition
        .and_then(|d| d.parse::<ContentDisposition>().ok())
        .and_then(|d| d.filename)
        .filter(|f| f.len() <= 255);
    let content_type = content_type.filter(|c| super::is_header_safe(c));
    (content_type, filename)
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

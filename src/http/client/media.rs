//! `POST /_matrix/media/v3/upload`, `POST /_matrix/media/v1/create`,
//! `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`,
//! `GET /_matrix/client/v1/media/{download,thumbnail,config,preview_url}/…` and the legacy
//! unauthenticated `GET /_matrix/media/v3/{download,thumbnail}/…`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#content-repository)
//!
//! Uploads are streamed to disk and downloads streamed from it, so these handlers take the
//! body through [`RumaStream`] and write their own responses; requests are still parsed by
//! ruma and routes come from ruma's metadata.

#![allow(deprecated)] // the legacy /_matrix/media/v3 endpoints are deprecated by the spec

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use ruma::api::client::authenticated_media as v1;
use ruma::api::client::media as v3;
use ruma::http_headers::ContentDisposition;
use ruma::{MilliSecondsSinceUnixEpoch, ServerName, UInt};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, RumaResponse, RumaStream, route, route_raw};
use crate::media::thumbnail::Wanted;
use crate::media::{Access, MediaFile, Upload};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route_raw::<v3::create_content::v3::Request, _, _, _>(r, upload_route);
    let r = route(r, create_route);
    let r = route_raw::<v3::create_content_async::v3::Request, _, _, _>(r, upload_reserved_route);
    let r = route_raw::<v1::get_content::v1::Request, _, _, _>(r, download_route);
    let r = route_raw::<v1::get_content_as_filename::v1::Request, _, _, _>(r, download_named_route);
    let r = route_raw::<v1::get_content_thumbnail::v1::Request, _, _, _>(r, thumbnail_route);
    let r = route(r, config_route);
    let r = route(r, preview_route);
    let r = route_raw::<v3::get_content::v3::Request, _, _, _>(r, legacy_download_route);
    let r = route_raw::<v3::get_content_as_filename::v3::Request, _, _, _>(
        r,
        legacy_download_named_route,
    );
    let r = route_raw::<v3::get_content_thumbnail::v3::Request, _, _, _>(r, legacy_thumbnail_route);
    let r = route(r, legacy_config_route);
    route(r, legacy_preview_route)
}

/// # `POST /_matrix/media/v3/upload`
///
/// Store the body and answer its new mxc:// URI.
async fn upload_route(
    state: AppState,
    req: RumaStream<v3::create_content::v3::Request>,
) -> Result<Response> {
    check_length(&state, req.content_length)?;
    let meta = Upload {
        content_type: req.body.content_type,
        filename: req.body.filename,
    };
    let uri = state
        .media
        .upload(&req.auth.user_id, meta, req.stream.into_data_stream())
        .await?;
    Ok(RumaResponse(v3::create_content::v3::Response::new(uri)).into_response())
}

/// # `POST /_matrix/media/v1/create`
///
/// Reserve a URI whose content is uploaded later.
async fn create_route(
    state: AppState,
    req: Ruma<v3::create_mxc_uri::v1::Request>,
) -> Result<v3::create_mxc_uri::v1::Response> {
    let (uri, expires) = state.media.reserve(&req.auth.user_id).await?;
    let mut response = v3::create_mxc_uri::v1::Response::new(uri);
    response.unused_expires_at = UInt::try_from(expires).ok().map(MilliSecondsSinceUnixEpoch);
    Ok(response)
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
///
/// The content of a URI reserved with `/create`, by the user who reserved it.
async fn upload_reserved_route(
    state: AppState,
    req: RumaStream<v3::create_content_async::v3::Request>,
) -> Result<Response> {
    check_length(&state, req.content_length)?;
    let body = req.body;
    let meta = Upload {
        content_type: body.content_type,
        filename: body.filename,
    };
    state
        .media
        .upload_reserved(
            &req.auth.user_id,
            &body.server_name,
            &body.media_id,
            meta,
            req.stream.into_data_stream(),
        )
        .await?;
    // ruma's response type for this endpoint has no constructor; its body is `{}`.
    Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download_route(
    state: AppState,
    req: Ruma<v1::get_content::v1::Request>,
) -> Result<Response> {
    let b = req.body;
    download(
        &state,
        &b.server_name,
        &b.media_id,
        None,
        b.timeout_ms,
        Access::Client,
    )
    .await
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_named_route(
    state: AppState,
    req: Ruma<v1::get_content_as_filename::v1::Request>,
) -> Result<Response> {
    let b = req.body;
    let name = Some(b.filename.as_str());
    download(
        &state,
        &b.server_name,
        &b.media_id,
        name,
        b.timeout_ms,
        Access::Client,
    )
    .await
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail_route(
    state: AppState,
    req: Ruma<v1::get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    let b = req.body;
    let file = state
        .media
        .thumbnail(
            &b.server_name,
            &b.media_id,
            Wanted::new(b.width, b.height, b.method.as_ref()),
            b.timeout_ms,
            Access::Client,
        )
        .await?;
    Ok(file_response(file, None))
}

/// # `GET /_matrix/client/v1/media/config`
async fn config_route(
    state: AppState,
    _: Ruma<v1::get_media_config::v1::Request>,
) -> Result<v1::get_media_config::v1::Response> {
    Ok(v1::get_media_config::v1::Response::new(upload_size(&state)))
}

/// # `GET /_matrix/client/v1/media/preview_url`
async fn preview_route(
    state: AppState,
    req: Ruma<v1::get_media_preview::v1::Request>,
) -> Result<v1::get_media_preview::v1::Response> {
    let preview = state.media.preview(&req.body.url).await?;
    Ok(v1::get_media_preview::v1::Response::from_raw_value(raw(
        &preview,
    )?))
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
///
/// Unauthenticated: only media stored before `media.legacy_unauthenticated_before_ms`.
async fn legacy_download_route(
    state: AppState,
    req: Ruma<v3::get_content::v3::Request>,
) -> Result<Response> {
    let b = req.body;
    let access = Access::Legacy {
        allow_remote: b.allow_remote,
    };
    download(
        &state,
        &b.server_name,
        &b.media_id,
        None,
        b.timeout_ms,
        access,
    )
    .await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
async fn legacy_download_named_route(
    state: AppState,
    req: Ruma<v3::get_content_as_filename::v3::Request>,
) -> Result<Response> {
    let b = req.body;
    let access = Access::Legacy {
        allow_remote: b.allow_remote,
    };
    let name = Some(b.filename.as_str());
    download(
        &state,
        &b.server_name,
        &b.media_id,
        name,
        b.timeout_ms,
        access,
    )
    .await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
async fn legacy_thumbnail_route(
    state: AppState,
    req: Ruma<v3::get_content_thumbnail::v3::Request>,
) -> Result<Response> {
    let b = req.body;
    let file = state
        .media
        .thumbnail(
            &b.server_name,
            &b.media_id,
            Wanted::new(b.width, b.height, b.method.as_ref()),
            b.timeout_ms,
            Access::Legacy {
                allow_remote: b.allow_remote,
            },
        )
        .await?;
    Ok(file_response(file, None))
}

/// # `GET /_matrix/media/v3/config`
async fn legacy_config_route(
    state: AppState,
    _: Ruma<v3::get_media_config::v3::Request>,
) -> Result<v3::get_media_config::v3::Response> {
    Ok(v3::get_media_config::v3::Response::new(upload_size(&state)))
}

/// # `GET /_matrix/media/v3/preview_url`
async fn legacy_preview_route(
    state: AppState,
    req: Ruma<v3::get_media_preview::v3::Request>,
) -> Result<v3::get_media_preview::v3::Response> {
    let preview = state.media.preview(&req.body.url).await?;
    Ok(v3::get_media_preview::v3::Response::from_raw_value(raw(
        &preview,
    )?))
}

async fn download(
    state: &AppState,
    server: &ServerName,
    media_id: &str,
    name: Option<&str>,
    wait: Duration,
    access: Access,
) -> Result<Response> {
    let file = state.media.download(server, media_id, wait, access).await?;
    let disposition = file.content_disposition(name);
    Ok(file_response(file, Some(disposition)))
}

/// Refuse a declared body over the limit before reading any of it (the store also counts).
fn check_length(state: &AppState, length: Option<u64>) -> Result<()> {
    let max = state.media.max_upload_size();
    match length {
        Some(n) if n > max => Err(Error::too_large(format!(
            "Content is larger than {max} bytes"
        ))),
        _ => Ok(()),
    }
}

fn upload_size(state: &AppState) -> UInt {
    UInt::try_from(state.media.max_upload_size()).unwrap_or(UInt::MAX)
}

fn raw(value: &serde_json::Value) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| Error::internal(e.to_string()))
}

/// What may never be done with served media, whatever its type: run scripts, load other
/// resources, or be sniffed into something more dangerous than it claims to be.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; \
     media-src 'self'; object-src 'self'";

/// A stored file, streamed, with the headers the spec asks for. Thumbnails (no
/// `disposition`) are our own PNG or JPEG images and always inline.
pub(crate) fn file_response(file: MediaFile, disposition: Option<ContentDisposition>) -> Response {
    let disposition = disposition.unwrap_or_else(|| file.content_disposition(None));
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition = HeaderValue::from_str(&disposition.to_string())
        .unwrap_or(HeaderValue::from_static("attachment"));
    let stream = tokio_util::io::ReaderStream::with_capacity(file.file, 64 * 1024);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    // Content behind an mxc:// URI never changes, but authenticated media must not be kept
    // by shared caches.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    response
}

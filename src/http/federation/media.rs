//! `GET /_matrix/federation/v1/media/download/{mediaId}`,
//! `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#content-repository)
//!
//! Our own media for other servers, as `multipart/mixed`: the metadata part (`{}`), then the
//! file streamed from disk. Requests are signed (checked by [`Ruma`]).

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use http::{HeaderValue, header};
use ruma::api::federation::authenticated_media::{get_content, get_content_thumbnail};

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route_raw};
use crate::media::multipart::MultipartWriter;
use crate::media::thumbnail::Wanted;
use crate::media::{Access, MediaFile};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route_raw::<get_content::v1::Request, _, _, _>(r, download_route);
    route_raw::<get_content_thumbnail::v1::Request, _, _, _>(r, thumbnail_route)
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download_route(state: AppState, req: Ruma<get_content::v1::Request>) -> Result<Response> {
    let ours = state.keys.server_name();
    let file = state
        .media
        .download(
            ours,
            &req.body.media_id,
            req.body.timeout_ms,
            Access::Federation,
        )
        .await?;
    Ok(multipart_response(file))
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail_route(
    state: AppState,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    let b = req.body;
    let file = state
        .media
        .thumbnail(
            state.keys.server_name(),
            &b.media_id,
            Wanted::new(b.width, b.height, b.method.as_ref()),
            b.timeout_ms,
            Access::Federation,
        )
        .await?;
    Ok(multipart_response(file))
}

fn multipart_response(file: MediaFile) -> Response {
    let writer = MultipartWriter::default();
    let disposition = file.content_disposition(None).to_string();
    let head = writer.head(&file.content_type, &disposition);
    let tail = writer.tail();
    let body = futures::stream::once(async move { Ok(head) })
        .chain(tokio_util::io::ReaderStream::with_capacity(
            file.file,
            64 * 1024,
        ))
        .chain(futures::stream::once(async move { Ok(tail) }));
    let mut response = Response::new(Body::from_stream(body));
    if let Ok(content_type) = HeaderValue::from_str(&writer.content_type()) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

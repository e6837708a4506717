//! The media repository over real HTTP: uploads, downloads, thumbnails, reserved uploads,
//! limits and errors, the legacy freeze, remote media over federation (both answer forms) and
//! URL previews behind the address guard.

mod common;

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::federation::signed_request;
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

/// A PNG of `w` x `h` pixels.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A raw answer: status, headers, body.
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// As (status, JSON) for [`assert_error`].
    fn json(&self) -> (u16, Value) {
        (
            self.status,
            serde_json::from_slice(&self.body).unwrap_or(Value::Null),
        )
    }

    fn image_dimensions(&self) -> (u32, u32) {
        let img = image::load_from_memory(&self.body).expect("a decodable image");
        (img.width(), img.height())
    }
}

async fn got(response: reqwest::Response) -> Got {
    Got {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body"),
    }
}

async fn get(s: &TestServer, path: &str, token: Option<&str>) -> Got {
    let mut request = s.http.get(s.url(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    got(request.send().await.expect("request")).await
}

async fn upload_raw(
    s: &TestServer,
    u: &User,
    body: impl Into<reqwest::Body>,
    content_type: &str,
    filename: Option<&str>,
) -> Got {
    let mut url = s.url("/_matrix/media/v3/upload");
    if let Some(f) = filename {
        url.push_str(&format!("?filename={}", enc(f)));
    }
    let request = s
        .http
        .post(url)
        .bearer_auth(&u.token)
        .header("content-type", content_type)
        .body(body);
    got(request.send().await.expect("upload")).await
}

/// Upload, asserting success; returns the mxc:// URI.
async fn upload(
    s: &TestServer,
    u: &User,
    bytes: &[u8],
    content_type: &str,
    filename: Option<&str>,
) -> String {
    let res = upload_raw(s, u, bytes.to_vec(), content_type, filename).await;
    let (status, body) = res.json();
    assert_eq!(status, 200, "upload: {body}");
    body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned()
}

/// `mxc://server/id` as the `server/id` of a media path.
fn tail(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").expect("an mxc URI")
}

async fn db(s: &TestServer) -> sqlx::PgPool {
    sqlx::PgPool::connect(s.config.database.url.as_deref().expect("database url"))
        .await
        .expect("db")
}

/// Regular files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_download_and_thumbnail_an_image_and_a_non_image() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let image = png(400, 300);
    let mxc = upload(&s, &alice, &image, "image/png", Some("cat.png")).await;
    assert!(mxc.starts_with("mxc://trellis.test/"), "{mxc}");

    let path = format!("/_matrix/client/v1/media/download/{}", tail(&mxc));
    let res = get(&s, &path, alice.t()).await;
    assert_eq!(res.status, 200);
    assert_eq!(&res.body[..], &image[..]);
    assert_eq!(res.header("content-type"), "image/png");
    assert_eq!(res.header("content-length"), image.len().to_string());
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=cat.png"
    );
    assert!(res.header("content-security-policy").contains("sandbox"));
    assert_eq!(res.header("x-content-type-options"), "nosniff");
    assert_eq!(res.header("cross-origin-resource-policy"), "cross-origin");
    // The file name in the URL wins over the uploaded one.
    let res = get(&s, &format!("{path}/other%20name.png"), alice.t()).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=\"other name.png\""
    );
    // Authenticated media needs an access token.
    assert_error(&get(&s, &path, None).await.json(), 401, "M_MISSING_TOKEN");

    // Thumbnails: the spec's sizes, cropped or scaled, each made once.
    let thumb = |w: u32, h: u32, method: &str| {
        format!(
            "/_matrix/client/v1/media/thumbnail/{}?width={w}&height={h}&method={method}",
            tail(&mxc)
        )
    };
    let crop = get(&s, &thumb(32, 32, "crop"), alice.t()).await;
    assert_eq!(crop.status, 200, "{:?}", crop.json());
    assert_eq!(crop.header("content-type"), "image/png");
    assert_eq!(crop.image_dimensions(), (32, 32));
    let scale = get(&s, &thumb(300, 200, "scale"), alice.t()).await;
    assert_eq!(scale.image_dimensions(), (320, 240));
    let again = get(&s, &thumb(320, 240, "scale"), alice.t()).await;
    assert_eq!(again.body, scale.body);
    let crop_again = get(&s, &thumb(20, 20, "crop"), alice.t()).await;
    assert_eq!(crop_again.body, crop.body);
    let pool = db(&s).await;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM media_thumbnails")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "one stored thumbnail per size bucket");

    // A non-image: served as uploaded, inline only where the content type is safe.
    let text = b"just some words".to_vec();
    let txt = upload(&s, &alice, &text, "text/plain", Some("notes.txt")).await;
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{}", tail(&txt)),
        alice.t(),
    )
    .await;
    assert_eq!(&res.body[..], &text[..]);
    assert_eq!(res.header("content-type"), "text/plain");
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=notes.txt"
    );
    let html = upload(&s, &alice, b"<script>alert(1)</script>", "text/html", None).await;
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{}", tail(&html)),
        alice.t(),
    )
    .await;
    assert_eq!(res.header("content-disposition"), "attachment");
    // No content type at all: served as bytes, never sniffed.
    let res = upload_raw(&s, &alice, b"\x00\x01".to_vec(), "", None).await;
    let bare = res.json().1["content_uri"].as_str().unwrap().to_owned();
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{}", tail(&bare)),
        alice.t(),
    )
    .await;
    assert_eq!(res.header("content-type"), "application/octet-stream");

    // Thumbnails of a non-image and of a corrupt image are refused; the server carries on.
    let res = get(
        &s,
        &format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=32&height=32",
            tail(&txt)
        ),
        alice.t(),
    )
    .await;
    assert_error(&res.json(), 400, "M_UNKNOWN");
    let mut corrupt = image[..64].to_vec();
    corrupt.extend_from_slice(&[0x5a; 4000]);
    let bad = upload(&s, &alice, &corrupt, "image/png", None).await;
    let bad_thumb = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
        tail(&bad)
    );
    assert_error(
        &get(&s, &bad_thumb, alice.t()).await.json(),
        400,
        "M_UNKNOWN",
    );
    assert_error(
        &get(&s, &bad_thumb, alice.t()).await.json(),
        400,
        "M_UNKNOWN",
    );
    assert_eq!(get(&s, &thumb(32, 32, "crop"), alice.t()).await.status, 200);

    let (status, config) = s.get("/_matrix/client/v1/media/config", alice.t()).await;
    assert_eq!(status, 200);
    assert_eq!(config["m.upload.size"], s.config.media.max_upload_size);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_uploads_are_stored_once() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let bytes = png(50, 50);
    let first = upload(&s, &alice, &bytes, "image/png", Some("a.png")).await;
    let second = upload(&s, &bob, &bytes, "image/png", Some("b.png")).await;
    assert_ne!(first, second, "each upload gets its own URI");
    for (mxc, name) in [(&first, "a.png"), (&second, "b.png")] {
        let res = get(
            &s,
            &format!("/_matrix/client/v1/media/download/{}", tail(mxc)),
            bob.t(),
        )
        .await;
        assert_eq!(&res.body[..], &bytes[..]);
        assert_eq!(
            res.header("content-disposition"),
            format!("inline; filename={name}")
        );
    }
    let store = s.config.data_dir.join("media");
    assert_eq!(files_under(&store.join("sha256")), 1, "one file for both");
    let pool = db(&s).await;
    let (rows, hashes): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT sha256) FROM media")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, hashes), (2, 1));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_and_bad_input_errors() {
    let s = TestServer::start_with(|c| c.media.max_upload_size = 1000).await;
    let alice = s.register("alice", "alice-password").await;
    assert!(
        upload_raw(&s, &alice, vec![7u8; 1000], "application/x-test", None)
            .await
            .status
            == 200
    );
    // Declared too large: refused before reading.
    let res = upload_raw(&s, &alice, vec![7u8; 1001], "application/x-test", None).await;
    assert_error(&res.json(), 413, "M_TOO_LARGE");
    // Streamed without a length: refused while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![1u8; 100])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let res = upload_raw(&s, &alice, body, "application/x-test", None).await;
    assert_error(&res.json(), 413, "M_TOO_LARGE");
    let store = s.config.data_dir.join("media");
    assert_eq!(
        files_under(&store.join("tmp")),
        0,
        "refused uploads leave nothing"
    );
    assert_eq!(files_under(&store.join("sha256")), 1);
    let (status, config) = s.get("/_matrix/client/v1/media/config", alice.t()).await;
    assert_eq!(
        (status, config["m.upload.size"].clone()),
        (200, json!(1000))
    );

    let server = s.server_name().to_owned();
    let dl = |tail: &str| format!("/_matrix/client/v1/media/download/{tail}");
    // Unknown media.
    let unknown = dl(&format!("{server}/NoSuchMediaHere"));
    assert_error(
        &get(&s, &unknown, alice.t()).await.json(),
        404,
        "M_NOT_FOUND",
    );
    let unknown_thumb =
        format!("/_matrix/client/v1/media/thumbnail/{server}/NoSuchMediaHere?width=32&height=32");
    assert_error(
        &get(&s, &unknown_thumb, alice.t()).await.json(),
        404,
        "M_NOT_FOUND",
    );
    // Malformed mxc parts: a media ID outside [A-Za-z0-9_-], a server name that is none.
    let bad_id = dl(&format!("{server}/bad.id"));
    assert_error(
        &get(&s, &bad_id, alice.t()).await.json(),
        400,
        "M_INVALID_PARAM",
    );
    let bad_server = dl("not%20a%20server/abc");
    assert_error(
        &get(&s, &bad_server, alice.t()).await.json(),
        400,
        "M_INVALID_PARAM",
    );
    // Thumbnail sizes must be given and positive.
    let mxc = upload(&s, &alice, &png(10, 10), "image/png", None).await;
    for query in ["width=0&height=32", "height=32", "width=-1&height=5"] {
        let path = format!("/_matrix/client/v1/media/thumbnail/{}?{query}", tail(&mxc));
        let (status, body) = get(&s, &path, alice.t()).await.json();
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["errcode"].is_string(), "{body}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_uploads_with_create() {
    let s = TestServer::start_with(|c| c.media.max_pending_uploads = 2).await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let (status, created) = s
        .post("/_matrix/media/v1/create", alice.t(), &json!({}))
        .await;
    assert_eq!(status, 200, "{created}");
    let mxc = created["content_uri"].as_str().unwrap().to_owned();
    assert!(created["unused_expires_at"].as_u64().unwrap() > now_ms() as u64);
    let download = format!("/_matrix/client/v1/media/download/{}", tail(&mxc));

    // Not uploaded yet: a short wait times out.
    let res = get(&s, &format!("{download}?timeout_ms=200"), alice.t()).await;
    assert_error(&res.json(), 504, "M_NOT_YET_UPLOADED");
    // A longer wait is answered as soon as the content arrives.
    let waiting = {
        let http = s.http.clone();
        let url = s.url(&format!("{download}?timeout_ms=20000"));
        let token = bob.token.clone();
        tokio::spawn(
            async move { got(http.get(url).bearer_auth(token).send().await.unwrap()).await },
        )
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let put = |u: &User, body: &'static [u8]| {
        s.http
            .put(s.url(&format!(
                "/_matrix/media/v3/upload/{}?filename=late.txt",
                tail(&mxc)
            )))
            .bearer_auth(&u.token)
            .header("content-type", "text/plain")
            .body(body)
            .send()
    };
    let res = got(put(&bob, b"not yours").await.unwrap()).await;
    assert_error(&res.json(), 403, "M_FORBIDDEN");
    let res = got(put(&alice, b"late content").await.unwrap()).await;
    assert_eq!(res.json(), (200, json!({})));
    let res = got(put(&alice, b"again").await.unwrap()).await;
    assert_error(&res.json(), 409, "M_CANNOT_OVERWRITE_MEDIA");

    let res = waiting.await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(&res.body[..], b"late content");
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=late.txt"
    );

    // At most two reservations without content per user.
    for _ in 0..2 {
        let (status, _) = s
            .post("/_matrix/media/v1/create", alice.t(), &json!({}))
            .await;
        assert_eq!(status, 200);
    }
    let res = s
        .post("/_matrix/media/v1/create", alice.t(), &json!({}))
        .await;
    assert_error(&res, 429, "M_LIMIT_EXCEEDED");
    // Uploading to a URI nobody reserved.
    let res = got(s
        .http
        .put(s.url(&format!(
            "/_matrix/media/v3/upload/{}/NeverReserved",
            s.server_name()
        )))
        .bearer_auth(&alice.token)
        .body("x")
        .send()
        .await
        .unwrap())
    .await;
    assert_error(&res.json(), 404, "M_NOT_FOUND");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoints_serve_only_media_from_before_the_freeze() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let old = upload(&s, &alice, &png(100, 80), "image/png", Some("old.png")).await;
    let legacy = |mxc: &str| format!("/_matrix/media/v3/download/{}", tail(mxc));
    let legacy_thumb = |mxc: &str| {
        format!(
            "/_matrix/media/v3/thumbnail/{}?width=32&height=32&method=crop",
            tail(mxc)
        )
    };
    // By default nothing is served unauthenticated.
    assert_error(
        &get(&s, &legacy(&old), None).await.json(),
        404,
        "M_NOT_FOUND",
    );

    // Freeze now: what is already here stays available, what comes later does not.
    s.config.media.legacy_unauthenticated_before_ms = now_ms();
    s.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let new = upload(&s, &alice, &png(100, 80), "image/png", Some("new.png")).await;
    let res = get(&s, &legacy(&old), None).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=old.png"
    );
    assert_eq!(
        get(&s, &legacy_thumb(&old), None).await.image_dimensions(),
        (32, 32)
    );
    assert_error(
        &get(&s, &legacy(&new), None).await.json(),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &get(&s, &legacy_thumb(&new), None).await.json(),
        404,
        "M_NOT_FOUND",
    );
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{}", tail(&new)),
        alice.t(),
    )
    .await;
    assert_eq!(res.status, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_is_fetched_over_federation_and_cached() {
    let mut a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let bob = b.register("bob", "bob-password").await;
    let image = png(200, 150);
    let mxc = upload(&a, &alice, &image, "image/png", Some("remote.png")).await;
    assert!(mxc.starts_with(&format!("mxc://{}/", a.server_name())));

    // Bob's server fetches it from Alice's with a signed federation request.
    let path = format!("/_matrix/client/v1/media/download/{}", tail(&mxc));
    let res = get(&b, &path, bob.t()).await;
    assert_eq!(res.status, 200, "{:?}", res.json());
    assert_eq!(&res.body[..], &image[..]);
    assert_eq!(res.header("content-type"), "image/png");
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=remote.png"
    );
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
        tail(&mxc)
    );
    assert_eq!(get(&b, &thumb, bob.t()).await.image_dimensions(), (96, 96));
    let unknown = format!(
        "/_matrix/client/v1/media/download/{}/NoSuchMedia",
        a.server_name()
    );
    assert_error(&get(&b, &unknown, bob.t()).await.json(), 404, "M_NOT_FOUND");

    // The federation endpoints themselves: signed requests only, multipart answers.
    let media_id = mxc.rsplit('/').next().unwrap();
    let fed_path = format!("/_matrix/federation/v1/media/download/{media_id}");
    let res = got(signed_request(&b, &a, "GET", &fed_path, None)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .starts_with("multipart/mixed; boundary=")
    );
    let body = &res.body[..];
    assert!(body.windows(image.len()).any(|w| w == &image[..]));
    let res = got(signed_request(
        &b,
        &a,
        "GET",
        &format!(
            "/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=crop"
        ),
        None,
    )
    .send()
    .await
    .unwrap())
    .await;
    assert_eq!(res.status, 200);
    assert!(res.body.windows(4).any(|w| w == b"\x89PNG"));
    let res = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(a.federation_url(&fed_path))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Only our own media is served to other servers.
    let not_ours = format!("/_matrix/federation/v1/media/download/{}", "NoSuchMedia");
    let res = got(signed_request(&b, &a, "GET", &not_ours, None)
        .send()
        .await
        .unwrap())
    .await;
    assert_error(&res.json(), 404, "M_NOT_FOUND");

    // Cached: served while the origin is down.
    a.stop().await;
    let res = get(&b, &path, bob.t()).await;
    assert_eq!(res.status, 200);
    assert_eq!(&res.body[..], &image[..]);
    a.resume().await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A plain-HTTP site on loopback: `/page` (HTML with OpenGraph), `/cat.png`. Counts requests.
async fn website(image: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let page = r#"<html><head><title>A cat</title>
        <meta property="og:description" content="The cat &amp; its hat">
        <meta property="og:image" content="/cat.png"></head><body>meow</body></html>"#;
    let app = axum::Router::new()
        .route(
            "/page",
            axum::routing::get(move || async move {
                ([("content-type", "text/html; charset=utf-8")], page)
            }),
        )
        .route(
            "/cat.png",
            axum::routing::get(move || {
                let image = image.clone();
                async move {
                    (
                        [
                            ("content-type", "image/png"),
                            ("content-disposition", "inline; filename=\"cat.png\""),
                        ],
                        image,
                    )
                }
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

/// A "homeserver" on 127.0.0.1 over TLS that answers every federation media request with
/// the redirect form: a multipart body whose content part is only a `Location` header.
async fn redirecting_homeserver(location: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()).into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(
        "--fedbound\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--fedbound\r\n\
         Location: {location}\r\n\r\n\r\n--fedbound--\r\n"
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: multipart/mixed; boundary=fedbound\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tls.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_in_the_redirect_form_is_followed() {
    let image = png(64, 48);
    let (site, hits) = website(image.clone()).await;
    let remote = redirecting_homeserver(format!("http://127.0.0.1:{site}/cat.png")).await;
    let b = TestServer::start_federating().await;
    let bob = b.register("bob", "bob-password").await;
    let path = format!("/_matrix/client/v1/media/download/127.0.0.1:{remote}/RedirectedMedia");
    let res = get(&b, &path, bob.t()).await;
    assert_eq!(res.status, 200, "{:?}", res.json());
    assert_eq!(&res.body[..], &image[..]);
    assert_eq!(res.header("content-type"), "image/png");
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=cat.png"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Cached: the second download asks nobody.
    assert_eq!(get(&b, &path, bob.t()).await.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    b.shutdown().await;
}

async fn preview(s: &TestServer, u: &User, url: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/media/preview_url?url={}", enc(url));
    s.get(&path, u.t()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_previews_are_off_by_default_and_guarded_when_on() {
    let image = png(120, 60);
    let (site, hits) = website(image.clone()).await;
    let page = format!("http://127.0.0.1:{site}/page");

    let off = TestServer::start().await;
    let alice = off.register("alice", "alice-password").await;
    assert_error(&preview(&off, &alice, &page).await, 404, "M_UNRECOGNIZED");
    off.shutdown().await;

    // On, with the default address guard: loopback is refused before any connection.
    let guarded = TestServer::start_with(|c| c.media.url_preview_enabled = true).await;
    let alice = guarded.register("alice", "alice-password").await;
    assert_error(&preview(&guarded, &alice, &page).await, 403, "M_FORBIDDEN");
    let (status, _) = guarded
        .get(
            "/_matrix/client/v1/media/preview_url?url=file%3A%2F%2F%2Fetc%2Fpasswd",
            alice.t(),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the site was never contacted"
    );
    guarded.shutdown().await;

    // On, with loopback allow-listed: the page's OpenGraph, its image stored here.
    let open = TestServer::start_with(|c| {
        c.media.url_preview_enabled = true;
        c.federation.ip_range_allowlist = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let alice = open.register("alice", "alice-password").await;
    let (status, og) = preview(&open, &alice, &page).await;
    assert_eq!(status, 200, "{og}");
    assert_eq!(og["og:title"], "A cat");
    assert_eq!(og["og:description"], "The cat & its hat");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["matrix:image:size"], image.len());
    assert_eq!(
        (og["og:image:width"].clone(), og["og:image:height"].clone()),
        (json!(120), json!(60))
    );
    let mxc = og["og:image"].as_str().expect("og:image");
    let res = get(
        &open,
        &format!("/_matrix/client/v1/media/download/{}", tail(mxc)),
        alice.t(),
    )
    .await;
    assert_eq!(&res.body[..], &image[..]);
    // Answered from the cache the second time.
    let before = hits.load(Ordering::SeqCst);
    assert_eq!(preview(&open, &alice, &page).await.1, og);
    assert_eq!(hits.load(Ordering::SeqCst), before);
    open.shutdown().await;
}

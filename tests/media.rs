//! The media repository over real HTTP: uploads, downloads, thumbnails, reserved uploads,
//! limits and errors, the legacy freeze, remote media over federation (both answer forms) and
//! URL previews behind the address guard.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::federation::signed_request;
use common::media::*;
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_in_the_redirect_form_is_followed() {
    let image = png(64, 48);
    let (site, hits) = website(image.clone()).await;
    // The content part is only a `Location` header.
    let body = format!(
        "--fedbound\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--fedbound\r\n\
         Location: http://127.0.0.1:{site}/cat.png\r\n\r\n\r\n--fedbound--\r\n"
    );
    let remote = fake_homeserver(move |_| {
        let content_type = [("content-type", "multipart/mixed; boundary=fedbound")];
        http_response("200 OK", &content_type, body.as_bytes())
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_authenticated_media_are_asked_on_the_legacy_endpoint() {
    let image = png(30, 20);
    let file = image.clone();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    let remote = fake_homeserver(move |line| {
        log.lock().unwrap().push(line.to_owned());
        if line.contains("/_matrix/federation/v1/media/download/OldMedia") {
            let json = [("content-type", "application/json")];
            let body = br#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#;
            http_response("404 Not Found", &json, body)
        } else if line.contains("/_matrix/media/v3/download/")
            && line.contains("allow_remote=false")
        {
            let headers = [
                ("content-type", "image/png"),
                ("content-disposition", "attachment; filename=\"old.png\""),
            ];
            http_response("200 OK", &headers, &file)
        } else {
            let json = [("content-type", "application/json")];
            http_response(
                "404 Not Found",
                &json,
                br#"{"errcode":"M_NOT_FOUND","error":"no"}"#,
            )
        }
    })
    .await;
    let b = TestServer::start_federating().await;
    let bob = b.register("bob", "bob-password").await;
    let path = format!("/_matrix/client/v1/media/download/127.0.0.1:{remote}/OldMedia");
    let res = get(&b, &path, bob.t()).await;
    assert_eq!(res.status, 200, "{:?}", res.json());
    assert_eq!(&res.body[..], &image[..]);
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=old.png"
    );
    assert_eq!(
        asked.lock().unwrap().len(),
        2,
        "{:?}",
        asked.lock().unwrap()
    );
    // A plain 404 from the authenticated endpoint is the answer; no fallback.
    let missing = format!("/_matrix/client/v1/media/download/127.0.0.1:{remote}/Missing");
    assert_error(&get(&b, &missing, bob.t()).await.json(), 404, "M_NOT_FOUND");
    assert_eq!(asked.lock().unwrap().len(), 3);
    b.shutdown().await;
}

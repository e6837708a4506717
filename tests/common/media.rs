//! Media-repository test support: images, raw requests, uploads, and stand-in servers
//! (a plain website, a TLS "homeserver" answering what no Trellis would).

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use serde_json::Value;

use super::server::{TestServer, User, enc};

/// A PNG of `w` x `h` pixels.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A raw answer: status, headers, body.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// As (status, JSON) for [`assert_error`].
    pub fn json(&self) -> (u16, Value) {
        (
            self.status,
            serde_json::from_slice(&self.body).unwrap_or(Value::Null),
        )
    }

    pub fn image_dimensions(&self) -> (u32, u32) {
        let img = image::load_from_memory(&self.body).expect("a decodable image");
        (img.width(), img.height())
    }
}

pub async fn got(response: reqwest::Response) -> Got {
    Got {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body"),
    }
}

pub async fn get(s: &TestServer, path: &str, token: Option<&str>) -> Got {
    let mut request = s.http.get(s.url(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    got(request.send().await.expect("request")).await
}

pub async fn upload_raw(
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
pub async fn upload(
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
pub fn tail(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").expect("an mxc URI")
}

pub async fn db(s: &TestServer) -> sqlx::PgPool {
    sqlx::PgPool::connect(s.config.database.url.as_deref().expect("database url"))
        .await
        .expect("db")
}

/// Regular files under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> usize {
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

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A plain-HTTP site on loopback: `/page` (HTML with OpenGraph), `/cat.png`. Counts requests.
pub async fn website(image: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
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

/// A raw HTTP/1.1 response.
pub fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A stand-in "homeserver" on 127.0.0.1 over TLS: `answer` turns each request line into a
/// raw response. It serves what no Trellis would, such as the redirect form of media.
pub async fn fake_homeserver(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
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
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answer = answer.clone();
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
                let head = String::from_utf8_lossy(&head);
                let response = answer(head.lines().next().unwrap_or(""));
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

//! What one client may hold of the server: a request's headers and body must arrive in
//! time, an idle kept-alive connection is closed, a body larger than the limit is refused
//! from its declared length before it is read, and one address may hold only so many
//! connections. Each check waits for the server to act (the connection answering or
//! closing), with a generous ceiling: none depends on how fast the machine is.

mod common;

use std::time::Duration;

use common::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ceiling on any wait here; the server's own timeouts are one second.
const CEILING: Duration = Duration::from_secs(30);

async fn connect(s: &TestServer) -> TcpStream {
    let addr = s.url("").trim_start_matches("http://").to_owned();
    TcpStream::connect(addr).await.expect("connect")
}

/// Read until the server closes the connection; what it sent.
async fn until_closed(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(CEILING, conn.read_to_end(&mut got))
        .await
        .expect("the server closed the connection within the ceiling")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slow_idle_and_oversized_requests_are_cut_off() {
    let s = TestServer::start_with(|c| {
        c.limits.header_read_timeout_secs = 1;
        c.limits.body_read_timeout_secs = 1;
    })
    .await;

    // Headers that never finish: closed.
    let mut slow = connect(&s).await;
    slow.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    until_closed(&mut slow).await;

    // Nothing at all: closed.
    let mut silent = connect(&s).await;
    until_closed(&mut silent).await;

    // Kept alive after an answer, then idle: closed.
    let mut idle = connect(&s).await;
    idle.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body announced but not sent: a Matrix error, not a hang.
    let mut partial = connect(&s).await;
    partial
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
        )
        .await
        .unwrap();
    let answer = until_closed(&mut partial).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("M_UNKNOWN"), "{answer}");

    // A body declared larger than the limit: 413 at once, without sending any of it.
    let mut huge = connect(&s).await;
    huge.write_all(
        b"POST /_matrix/client/v3/createRoom HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 107374182400\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = until_closed(&mut huge).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The unread body leaves the connection unusable: the answer says it closes, so no
    // client sends another request on it.
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let s = TestServer::start_with(|c| c.limits.header_read_timeout_secs = 1).await;
    let mut conn = connect(&s).await;
    // The HTTP/2 preface with an empty SETTINGS frame, then nothing: no stream is opened.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let answer = until_closed(&mut conn).await;
    // The server spoke HTTP/2 (its SETTINGS frame, type 4), then hung up.
    assert_eq!(answer.as_bytes().get(3), Some(&4u8), "{answer:?}");
}

#[tokio::test]
async fn one_address_may_hold_only_so_many_connections() {
    let s = TestServer::start_with(|c| c.limits.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&s).await);
    }
    // A fourth is closed as it arrives, without a byte.
    let mut fourth = connect(&s).await;
    assert_eq!(until_closed(&mut fourth).await, "");
    // The three held still work; once one goes, another may come.
    held[0]
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut held[0]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held.remove(0));
    // The server sees the closed one go when it reads its end; retry until a new one is
    // admitted (each try is answered or closed at once).
    let deadline = tokio::time::Instant::now() + CEILING;
    loop {
        let mut next = connect(&s).await;
        next.write_all(
            b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .ok();
        if until_closed(&mut next).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection admitted again"
        );
    }
}

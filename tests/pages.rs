//! The pagination overview: page tokens that /messages turns into exact pages.

mod common;

use common::server::{TestServer, assert_error, enc};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_cover_the_room_exactly_once() {
    let s = TestServer::start().await;
    let u = s.register("pam", "pam-password").await;
    let stranger = s.register("quentin", "quentin-password").await;
    let room = s.create_room(&u, json!({"name": "Forum"})).await;
    for i in 0..50 {
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/p{i}"),
                u.t(),
                &json!({"msgtype": "m.text", "body": format!("post {i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if i % 10 == 0 {
            // Non-matching events in between must not shift page boundaries.
            let r = s
                .put(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
                    u.t(),
                    &json!({"topic": format!("t{i}")}),
                )
                .await;
            assert_eq!(r.0, 200);
        }
    }
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let base = format!(
        "/_matrix/client/unstable/org.trellis.pages/rooms/{}/pages",
        enc(&room)
    );
    let (status, index) = s
        .get(&format!("{base}?per_page=7&filter={filter}"), u.t())
        .await;
    assert_eq!(status, 200, "{index}");
    assert_eq!(index["total"], 50);
    let pages = index["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 8, "ceil(50 / 7)");

    let mut seen: Vec<String> = Vec::new();
    for (n, token) in pages.iter().enumerate() {
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=7&from={}&filter={filter}",
            token.as_str().unwrap()
        );
        let (status, page) = s.get(&path, u.t()).await;
        assert_eq!(status, 200, "{page}");
        let bodies: Vec<String> = page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e: &Value| e["content"]["body"].as_str().unwrap().to_owned())
            .collect();
        let expected = if n == 7 { 1 } else { 7 };
        assert_eq!(bodies.len(), expected, "page {n}");
        seen.extend(bodies);
    }
    assert_eq!(
        seen,
        (0..50).map(|i| format!("post {i}")).collect::<Vec<_>>()
    );

    // Errors.
    assert_error(
        &s.get(&format!("{base}?per_page=0"), u.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("{base}?per_page=x"), u.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&s.get(&base, u.t()).await, 400, "M_MISSING_PARAM");
    assert_error(
        &s.get(&format!("{base}?per_page=5&filter=%7B"), u.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("{base}?per_page=5"), stranger.t()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&format!("{base}?per_page=5"), None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let unknown = format!(
        "/_matrix/client/unstable/org.trellis.pages/rooms/{}/pages?per_page=5",
        enc("!no:trellis.test")
    );
    assert_error(&s.get(&unknown, u.t()).await, 404, "M_NOT_FOUND");
    s.shutdown().await;
}

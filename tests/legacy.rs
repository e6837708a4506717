//! The deprecated initial-sync and event-stream endpoints old clients still use.

mod common;

use std::time::Duration;

use common::server::{TestServer, assert_error, enc};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_and_event_stream() {
    let s = TestServer::start().await;
    let u = s.register("dora", "dora-password").await;
    let other = s.register("eli", "eli-password").await;
    let room = s
        .create_room(&u, json!({"name": "Old school", "preset": "public_chat"}))
        .await;
    s.join(&other, &room).await;
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
            u.t(),
            &json!({"msgtype": "m.text", "body": "first"}),
        )
        .await;
    assert_eq!(r.0, 200);

    let (status, body) = s.get("/_matrix/client/v3/initialSync?limit=5", u.t()).await;
    assert_eq!(status, 200, "{body}");
    let rooms = body["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["room_id"], room.as_str());
    assert_eq!(rooms[0]["membership"], "join");
    let chunk = rooms[0]["messages"]["chunk"].as_array().unwrap();
    assert_eq!(
        chunk.last().unwrap()["content"]["body"],
        "first",
        "oldest first, newest last"
    );
    assert!(
        rooms[0]["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    let end = body["end"].as_str().unwrap().to_owned();

    let (status, single) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&room)),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{single}");
    assert_eq!(single["room_id"], room.as_str());

    // The event stream continues from the initial sync's end, waiting for news.
    let base = s.base.clone();
    let token = other.token.clone();
    let room2 = room.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reqwest::Client::new()
            .put(format!(
                "{base}/_matrix/client/v3/rooms/{room2}/send/m.room.message/2"
            ))
            .bearer_auth(token)
            .json(&json!({"msgtype": "m.text", "body": "second"}))
            .send()
            .await
            .unwrap();
    });
    let (status, events) = s
        .get(
            &format!("/_matrix/client/v3/events?from={end}&timeout=20000"),
            u.t(),
        )
        .await;
    sender.await.unwrap();
    assert_eq!(status, 200, "{events}");
    let chunk = events["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["content"]["body"], "second", "{events}");
    assert_eq!(chunk[0]["room_id"], room.as_str());
    assert_ne!(events["end"], end.as_str());

    // Errors.
    assert_error(
        &s.get("/_matrix/client/v3/events?from=nonsense", u.t())
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get("/_matrix/client/v3/initialSync?limit=x", u.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get("/_matrix/client/v3/initialSync", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let stranger = s.register("fay", "fay-password").await;
    let private = s.create_room(&u, json!({})).await;
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&private)),
            stranger.t(),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    s.shutdown().await;
}

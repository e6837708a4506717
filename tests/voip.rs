//! `/voip/turnServer`: TURN credentials for calls, or an empty answer without a TURN server.

mod common;

use common::server::{TestServer, assert_error};
use serde_json::json;

#[tokio::test]
async fn turn_credentials_follow_the_configuration() {
    let plain = TestServer::start().await;
    let alice = plain.register("alice", "alice-password").await;
    let path = "/_matrix/client/v3/voip/turnServer";
    let (status, body) = plain.get(path, alice.t()).await;
    assert_eq!((status, body), (200, json!({})));
    assert_error(&plain.get(path, None).await, 401, "M_MISSING_TOKEN");

    let with_turn = TestServer::start_with(|c| {
        c.voip.turn_uris = vec!["turn:turn.example.org:3478?transport=udp".to_owned()];
        c.voip.turn_shared_secret = Some("shared".to_owned());
        c.voip.turn_user_lifetime_secs = 600;
    })
    .await;
    let bob = with_turn.register("bob", "bob-password").await;
    let (status, body) = with_turn.get(path, bob.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["uris"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    assert_eq!(body["ttl"], 600);
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, bob.user_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + 600 + 5, "{expiry} vs {now}");
    assert_eq!(body["password"].as_str().unwrap().len(), 28, "{body}");
}

//! Room summaries (MSC3266): of rooms we are in and of rooms only another server is in,
//! with and without an access token, and never of rooms the asker may not see.

mod common;

use common::server::{TestServer, assert_error, enc};
use serde_json::json;

fn path(room: &str) -> String {
    format!("/_matrix/client/v1/room_summary/{}", enc(room))
}

#[tokio::test]
async fn summaries_show_what_the_asker_may_see() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let public = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby",
                   "topic": "Say hi"}),
        )
        .await;
    let alias = format!("#lobby:{}", s.server_name());

    let (_, versions) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["im.nheko.summary"], true);
    // Without a token, by alias; the unstable path answers the same.
    let (status, body) = s.get(&path(&alias), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], public.as_str());
    assert_eq!(body["name"], "Lobby");
    assert_eq!(body["topic"], "Say hi");
    assert_eq!(body["join_rule"], "public");
    assert_eq!(body["num_joined_members"], 1);
    assert_eq!(body["canonical_alias"], alias.as_str());
    assert!(body["room_version"].is_string(), "{body}");
    assert!(body.get("membership").is_none(), "{body}");
    let (status, unstable) = s
        .get(
            &format!(
                "/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary",
                enc(&public)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{unstable}");
    assert_eq!(unstable["room_id"], public.as_str());
    // A member's answer carries their membership.
    let (_, body) = s.get(&path(&public), alice.t()).await;
    assert_eq!(body["membership"], "join");

    // A private room: hidden from strangers (as if unknown), shown to the invited.
    let private = s
        .create_room(&alice, json!({"name": "Secret", "preset": "private_chat"}))
        .await;
    assert_error(&s.get(&path(&private), bob.t()).await, 404, "M_NOT_FOUND");
    assert_error(&s.get(&path(&private), None).await, 404, "M_NOT_FOUND");
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.get(&path(&private), bob.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Secret");
    assert_eq!(body["join_rule"], "invite");
    assert_eq!(body["membership"], "invite");

    assert_error(
        &s.get(&path(&format!("!nowhere:{}", s.server_name())), bob.t())
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&path(&format!("#nothing:{}", s.server_name())), bob.t())
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&path("not-a-room"), bob.t()).await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn rooms_only_another_server_is_in_are_summarised_by_it() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let public = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "far", "name": "Far away"}),
        )
        .await;
    let private = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "Far secret"}),
        )
        .await;

    let (status, body) = b
        .get(&path(&format!("#far:{}", a.server_name())), bob.t())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], public.as_str());
    assert_eq!(body["name"], "Far away");
    assert_eq!(body["join_rule"], "public");
    assert_eq!(body["num_joined_members"], 1);
    // A's private room is no more visible through B than directly.
    let with_via = format!("{}?via={}", path(&private), a.server_name());
    assert_error(&b.get(&with_via, bob.t()).await, 404, "M_NOT_FOUND");
}

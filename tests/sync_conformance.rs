//! /v3/sync as the spec and Synapse have it, in the cases SyTest checks: lazy-loaded
//! members across incremental and gappy syncs, room summaries, the federation event format,
//! and what a profile change does (and does not) wake.

mod common;

use std::collections::BTreeSet;

use common::server::{TestServer, User, enc};
use serde_json::{Value, json};

/// GET /sync as `u` with an inline filter and an optional token; no waiting.
async fn sync_with(s: &TestServer, u: &User, filter: &Value, since: Option<&str>) -> Value {
    let mut query = format!("?timeout=0&filter={}", enc(&filter.to_string()));
    if let Some(t) = since {
        query.push_str(&format!("&since={}", enc(t)));
    }
    s.sync(u, &query).await
}

fn next(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// The state keys of the member events in the room's state section, asserting that none
/// comes twice and that none is also in the timeline.
fn state_members(body: &Value, room: &str) -> BTreeSet<String> {
    let r = &body["rooms"]["join"][room];
    let timeline: BTreeSet<&str> = r["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for e in r["state"]["events"].as_array().into_iter().flatten() {
        let id = e["event_id"].as_str().unwrap_or_default();
        assert!(!timeline.contains(id), "in state and timeline: {e}");
        if e["type"] == "m.room.member" {
            let key = e["state_key"].as_str().unwrap_or_default().to_owned();
            assert!(seen.insert(key), "member event twice in state: {body}");
        }
    }
    seen
}

fn set(users: &[&User]) -> BTreeSet<String> {
    users.iter().map(|u| u.user_id.clone()).collect()
}

async fn fill(s: &TestServer, u: &User, room: &str, n: usize, tag: &str) {
    for i in 0..n {
        s.send_text(u, room, &format!("{tag}-{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_loaded_members_once_each_in_incremental_and_gappy_syncs() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let charlie = s.register("charlie", "charlie-password").await;
    let dave = s.register("dave", "dave-password").await;
    let room = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "name": "A room name"}),
        )
        .await;
    s.join(&bob, &room).await;
    s.join(&charlie, &room).await;
    fill(&s, &bob, &room, 10, "bob-first").await;
    let lazy = json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 10}}});

    // Initial: the timeline's senders and the user herself.
    let first = sync_with(&s, &alice, &lazy, None).await;
    assert_eq!(
        state_members(&first, &room),
        set(&[&alice, &bob]),
        "{first}"
    );

    // Gappy: the new speaker, and who joined in the gap though silent; nobody already sent.
    s.join(&dave, &room).await;
    fill(&s, &charlie, &room, 10, "charlie-first").await;
    let gappy = sync_with(&s, &alice, &lazy, Some(&next(&first))).await;
    assert_eq!(gappy["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(
        state_members(&gappy, &room),
        set(&[&charlie, &dave]),
        "{gappy}"
    );

    // Not gappy, senders whose members were sent already: no member state at all.
    s.send_text(&bob, &room, "bob-again").await;
    s.send_text(&charlie, &room, "charlie-again").await;
    let quiet = sync_with(&s, &alice, &lazy, Some(&next(&gappy))).await;
    assert_eq!(quiet["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(state_members(&quiet, &room), BTreeSet::new(), "{quiet}");

    // Asked for redundant members: the senders' members again.
    let redundant = json!({"room": {"state": {"lazy_load_members": true,
        "include_redundant_members": true}, "timeline": {"limit": 10}}});
    let again = sync_with(&s, &alice, &redundant, Some(&next(&gappy))).await;
    assert_eq!(
        state_members(&again, &room),
        set(&[&bob, &charlie]),
        "{again}"
    );

    // A silent member leaving in a gap comes as the leave, in state.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            dave.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    fill(&s, &charlie, &room, 12, "charlie-second").await;
    let third = sync_with(&s, &alice, &lazy, Some(&next(&quiet))).await;
    let leaves: Vec<&Value> = third["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state_key"] == dave.user_id.as_str())
        .collect();
    assert_eq!(leaves.len(), 1, "{third}");
    assert_eq!(leaves[0]["content"]["membership"], "leave");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heroes_only_for_rooms_without_a_name_or_alias() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let unnamed = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let named = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "Named"}))
        .await;
    let aliased = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "aliased"}),
        )
        .await;
    for room in [&unnamed, &named, &aliased] {
        s.join(&bob, room).await;
    }
    let body = s.sync(&alice, "").await;
    let summary = |room: &str| body["rooms"]["join"][room]["summary"].clone();
    assert_eq!(
        summary(&unnamed)["m.heroes"],
        json!([bob.user_id]),
        "{body}"
    );
    assert_eq!(summary(&unnamed)["m.joined_member_count"], 2);
    for room in [&named, &aliased] {
        assert!(summary(room)["m.heroes"].is_null(), "{}", summary(room));
        assert_eq!(summary(room)["m.joined_member_count"], 2, "{body}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federation_event_format() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s.create_room(&alice, json!({})).await;
    let id = s.send_text(&alice, &room, "Test message").await;
    let filter = json!({"event_format": "federation", "room": {"timeline": {"limit": 1}}});
    let body = sync_with(&s, &alice, &filter, None).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(events.len(), 1, "{body}");
    let e = &events[0];
    for key in [
        "event_id",
        "content",
        "room_id",
        "sender",
        "origin_server_ts",
        "type",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
    ] {
        assert!(!e[key].is_null(), "{key} in {e}");
    }
    assert_eq!(e["event_id"], id.as_str());
    assert_eq!(e["content"]["body"], "Test message");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_change_wakes_only_those_who_share_a_room() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let carol = s.register("carol", "carol-password").await;
    let own = s.create_room(&carol, json!({})).await;
    let carol_first = s.sync(&carol, "").await;
    let bob_first = s.sync(&bob, "").await;
    let (status, body) = s
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            alice.t(),
            &json!({"displayname": "Alice Renamed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Bob shares a room: the new member event reaches him.
    let bob_next = s
        .sync(
            &bob,
            &format!("?timeout=0&since={}", enc(&next(&bob_first))),
        )
        .await;
    let renamed = bob_next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .is_some_and(|t| {
            t.iter()
                .any(|e| e["content"]["displayname"] == "Alice Renamed")
        });
    assert!(renamed, "{bob_next}");

    // Carol shares none: her sync waits out its timeout and comes back empty.
    let carol_next = s
        .sync(
            &carol,
            &format!("?timeout=1000&since={}", enc(&next(&carol_first))),
        )
        .await;
    let rooms_joined = carol_next["rooms"]["join"]
        .as_object()
        .map_or(0, |m| m.len());
    assert_eq!(rooms_joined, 0, "{carol_next}");
    let presence = carol_next["presence"]["events"]
        .as_array()
        .map_or(0, |p| p.len());
    assert_eq!(presence, 0, "{carol_next}");
    assert!(carol_next["rooms"]["join"][&own].is_null());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_out_member_change_leaves_the_room_out_of_an_incremental_sync() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s.create_room(&alice, json!({})).await;
    s.put_state(
        &alice,
        &room,
        "a.madeup.test.state",
        "",
        &json!({"my_key": 1}),
    )
    .await;
    let filter = json!({
        "room": {
            "timeline": {"types": []},
            "state": {"types": ["a.madeup.test.state"]},
            "ephemeral": {"types": []}
        },
        "presence": {"types": []}
    });
    let first = sync_with(&s, &alice, &filter, None).await;
    let state = first["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(state.len(), 1, "{first}");
    s.put_state(
        &alice,
        &room,
        "m.room.member",
        &alice.user_id,
        &json!({"membership": "join", "displayname": "boris"}),
    )
    .await;
    s.send_text(&alice, &room, "a-message").await;
    let again = sync_with(&s, &alice, &filter, Some(&next(&first))).await;
    let rooms_joined = again["rooms"]["join"].as_object().map_or(0, |m| m.len());
    assert_eq!(rooms_joined, 0, "{again}");
    s.shutdown().await;
}

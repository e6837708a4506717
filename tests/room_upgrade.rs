//! Room upgrades: the new room carries the old one's settings, power levels, aliases and
//! directory entry; the old one is tombstoned and quietened; invite-only rooms' members are
//! invited along.

mod common;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

async fn state(s: &TestServer, u: &User, room: &str, kind: &str) -> Value {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{kind}: {body}");
    body
}

async fn upgrade(s: &TestServer, u: &User, room: &str, version: &str) -> (u16, Value) {
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
        u.t(),
        &json!({"new_version": version}),
    )
    .await
}

#[tokio::test]
async fn an_upgraded_room_carries_on_in_its_replacement() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let old = s
        .create_room(
            &alice,
            json!({"room_version": "10", "preset": "public_chat", "visibility": "public",
                   "room_alias_name": "up", "name": "Up", "topic": "Going up",
                   "power_level_content_override":
                       {"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 50}}}),
        )
        .await;
    s.join(&bob, &old).await;
    s.join(&carol, &old).await;
    s.send_text(&carol, &old, "before").await;

    // Only who may send a tombstone may upgrade; only to a version rooms can be made of.
    assert_error(&upgrade(&s, &bob, &old, "12").await, 403, "M_FORBIDDEN");
    assert_error(&upgrade(&s, &carol, &old, "12").await, 403, "M_FORBIDDEN");
    assert_error(
        &upgrade(&s, &alice, &old, "99").await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );

    let (status, body) = upgrade(&s, &alice, &old, "12").await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    // The old room points to the new one, has lost its canonical alias, and only
    // moderators may talk there now.
    let tombstone = state(&s, &bob, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    assert_eq!(
        state(&s, &bob, &old, "m.room.canonical_alias").await,
        json!({})
    );
    let old_power = state(&s, &bob, &old, "m.room.power_levels").await;
    assert_eq!(old_power["events_default"], 50);
    assert_eq!(old_power["invite"], 50);

    // The new room: its predecessor, the version asked for, the old settings.
    s.join(&bob, &new).await;
    let create = state(&s, &bob, &new, "m.room.create").await;
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["room_version"], "12");
    assert_eq!(state(&s, &bob, &new, "m.room.name").await["name"], "Up");
    assert_eq!(
        state(&s, &bob, &new, "m.room.topic").await["topic"],
        "Going up"
    );
    assert_eq!(
        state(&s, &bob, &new, "m.room.join_rules").await["join_rule"],
        "public"
    );
    let power = state(&s, &bob, &new, "m.room.power_levels").await;
    assert_eq!(power["users"][&bob.user_id], 50, "{power}");
    // Version 12 creators have unlimited power and are not listed.
    assert!(power["users"].get(&alice.user_id).is_none(), "{power}");
    // The alias, canonical alias and directory entry moved.
    let alias = format!("#up:{}", s.server_name());
    let (_, resolved) = s
        .get(
            &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
            bob.t(),
        )
        .await;
    assert_eq!(resolved["room_id"], new.as_str());
    assert_eq!(
        state(&s, &bob, &new, "m.room.canonical_alias").await["alias"],
        alias.as_str()
    );
    let (_, public) = s.get("/_matrix/client/v3/publicRooms", None).await;
    let listed: Vec<&str> = public["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["room_id"].as_str())
        .collect();
    assert_eq!(listed, vec![new.as_str()]);
    // Bob speaks in the new room; carol, no moderator, may no longer speak in the old.
    s.send_text(&bob, &new, "hello new room").await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/late"),
            carol.t(),
            &json!({"msgtype": "m.text", "body": "late"}),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn members_of_an_invite_only_room_are_invited_to_its_replacement() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let old = s
        .create_room(
            &alice,
            json!({"room_version": "10", "preset": "private_chat", "invite": [bob.user_id]}),
        )
        .await;
    s.join(&bob, &old).await;
    let (status, body) = upgrade(&s, &alice, &old, "11").await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();

    let sync = s.sync(&bob, "").await;
    assert!(
        sync["rooms"]["invite"].get(&new).is_some(),
        "bob is invited to the new room: {sync}"
    );
    s.join(&bob, &new).await;
    assert_eq!(
        state(&s, &bob, &new, "m.room.join_rules").await["join_rule"],
        "invite"
    );
    // Version 11 lists its creator's power as before.
    let power = state(&s, &bob, &new, "m.room.power_levels").await;
    assert_eq!(power["users"][&alice.user_id], 100, "{power}");
    assert_eq!(
        state(&s, &bob, &new, "m.room.create").await["predecessor"]["room_id"],
        old.as_str()
    );
}

//! /sync: initial and incremental, long-polling, limited timelines, invites and leaves.

mod common;

use std::time::{Duration, Instant};

use common::server::{TestServer, assert_error};
use common::stripped::{RECOMMENDED, room_with_every_stripped_state, stripped_types};
use serde_json::{Value, json};

fn bodies(timeline: &Value) -> Vec<String> {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_then_incremental_with_wake_up() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "Lobby"}))
        .await;
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            bob.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    s.send_text(&alice, &room, "first").await;

    // With a one-event timeline, everything before it arrives as state.
    let one = "?filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D";
    let initial = s.sync(&bob, one).await;
    let joined = &initial["rooms"]["join"][&room];
    assert_eq!(bodies(&joined["timeline"]), vec!["first"]);
    assert_eq!(joined["timeline"]["limited"], true);
    let state_types: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        state_types.contains(&"m.room.create") && state_types.contains(&"m.room.name"),
        "{state_types:?}"
    );
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    // Nothing new: a zero-timeout sync answers at once with the same position.
    let empty = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    assert_eq!(empty["next_batch"], since.as_str());
    assert!(empty["rooms"]["join"].get(&room).is_none(), "{empty}");

    // A long-poll wakes when Alice sends.
    let sender = {
        let alice = alice.clone();
        let room = room.clone();
        let base = s.base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let res = reqwest::Client::new()
                .put(format!(
                    "{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/wake"
                ))
                .bearer_auth(&alice.token)
                .json(&json!({"msgtype": "m.text", "body": "wake"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        })
    };
    let started = Instant::now();
    let woke = s.sync(&bob, &format!("?since={since}&timeout=30000")).await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "woke before the timeout"
    );
    sender.await.unwrap();
    assert_eq!(
        bodies(&woke["rooms"]["join"][&room]["timeline"]),
        vec!["wake"]
    );
    assert_ne!(woke["next_batch"], since.as_str());

    // A long-poll with nothing happening ends empty at its timeout.
    let next = woke["next_batch"].as_str().unwrap();
    let idle = s.sync(&bob, &format!("?since={next}&timeout=300")).await;
    assert_eq!(idle["next_batch"], next);

    assert_error(
        &s.get("/_matrix/client/v3/sync?since=garbage", bob.t())
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get("/_matrix/client/v3/sync", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_timeline_pages_back_without_gaps_and_state_delta() {
    let s = TestServer::start().await;
    let u = s.register("carol", "carol-password").await;
    let room = s.create_room(&u, json!({})).await;
    let since = s.sync(&u, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // A name change that will fall outside the timeline window.
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            u.t(),
            &json!({"name": "New"}),
        )
        .await;
    assert_eq!(r.0, 200);
    for i in 0..15 {
        s.send_text(&u, &room, &format!("m{i}")).await;
    }
    let filter = "&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A5%7D%7D%7D";
    let res = s.sync(&u, &format!("?since={since}{filter}")).await;
    let joined = &res["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(
        bodies(&joined["timeline"]),
        (10..15).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let state = joined["state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "New"),
        "{state:?}"
    );

    // prev_batch continues with /messages: m9 .. m0, no gaps, no duplicates.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let (status, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&from={prev}"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200);
    let older: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        older,
        (0..10).rev().map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_leaves_and_account_data() {
    let s = TestServer::start().await;
    let owner = s.register("dave", "dave-password").await;
    let guest = s.register("erin", "erin-password").await;
    let room = s.create_room(&owner, json!({"name": "Secret"})).await;
    let since = s.sync(&guest, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(r.0, 200);
    let res = s.sync(&guest, &format!("?since={since}")).await;
    let invite = res["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .unwrap();
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "invite")
    );
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret")
    );
    let since = res["next_batch"].as_str().unwrap().to_owned();

    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            guest.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    let res = s.sync(&guest, &format!("?since={since}")).await;
    assert!(res["rooms"]["join"].get(&room).is_some(), "{res}");
    let since = res["next_batch"].as_str().unwrap().to_owned();

    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(r.0, 200);
    let res = s.sync(&guest, &format!("?since={since}")).await;
    let left = &res["rooms"]["leave"][&room]["timeline"]["events"];
    assert_eq!(left[0]["content"]["membership"], "ban", "{res}");
    assert!(res["rooms"]["join"].get(&room).is_none());

    // Account data arrives once.
    let since = res["next_batch"].as_str().unwrap().to_owned();
    let r = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.example.x",
                guest.user_id
            ),
            guest.t(),
            &json!({"a": 1}),
        )
        .await;
    assert_eq!(r.0, 200);
    let res = s.sync(&guest, &format!("?since={since}")).await;
    let ad = res["account_data"]["events"].as_array().unwrap();
    assert_eq!(ad.len(), 1);
    assert_eq!(ad[0]["type"], "org.example.x");
    let next = res["next_batch"].as_str().unwrap();
    let res = s.sync(&guest, &format!("?since={next}&timeout=0")).await;
    assert!(
        res["account_data"]
            .get("events")
            .is_none_or(|e| e.as_array().unwrap().is_empty()),
        "{res}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_loaded_members_are_the_timeline_senders() {
    let s = TestServer::start().await;
    let owner = s.register("vera", "vera-password").await;
    let talker = s.register("walt", "walt-password").await;
    let lurker = s.register("xena", "xena-password").await;
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;
    s.join(&talker, &room).await;
    s.join(&lurker, &room).await;
    s.send_text(&talker, &room, "hi").await;

    let members = |res: &Value| -> Vec<String> {
        let mut m: Vec<String> = res["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["type"] == "m.room.member")
                    .map(|e| e["state_key"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        m.sort();
        m
    };
    let lazy = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%2C%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D";
    let res = s.sync(&owner, &format!("?filter={lazy}")).await;
    let mut expected = vec![owner.user_id.clone(), talker.user_id.clone()];
    expected.sort();
    assert_eq!(members(&res), expected, "{res}");

    let eager = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D";
    let res = s.sync(&owner, &format!("?filter={eager}")).await;
    assert!(
        members(&res).contains(&lurker.user_id),
        "without lazy loading every member comes"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_summary_counts_and_heroes() {
    let s = TestServer::start().await;
    let owner = s.register("yuri", "yuri-password").await;
    let b = s.register("zack", "zack-password").await;
    let c = s.register("abby", "abby-password").await;
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;
    s.join(&b, &room).await;
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": c.user_id}),
        )
        .await;
    assert_eq!(r.0, 200);
    let res = s.sync(&owner, "").await;
    let summary = &res["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{res}");
    assert_eq!(summary["m.invited_member_count"], 1);
    let mut heroes: Vec<&str> = summary["m.heroes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    heroes.sort();
    let mut expected = vec![b.user_id.as_str(), c.user_id.as_str()];
    expected.sort();
    assert_eq!(heroes, expected, "the syncing user is not a hero");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocks_show_in_their_own_section() {
    let s = TestServer::start().await;
    let owner = s.register("bea", "bea-password").await;
    let knocker = s.register("cal", "cal-password").await;
    let room = s
        .create_room(
            &owner,
            json!({"name": "Club", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    let since = s.sync(&knocker, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post(
            &format!("/_matrix/client/v3/knock/{room}"),
            knocker.t(),
            &json!({}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let res = s.sync(&knocker, &format!("?since={since}")).await;
    let state = res["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock"),
        "{res}"
    );
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Club")
    );
    let since = res["next_batch"].as_str().unwrap().to_owned();

    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": knocker.user_id}),
        )
        .await;
    assert_eq!(r.0, 200);
    let res = s.sync(&knocker, &format!("?since={since}")).await;
    assert!(res["rooms"]["invite"].get(&room).is_some(), "{res}");
    assert!(res["rooms"]["knock"].get(&room).is_none());
    s.shutdown().await;
}

#[tokio::test]
async fn unread_notification_counts_follow_push_rules_and_receipts() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let plain1 = s.send_text(&alice, &room, "one").await;
    let (status, mention) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/mention"),
            alice.t(),
            &json!({"msgtype": "m.text", "body": "hey bob", "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    assert_eq!(status, 200, "{mention}");
    let mention = mention["event_id"].as_str().expect("event_id").to_owned();
    s.send_text(&alice, &room, "three").await;
    // Bob's own messages never count for him.
    s.send_text(&bob, &room, "mine").await;

    let counts = |sync: &Value| {
        let u = &sync["rooms"]["join"][&room]["unread_notifications"];
        (
            u["notification_count"].as_u64(),
            u["highlight_count"].as_u64(),
        )
    };
    let sync = s.sync(&bob, "").await;
    assert_eq!(counts(&sync), (Some(3), Some(1)), "{sync}");
    // Alice's own view: bob's message is one unread for her.
    let sync_a = s.sync(&alice, "").await;
    assert_eq!(counts(&sync_a), (Some(1), Some(0)));

    // A receipt on the mention leaves one unread, no highlight.
    let (status, _) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                common::server::enc(&mention)
            ),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let sync = s.sync(&bob, "").await;
    assert_eq!(counts(&sync), (Some(1), Some(0)));

    // Threaded counts only when the filter asks for them; otherwise folded in.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/in-thread"),
            alice.t(),
            &json!({"msgtype": "m.text", "body": "threaded",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": plain1}}),
        )
        .await;
    assert_eq!(status, 200);
    let sync = s.sync(&bob, "").await;
    assert_eq!(counts(&sync), (Some(2), Some(0)));
    let filter = common::server::enc(
        &json!({"room": {"timeline": {"unread_thread_notifications": true}}}).to_string(),
    );
    let sync = s.sync(&bob, &format!("?filter={filter}")).await;
    assert_eq!(counts(&sync), (Some(1), Some(0)));
    assert_eq!(
        sync["rooms"]["join"][&room]["unread_thread_notifications"][&plain1]["notification_count"],
        1
    );

    // A new rule of bob's applies to the very next message in the same room and state.
    let (status, body) = s
        .put(
            "/_matrix/client/v3/pushrules/global/override/quiet",
            bob.t(),
            &json!({"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "quiet"}],
                    "actions": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.send_text(&alice, &room, "quiet").await;
    let sync = s.sync(&bob, "").await;
    assert_eq!(
        counts(&sync),
        (Some(2), Some(0)),
        "the quiet message notifies nobody"
    );
    s.send_text(&alice, &room, "loud").await;
    let sync = s.sync(&bob, "").await;
    assert_eq!(counts(&sync), (Some(3), Some(0)));
}

#[tokio::test]
async fn sync_filters_are_honoured() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let kept = s.create_room(&alice, json!({"name": "kept"})).await;
    let dropped = s.create_room(&alice, json!({"name": "dropped"})).await;
    for i in 0..3 {
        s.send_text(&alice, &kept, &format!("m{i}")).await;
        let (status, _) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{kept}/state/m.room.topic"),
                alice.t(),
                &json!({"topic": format!("t{i}")}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.example.a",
                alice.user_id
            ),
            alice.t(),
            &json!({"a": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let sync_with = |f: Value| {
        let f = common::server::enc(&f.to_string());
        let s = &s;
        let alice = &alice;
        async move { s.sync(alice, &format!("?filter={f}")).await }
    };

    // Timeline types and limit: only messages count towards the limit; rooms filter.
    let sync = sync_with(json!({
        "room": {"not_rooms": [dropped], "timeline": {"types": ["m.room.message"], "limit": 2}},
        "account_data": {"not_types": ["org.example.*"]},
        "presence": {"types": ["nothing.matches"]}
    }))
    .await;
    assert!(sync["rooms"]["join"][&dropped].is_null(), "{sync}");
    let timeline = sync["rooms"]["join"][&kept]["timeline"]["events"]
        .as_array()
        .expect("timeline");
    let bodies: Vec<&str> = timeline
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(bodies, ["m1", "m2"]);
    assert_eq!(sync["rooms"]["join"][&kept]["timeline"]["limited"], true);
    let account_types: Vec<&str> = sync["account_data"]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !account_types.contains(&"org.example.a"),
        "{account_types:?}"
    );
    assert!(
        sync["presence"]["events"]
            .as_array()
            .is_none_or(|p| p.is_empty()),
        "{sync}"
    );

    // event_fields and event_format.
    let sync = sync_with(json!({
        "event_fields": ["type", "content.body", "event_id"],
        "room": {"rooms": [kept], "timeline": {"types": ["m.room.message"], "limit": 1}}
    }))
    .await;
    let event = &sync["rooms"]["join"][&kept]["timeline"]["events"][0];
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["content"], json!({"body": "m2"}));
    assert!(
        event["sender"].is_null() && event["origin_server_ts"].is_null(),
        "{event}"
    );
    let sync = sync_with(json!({
        "event_format": "federation",
        "room": {"timeline": {"types": ["m.room.message"], "limit": 1}}
    }))
    .await;
    let event = &sync["rooms"]["join"][&kept]["timeline"]["events"][0];
    assert!(
        event["depth"].is_u64() && event["auth_events"].is_array(),
        "{event}"
    );
    assert!(event["event_id"].is_string());
}

/// A room joined since the token comes with its whole state, as in an initial sync: matrix-nio
/// learns from it that the room is encrypted (and its name, members). Also when the user could
/// not see the events that set that state (history visible to joined members only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_since_the_token_comes_with_its_state() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(
            &alice,
            json!({
                "name": "Secret garden",
                "invite": [bob.user_id],
                "initial_state": [
                    {"type": "m.room.encryption", "state_key": "",
                     "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                    {"type": "m.room.history_visibility", "state_key": "",
                     "content": {"history_visibility": "joined"}},
                ],
            }),
        )
        .await;
    // Bob's token is past everything in the room but the invite.
    let first = s.sync(&bob, "").await;
    assert!(first["rooms"]["invite"][&room].is_object(), "{first}");
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    s.join(&bob, &room).await;

    let next = s.sync(&bob, &format!("?since={since}")).await;
    let joined = &next["rooms"]["join"][&room];
    // The room's state: the state section, then the state events of the timeline.
    let types: Vec<&str> = ["state", "timeline"]
        .iter()
        .flat_map(|section| joined[section]["events"].as_array().into_iter().flatten())
        .filter(|e| e["state_key"].is_string())
        .filter_map(|e| e["type"].as_str())
        .collect();
    for wanted in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.encryption",
        "m.room.name",
    ] {
        assert!(types.contains(&wanted), "{wanted} missing from {joined}");
    }
    let alice_member = ["state", "timeline"]
        .iter()
        .flat_map(|section| joined[section]["events"].as_array().into_iter().flatten())
        .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str());
    assert!(alice_member, "{joined}");
    // The change to `joined` history visibility is hidden from bob's timeline by itself;
    // the state still tells him of it.
    let visibility: Vec<&Value> = ["state", "timeline"]
        .iter()
        .flat_map(|section| joined[section]["events"].as_array().into_iter().flatten())
        .filter(|e| e["type"] == "m.room.history_visibility")
        .map(|e| &e["content"]["history_visibility"])
        .collect();
    assert_eq!(visibility.last(), Some(&&json!("joined")), "{joined}");
    let timeline = joined["timeline"]["events"].as_array().expect("timeline");
    assert_eq!(
        timeline.last().map(|e| &e["state_key"]),
        Some(&json!(bob.user_id))
    );

    // A later incremental sync of the same room carries only what changed.
    let since = next["next_batch"].as_str().expect("next_batch").to_owned();
    s.send_text(&alice, &room, "hello").await;
    let later = s.sync(&bob, &format!("?since={since}")).await;
    let joined = &later["rooms"]["join"][&room];
    assert!(
        joined["state"]["events"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{joined}"
    );
    assert_eq!(bodies(&joined["timeline"]), ["hello"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_and_knocks_carry_the_recommended_stripped_state() {
    let s = TestServer::start().await;
    let owner = s.register("bea", "bea-password").await;
    let invitee = s.register("dan", "dan-password").await;
    let knocker = s.register("cal", "cal-password").await;
    let room = s
        .create_room(&owner, room_with_every_stripped_state())
        .await;

    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": invitee.user_id}),
        )
        .await;
    assert_eq!(status, 200, "invite: {body}");
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/knock/{room}"),
            knocker.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "knock: {body}");

    let sync = s.sync(&invitee, "").await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    assert_eq!(stripped_types(invite), RECOMMENDED, "{invite}");
    let encryption = invite
        .as_array()
        .and_then(|a| a.iter().find(|e| e["type"] == "m.room.encryption"))
        .expect("encryption");
    assert_eq!(encryption["content"]["algorithm"], "m.megolm.v1.aes-sha2");
    assert_eq!(encryption["state_key"], "");

    let sync = s.sync(&knocker, "").await;
    let knock = &sync["rooms"]["knock"][&room]["knock_state"]["events"];
    assert_eq!(stripped_types(knock), RECOMMENDED, "{knock}");
    s.shutdown().await;
}

/// `/sync` with a timeline filter of `limit` events.
fn limit_filter(limit: u32) -> String {
    common::server::enc(&json!({"room": {"timeline": {"limit": limit}}}).to_string())
}

/// A room joined (or joined again) since the token comes as in an initial sync: its newest
/// events, not only those after the token, `limited` with a `prev_batch` that pages back
/// through the rest when it holds more, and everything when it fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_since_the_token_comes_with_its_history() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "Chat"}))
        .await;
    for i in 0..6 {
        s.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let first = s.sync(&bob, "").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    s.join(&bob, &room).await;

    let next = s
        .sync(&bob, &format!("?since={since}&filter={}", limit_filter(3)))
        .await;
    let joined = &next["rooms"]["join"][&room];
    let timeline = &joined["timeline"];
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{joined}");
    assert_eq!(bodies(timeline), ["m4", "m5"], "{joined}");
    assert_eq!(timeline["limited"], true, "{joined}");
    let prev = timeline["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();
    // Paging back from prev_batch reaches the rest of the history and the creation.
    let (status, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100&from={prev}"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let older: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(older, ["m3", "m2", "m1", "m0"]);
    assert_eq!(
        page["chunk"].as_array().unwrap().last().unwrap()["type"],
        "m.room.create"
    );

    // Leave, miss a message, join again: the room comes back with what was missed.
    let since = next["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    s.send_text(&alice, &room, "while-away").await;
    let gone = s.sync(&bob, &format!("?since={since}")).await;
    assert!(gone["rooms"]["leave"][&room].is_object(), "{gone}");
    let since = gone["next_batch"].as_str().unwrap().to_owned();
    s.join(&bob, &room).await;
    let back = s
        .sync(&bob, &format!("?since={since}&filter={}", limit_filter(50)))
        .await;
    let timeline = &back["rooms"]["join"][&room]["timeline"];
    assert_eq!(
        bodies(timeline),
        ["m0", "m1", "m2", "m3", "m4", "m5", "while-away"],
        "{back}"
    );
    // All of it fits, from the room's creation on: nothing to page back for.
    assert_eq!(timeline["events"][0]["type"], "m.room.create");
    // (`limited: false` is left out, as ruma serialises it.)
    assert_ne!(timeline["limited"], true, "{timeline}");
    let types: Vec<&str> = back["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(!types.contains(&"m.room.message"), "{types:?}");

    // full_state=true answers the same way for every room.
    let full = s
        .sync(
            &bob,
            &format!("?since={since}&full_state=true&filter={}", limit_filter(2)),
        )
        .await;
    let joined = &full["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    assert!(joined["timeline"]["prev_batch"].is_string());
    let types: Vec<&str> = joined["state"]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        types.contains(&"m.room.create") && types.contains(&"m.room.name"),
        "{types:?}"
    );
}

/// Every token the server hands out is taken wherever a position is: a sync token as
/// `/members?at=` (what matrix-js-sdk sends before encrypting) and as `/messages` `from`
/// and `to`, pagination tokens as `to`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_pagination_tokens_are_taken_everywhere() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.send_text(&alice, &room, "before-bob").await;
    let before_bob = s.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    s.join(&bob, &room).await;
    s.send_text(&alice, &room, "after-bob").await;
    let now = s.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    s.send_text(&alice, &room, "later").await;

    let members = |at: String| {
        let path = format!("/_matrix/client/v3/rooms/{room}/members?not_membership=leave&at={at}");
        let s = &s;
        let alice = &alice;
        async move {
            let (status, body) = s.get(&path, alice.t()).await;
            assert_eq!(status, 200, "{path}: {body}");
            let mut who: Vec<String> = body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["state_key"].as_str().unwrap().to_owned())
                .collect();
            who.sort();
            who
        }
    };
    assert_eq!(
        members(before_bob.clone()).await,
        vec![alice.user_id.clone()]
    );
    let mut both = vec![alice.user_id.clone(), bob.user_id.clone()];
    both.sort();
    assert_eq!(members(now.clone()).await, both);

    let page = |query: String| {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?{query}");
        let s = &s;
        let alice = &alice;
        async move {
            let (status, body) = s.get(&path, alice.t()).await;
            assert_eq!(status, 200, "{path}: {body}");
            let texts: Vec<String> = body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect();
            (texts, body)
        }
    };
    // Back from a sync token: what was there at that point, newest first.
    let (texts, _) = page(format!("dir=b&limit=50&from={now}")).await;
    assert_eq!(texts, ["after-bob", "before-bob"]);
    // Back from the end down to a sync token: only what came after it.
    let (texts, body) = page(format!("dir=b&limit=50&to={before_bob}")).await;
    assert_eq!(texts, ["later", "after-bob"], "{body}");
    assert!(body["end"].is_null(), "the bound ends the pages: {body}");
    // Forwards from one sync token to another.
    let (texts, _) = page(format!("dir=f&limit=50&from={before_bob}&to={now}")).await;
    assert_eq!(texts, ["after-bob"]);
    // A pagination token as `to`: paging forwards up to a page's start stops before it.
    let (_, last_two) = page("dir=b&limit=2".to_owned()).await;
    let end = last_two["end"].as_str().unwrap().to_owned();
    let (texts, _) = page(format!("dir=b&limit=50&to={end}")).await;
    assert!(texts.starts_with(&["later".to_owned()]), "{texts:?}");
    // Garbage is still refused.
    for bad in ["s1_2", "x", "t1"] {
        let (status, body) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/members?at={bad}"),
                alice.t(),
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{bad}"
        );
    }
}

/// Filters are bounded: a list longer than 1,000 entries is refused when uploaded, inline
/// and when a stored one (from before the bound) is used, so no filter can make a sync cost
/// what its garbage holds.
#[tokio::test]
async fn oversized_filters_are_refused_everywhere() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    let types = |n: usize| (0..n).map(|i| format!("t.{i}")).collect::<Vec<_>>();

    let big = json!({"room": {"timeline": {"types": types(1001)}}});
    assert_error(&s.post(&path, alice.t(), &big).await, 400, "M_BAD_JSON");
    let senders: Vec<String> = (0..1001).map(|i| format!("@u{i}:x")).collect();
    let big = json!({"presence": {"not_senders": senders}});
    assert_error(&s.post(&path, alice.t(), &big).await, 400, "M_BAD_JSON");
    let (status, ok) = s
        .post(
            &path,
            alice.t(),
            &json!({"room": {"timeline": {"types": types(1000)}}}),
        )
        .await;
    assert_eq!(status, 200, "{ok}");

    let inline =
        common::server::enc(&json!({"room": {"state": {"not_types": types(1001)}}}).to_string());
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/sync?filter={inline}"),
            alice.t(),
        )
        .await,
        400,
        "M_BAD_JSON",
    );

    // One stored before the bound existed.
    let db = common::media::db(&s).await;
    let stored = json!({"room": {"timeline": {"not_types": types(5000)}}});
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, nextval('filter_ids'), $2)
         RETURNING filter_id",
    )
    .bind(&alice.user_id)
    .bind(&stored)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_error(
        &s.get(&format!("/_matrix/client/v3/sync?filter={id}"), alice.t())
            .await,
        400,
        "M_BAD_JSON",
    );
    let within = ok["filter_id"].as_str().unwrap();
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/sync?filter={within}"),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// With a timeline filter that leaves state events out, an initial sync's state section
/// still carries the room's state as it is now, not as it was before the first message.
#[tokio::test]
async fn state_a_timeline_filter_leaves_out_comes_as_it_is_now() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "Old name"}))
        .await;
    s.send_text(&alice, &room, "first").await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            alice.t(),
            &json!({"name": "New name"}),
        )
        .await;
    assert_eq!(status, 200);
    s.send_text(&alice, &room, "second").await;
    let filter = common::server::enc(
        &json!({"room": {"timeline": {"types": ["m.room.message"]}}}).to_string(),
    );
    let sync = s.sync(&alice, &format!("?filter={filter}")).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(bodies(&joined["timeline"]), ["first", "second"], "{joined}");
    let names: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.name")
        .map(|e| &e["content"]["name"])
        .collect();
    assert_eq!(names, [&json!("New name")], "{joined}");
}

/// Account data whose write was still committing when a sync took its position is sent by
/// the next sync: the position comes from committed rows, not from the sequence, which
/// counts a write before it commits (the same fault lost Element X's `m.direct` in
/// sliding sync).
#[tokio::test]
async fn account_data_committing_during_a_sync_is_sent_by_the_next() {
    let s = TestServer::start().await;
    let bob = s.register("bob", "password-bob").await;
    let pool = common::media::db(&s).await;
    let mut tx = pool.begin().await.expect("begin");
    trellis::db::account_data::lock_user_stream(&mut *tx, &bob.user_id)
        .await
        .expect("lock");
    let content = serde_json::value::RawValue::from_string(json!({"colour": "teal"}).to_string())
        .expect("raw");
    trellis::db::account_data::put(&mut *tx, &bob.user_id, "", "org.example.theme", &content)
        .await
        .expect("put");
    let first = s.sync(&bob, "").await;
    tx.commit().await.expect("commit");
    let since = first["next_batch"].as_str().expect("next_batch");
    let next = s
        .sync(&bob, &format!("?since={}", common::server::enc(since)))
        .await;
    let types: Vec<&str> = next["account_data"]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(types.contains(&"org.example.theme"), "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_have_every_section_even_when_empty() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let first = s.sync(&alice, "").await;
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    // Only a receipt is new for Alice's room: its timeline and state are empty.
    let event = s.send_text(&bob, &room, "read me").await;
    let mid = s
        .sync(
            &alice,
            &format!("?since={}&timeout=10000", common::server::enc(&since)),
        )
        .await;
    let since = mid["next_batch"].as_str().expect("next_batch").to_owned();
    let (status, body) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                common::server::enc(&room),
                common::server::enc(&event)
            ),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let next = s
        .sync(
            &alice,
            &format!("?since={}&timeout=10000", common::server::enc(&since)),
        )
        .await;
    let joined = &next["rooms"]["join"][&room];
    assert!(
        joined["ephemeral"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{next}"
    );
    assert_eq!(joined["timeline"]["events"], json!([]), "{next}");
    assert_eq!(joined["timeline"]["limited"], false, "{next}");
    assert_eq!(joined["state"]["events"], json!([]), "{next}");
    assert_eq!(joined["account_data"]["events"], json!([]), "{next}");
    assert!(joined["summary"].is_object(), "{next}");
    assert!(joined["unread_notifications"].is_object(), "{next}");

    // A room with a timeline that is not limited says so.
    let filter = common::server::enc(&json!({"room": {"timeline": {"limit": 50}}}).to_string());
    let initial = s.sync(&alice, &format!("?filter={filter}")).await;
    let joined = &initial["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], false, "{initial}");
    assert!(joined["ephemeral"]["events"].is_array(), "{initial}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_rooms_come_with_their_state_and_timeline_up_to_the_leave() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let enc = common::server::enc;
    let since = s.sync(&bob, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    s.send_text(&alice, &room, "before").await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.send_text(&alice, &room, "after").await;
    let bodies = |left: &Value| -> Vec<String> {
        left["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let last_is_leave = |left: &Value| {
        left["timeline"]["events"]
            .as_array()
            .and_then(|t| t.last())
            .is_some_and(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == bob.user_id.as_str()
                    && e["content"]["membership"] == "leave"
            })
    };

    // Incremental: what happened since the token, up to and including the leave.
    let next = s
        .sync(&bob, &format!("?since={}&timeout=10000", enc(&since)))
        .await;
    let left = &next["rooms"]["leave"][&room];
    assert_eq!(bodies(left), ["before"], "{next}");
    assert!(last_is_leave(left), "{next}");
    assert_eq!(left["timeline"]["limited"], false, "{next}");
    assert!(left["state"]["events"].is_array(), "{next}");

    // Initial with include_leave: the newest events up to the leave, and the state before
    // them; never what came after.
    let filter =
        enc(&json!({"room": {"include_leave": true, "timeline": {"limit": 3}}}).to_string());
    let initial = s.sync(&bob, &format!("?filter={filter}")).await;
    let left = &initial["rooms"]["leave"][&room];
    assert!(last_is_leave(left), "{initial}");
    assert_eq!(bodies(left), ["before"], "{initial}");
    assert_eq!(left["timeline"]["limited"], true, "{initial}");
    assert!(left["timeline"]["prev_batch"].is_string(), "{initial}");
    let state_types: Vec<&str> = left["state"]["events"]
        .as_array()
        .expect("state")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(state_types.contains(&"m.room.create"), "{initial}");
    assert!(state_types.contains(&"m.room.power_levels"), "{initial}");
    // Without include_leave an initial sync has no left rooms.
    let plain = s.sync(&bob, "").await;
    assert!(plain["rooms"]["leave"].get(&room).is_none(), "{plain}");
}

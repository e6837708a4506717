//! Rooms on the event DAG store, through the client API: create, join, send, state, redact,
//! read history.

mod common;

use common::server::{TestServer, User, assert_error};
use serde_json::{Value, json};

async fn send_text(s: &TestServer, u: &User, room: &str, txn: &str, body: &str) -> (u16, Value) {
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        u.t(),
        &json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

/// All events of a room paginated in one direction with pages of `limit`.
async fn paginate(
    s: &TestServer,
    u: &User,
    room: &str,
    dir: &str,
    limit: u32,
    extra: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..1000 {
        let mut path =
            format!("/_matrix/client/v3/rooms/{room}/messages?dir={dir}&limit={limit}{extra}");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, page) = s.get(&path, u.t()).await;
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= limit as usize);
        out.extend(chunk.iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_send_and_read_back() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s.create_room(&alice,
        json!({"name": "Garden", "topic": "Plants", "preset": "public_chat", "room_alias_name": "garden"}),
    )
    .await;

    let (status, state) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/state"), alice.t())
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.name",
        "m.room.topic",
        "m.room.canonical_alias",
        "m.room.history_visibility",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    let (status, name) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            alice.t(),
        )
        .await;
    assert_eq!((status, name), (200, json!({"name": "Garden"})));
    let (_, jr) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.join_rules/"),
            alice.t(),
        )
        .await;
    assert_eq!(jr["join_rule"], "public");

    let (status, res) = send_text(&s, &alice, &room, "t1", "hello").await;
    assert_eq!(status, 200, "{res}");
    let event_id = res["event_id"].as_str().unwrap().to_owned();
    // Retrying the same transaction returns the same event.
    let (_, again) = send_text(&s, &alice, &room, "t1", "hello").await;
    assert_eq!(again["event_id"], event_id.as_str());
    // The same transaction ID in another room is another request.
    let other_room = s.create_room(&alice, json!({})).await;
    let (_, other) = send_text(&s, &alice, &other_room, "t1", "hello").await;
    assert_ne!(other["event_id"], event_id.as_str());

    let (status, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["content"]["body"], "hello");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["room_id"], room.as_str());

    let (status, joined) = s.get("/_matrix/client/v3/joined_rooms", alice.t()).await;
    assert_eq!(status, 200);
    assert_eq!(joined["joined_rooms"], json!([room, other_room]));

    // Bob joins by alias and talks.
    let bob = s.register("bob", "bob-password").await;
    let (status, res) = s
        .post(
            "/_matrix/client/v3/join/%23garden:trellis.test",
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["room_id"], room.as_str());
    assert_eq!(send_text(&s, &bob, &room, "b1", "hi alice").await.0, 200);
    let all = paginate(&s, &alice, &room, "b", 10, "").await;
    assert_eq!(all[0]["content"]["body"], "hi alice");
    assert_eq!(all[1]["content"]["membership"], "join");
    assert_eq!(all.last().unwrap()["type"], "m.room.create");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_messages_paginate_both_ways_exactly_once() {
    let s = TestServer::start().await;
    let u = s.register("carol", "carol-password").await;
    let room = s.create_room(&u, json!({})).await;
    for i in 0..300 {
        let (status, body) = send_text(&s, &u, &room, &format!("m{i}"), &format!("msg {i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let filter = "&filter=%7B%22types%22%3A%5B%22m.room.message%22%5D%7D";
    let backwards = paginate(&s, &u, &room, "b", 7, filter).await;
    let bodies: Vec<String> = backwards
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..300).rev().map(|i| format!("msg {i}")).collect();
    assert_eq!(bodies, expected);

    let forwards = paginate(&s, &u, &room, "f", 13, filter).await;
    let bodies: Vec<String> = forwards
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..300).map(|i| format!("msg {i}")).collect();
    assert_eq!(bodies, expected);

    // Unfiltered, both ways see the same events.
    let all_b = paginate(&s, &u, &room, "b", 50, "").await;
    let all_f = paginate(&s, &u, &room, "f", 50, "").await;
    let ids_b: Vec<&Value> = all_b.iter().rev().map(|e| &e["event_id"]).collect();
    let ids_f: Vec<&Value> = all_f.iter().map(|e| &e["event_id"]).collect();
    assert_eq!(ids_b, ids_f);
    assert_eq!(
        all_f.len(),
        300 + 6,
        "300 messages plus the room's initial events"
    );

    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=garbage"),
            u.t(),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redactions_are_served_redacted() {
    let s = TestServer::start().await;
    let u = s.register("dora", "dora-password").await;
    let room = s.create_room(&u, json!({})).await;
    let (_, res) = send_text(&s, &u, &room, "x", "secret").await;
    let target = res["event_id"].as_str().unwrap().to_owned();
    let (status, red) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{target}/r1"),
            u.t(),
            &json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(status, 200, "{red}");
    let (_, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{target}"),
            u.t(),
        )
        .await;
    assert_eq!(ev["content"], json!({}), "{ev}");
    assert_eq!(
        ev["unsigned"]["redacted_because"]["event_id"],
        red["event_id"]
    );
    let page = paginate(&s, &u, &room, "b", 5, "").await;
    let m = page
        .iter()
        .find(|e| e["event_id"] == target.as_str())
        .unwrap();
    assert_eq!(m["content"], json!({}));
    assert_eq!(page[0]["type"], "m.room.redaction");
    let (status, ctx) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{target}?limit=2"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["content"], json!({}));
    assert_eq!(
        ctx["event"]["unsigned"]["redacted_because"]["event_id"],
        red["event_id"]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_errors() {
    let s = TestServer::start().await;
    let owner = s.register("erin", "erin-password").await;
    let other = s.register("finn", "finn-password").await;
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;

    // Not a member: cannot send or read.
    assert_error(
        &send_text(&s, &other, &room, "1", "x").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            other.t(),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), other.t())
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Member without power: cannot set the name.
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            other.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            other.t(),
            &json!({"name": "x"}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // Bad content for a known state type.
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            owner.t(),
            &json!({"name": 5}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            owner.t(),
            &json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    // Unknown rooms and events.
    assert_error(
        &send_text(&s, &owner, "!nope:trellis.test", "1", "x").await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/event/$nope"),
            owner.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(
            "/_matrix/client/v3/join/%23nothing:trellis.test",
            owner.t(),
            &json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // Alias already in use, unsupported room version.
    let r = s
        .post(
            "/_matrix/client/v3/createRoom",
            owner.t(),
            &json!({"room_alias_name": "taken"}),
        )
        .await;
    assert_eq!(r.0, 200);
    let r = s
        .post(
            "/_matrix/client/v3/createRoom",
            owner.t(),
            &json!({"room_alias_name": "taken"}),
        )
        .await;
    assert_error(&r, 400, "M_ROOM_IN_USE");
    let r = s
        .post(
            "/_matrix/client/v3/createRoom",
            owner.t(),
            &json!({"room_version": "999"}),
        )
        .await;
    assert_error(&r, 400, "M_UNSUPPORTED_ROOM_VERSION");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_kick_ban_unban_join() {
    let s = TestServer::start().await;
    let owner = s.register("gail", "gail-password").await;
    let guest = s.register("hank", "hank-password").await;
    let room = s
        .create_room(&owner, json!({"preset": "private_chat"}))
        .await;

    // Invite-only: cannot join uninvited.
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            guest.t(),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
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
    // The guest cannot kick the owner.
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            guest.t(),
            &json!({"user_id": owner.user_id}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // Kick, then ban: a banned user cannot rejoin, even with an invite.
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            owner.t(),
            &json!({"user_id": guest.user_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            guest.t(),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // A banned user is unbanned, not kicked; only a member is kicked; only the banned are
    // unbanned.
    let stranger = s.register("stranger", "stranger-password").await;
    for (action, who) in [
        ("kick", &guest.user_id),
        ("kick", &stranger.user_id),
        ("unban", &stranger.user_id),
    ] {
        assert_error(
            &s.post(
                &format!("/_matrix/client/v3/rooms/{room}/{action}"),
                owner.t(),
                &json!({"user_id": who}),
            )
            .await,
            403,
            "M_FORBIDDEN",
        );
    }
    // Unban, invite, join.
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/unban"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
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
    assert_eq!(
        send_text(&s, &guest, &room, "back", "I'm back").await.0,
        200
    );
    // Leave and forget.
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            guest.t(),
            &json!({}),
        )
        .await,
        400,
        "M_UNKNOWN",
    );
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            guest.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            guest.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", guest.t()).await;
    assert_eq!(joined["joined_rooms"], json!([]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_senders_leave_one_chain() {
    let s = TestServer::start().await;
    let a = s.register("ivan", "ivan-password").await;
    let b = s.register("jane", "jane-password").await;
    let room = s.create_room(&a, json!({"preset": "public_chat"})).await;
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            b.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    let send_all = |u: User| {
        let s = &s;
        let room = room.clone();
        async move {
            for i in 0..50 {
                let (status, body) = send_text(
                    s,
                    &u,
                    &room,
                    &format!("race{i}"),
                    &format!("{} {i}", u.user_id),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        }
    };
    tokio::join!(send_all(a.clone()), send_all(b.clone()));

    assert_one_chain(&s).await;
    let all = paginate(&s, &a, &room, "f", 100, "").await;
    assert_eq!(
        all.iter().filter(|e| e["type"] == "m.room.message").count(),
        100
    );
    s.shutdown().await;
}

#[tokio::test]
async fn concurrent_sends_chain_and_a_retried_transaction_is_stored_once() {
    let s = TestServer::start().await;
    let a = s.register("kate", "kate-password").await;
    let room = s.create_room(&a, json!({"preset": "public_chat"})).await;
    // Forty sends at once (stored together in batches), and five copies of one transaction.
    let names: Vec<(String, String)> = (0..40)
        .map(|i| (format!("c{i}"), format!("c {i}")))
        .collect();
    let sends = names
        .iter()
        .map(|(txn, body)| send_text(&s, &a, &room, txn, body));
    let dups = (0..5).map(|_| send_text(&s, &a, &room, "dup", "the same one"));
    let (sent, dup) = tokio::join!(
        futures::future::join_all(sends),
        futures::future::join_all(dups)
    );
    assert!(sent.iter().all(|(status, _)| *status == 200), "{sent:?}");
    assert!(dup.iter().all(|(status, _)| *status == 200), "{dup:?}");
    let dup_ids: std::collections::HashSet<&str> = dup
        .iter()
        .filter_map(|(_, b)| b["event_id"].as_str())
        .collect();
    assert_eq!(dup_ids.len(), 1, "one event for one transaction: {dup:?}");
    let sent_ids: std::collections::HashSet<&str> = sent
        .iter()
        .filter_map(|(_, b)| b["event_id"].as_str())
        .collect();
    assert_eq!(sent_ids.len(), 40);

    let all = paginate(&s, &a, &room, "f", 100, "").await;
    let bodies: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies.len(), 41, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| **b == "the same one").count(), 1);

    assert_one_chain(&s).await;
    s.shutdown().await;
}

/// The server's one room is one chain: a single forward extremity, depths without gap or
/// repeat, one parent per event.
async fn assert_one_chain(s: &TestServer) {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(s.config.database.url.as_deref().unwrap())
        .await
        .unwrap();
    let (extremities,): (i64,) = sqlx::query_as("SELECT count(*) FROM forward_extremities")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(extremities, 1);
    let depths: Vec<(i64,)> = sqlx::query_as("SELECT depth FROM events ORDER BY depth")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let depths: Vec<i64> = depths.into_iter().map(|d| d.0).collect();
    assert_eq!(
        depths,
        (1..=depths.len() as i64).collect::<Vec<_>>(),
        "no gaps, no duplicate depth"
    );
    let (multi_parent,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT event_nid FROM event_edges GROUP BY event_nid HAVING count(*) > 1) x",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(multi_parent, 0, "every event has exactly one parent");
}

/// Send `n` messages as `u`, returning their bodies.
async fn send_many(s: &TestServer, u: &User, room: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let (status, body) = send_text(
            s,
            u,
            room,
            &format!("{prefix}{i}"),
            &format!("{prefix} {i}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn visible_bodies(s: &TestServer, u: &User, room: &str) -> Vec<String> {
    let filter = "&filter=%7B%22types%22%3A%5B%22m.room.message%22%5D%7D";
    paginate(s, u, room, "f", 4, filter)
        .await
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_visibility_is_enforced_per_event() {
    let s = TestServer::start().await;
    let owner = s.register("kate", "kate-password").await;
    let late = s.register("liam", "liam-password").await;
    let outsider = s.register("mona", "mona-password").await;

    for (visibility, expected_before) in [("shared", true), ("joined", false), ("invited", false)] {
        let room = s
            .create_room(&owner, json!({"preset": "public_chat"}))
            .await;
        let r = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
                owner.t(),
                &json!({"history_visibility": visibility}),
            )
            .await;
        assert_eq!(r.0, 200, "{}", r.1);
        send_many(&s, &owner, &room, "before", 3).await;
        let r = s
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                owner.t(),
                &json!({"user_id": late.user_id}),
            )
            .await;
        assert_eq!(r.0, 200);
        send_many(&s, &owner, &room, "invited", 2).await;
        assert_eq!(
            s.post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                late.t(),
                &json!({})
            )
            .await
            .0,
            200
        );
        send_many(&s, &owner, &room, "joined", 2).await;

        let seen = visible_bodies(&s, &late, &room).await;

        let mut expected: Vec<String> = Vec::new();
        if expected_before {
            expected.extend((0..3).map(|i| format!("before {i}")));
        }
        if visibility != "joined" {
            expected.extend((0..2).map(|i| format!("invited {i}")));
        }
        expected.extend((0..2).map(|i| format!("joined {i}")));
        assert_eq!(seen, expected, "history_visibility {visibility}");

        // A hidden event cannot be fetched directly either.
        if !expected_before {
            let all = paginate(&s, &owner, &room, "f", 50, "").await;
            let hidden = all
                .iter()
                .find(|e| e["content"]["body"] == "before 0")
                .unwrap();
            let r = s
                .get(
                    &format!(
                        "/_matrix/client/v3/rooms/{room}/event/{}",
                        hidden["event_id"].as_str().unwrap()
                    ),
                    late.t(),
                )
                .await;
            assert_error(&r, 404, "M_NOT_FOUND");
        }

        // After leaving, what was sent while joined stays visible; what follows does not.
        if visibility == "shared" {
            assert_eq!(
                s.post(
                    &format!("/_matrix/client/v3/rooms/{room}/leave"),
                    late.t(),
                    &json!({})
                )
                .await
                .0,
                200
            );
            send_many(&s, &owner, &room, "after", 2).await;
            let seen_after = visible_bodies(&s, &late, &room).await;
            assert_eq!(seen_after, expected, "nothing after leaving");
            // The state is the state as it was when they left.
            let (status, state) = s
                .get(&format!("/_matrix/client/v3/rooms/{room}/state"), late.t())
                .await;
            assert_eq!(status, 200, "{state}");
            let own = state
                .as_array()
                .and_then(|a| a.iter().find(|e| e["state_key"] == late.user_id.as_str()))
                .expect("own member event");
            assert_eq!(own["content"]["membership"], "leave");
        }
        // Someone never in the room sees nothing.
        let r = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
                outsider.t(),
            )
            .await;
        assert_error(&r, 403, "M_FORBIDDEN");
    }

    // world_readable: outsiders read it all.
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
        owner.t(),
        &json!({"history_visibility": "world_readable"}),
    )
    .await;
    send_many(&s, &owner, &room, "open", 2).await;
    assert_eq!(
        visible_bodies(&s, &outsider, &room).await,
        vec!["open 0", "open 1"]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_rooms_admit_members_of_the_allowed_room_only() {
    let s = TestServer::start().await;
    let owner = s.register("nora", "nora-password").await;
    let member = s.register("otto", "otto-password").await;
    let stranger = s.register("pete", "pete-password").await;
    let space = s
        .create_room(
            &owner,
            json!({"preset": "public_chat", "creation_content": {"type": "m.space"}}),
        )
        .await;
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{space}/join"),
            member.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    let room = s.create_room(&owner,
        json!({"preset": "private_chat", "initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
        }]}),
    )
    .await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            member.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, ev) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                member.user_id
            ),
            member.t(),
        )
        .await;
    assert_eq!(
        ev["join_authorised_via_users_server"],
        owner.user_id.as_str()
    );
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            stranger.t(),
            &json!({}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking() {
    let s = TestServer::start().await;
    let owner = s.register("quin", "quin-password").await;
    let knocker = s.register("rita", "rita-password").await;
    let room = s.create_room(&owner,
        json!({"room_version": "10", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/knock/{room}"),
            knocker.t(),
            &json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The owner sees the knock and invites.
    let (_, ev) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                knocker.user_id
            ),
            owner.t(),
        )
        .await;
    assert_eq!(ev["membership"], "knock");
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            owner.t(),
            &json!({"user_id": knocker.user_id}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            knocker.t(),
            &json!({})
        )
        .await
        .0,
        200
    );
    // Knocking on an invite-only room is refused.
    let closed = s.create_room(&owner, json!({})).await;
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/knock/{closed}"),
            knocker.t(),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_lazy_load_members_of_senders_only() {
    let s = TestServer::start().await;
    let owner = s.register("sara", "sara-password").await;
    let talker = s.register("tom", "tom-password").await;
    let lurker = s.register("uma", "uma-password").await;
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;
    for u in [&talker, &lurker] {
        assert_eq!(
            s.post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                u.t(),
                &json!({})
            )
            .await
            .0,
            200
        );
    }
    send_text(&s, &talker, &room, "l1", "hello").await;
    let filter = "%7B%22lazy_load_members%22%3Atrue%2C%22types%22%3A%5B%22m.room.message%22%5D%7D";
    let (status, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5&filter={filter}"),
            owner.t(),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let members: Vec<&str> = page["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![talker.user_id.as_str()]);
    s.shutdown().await;
}

/// matrix-nio POSTs /join/{room} and /rooms/{room}/leave with no body at all; every field of
/// those bodies is optional, so an empty body means `{}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_with_an_empty_body() {
    let s = TestServer::start().await;
    let owner = s.register("ivy", "ivy-password").await;
    let guest = s.register("jed", "jed-password").await;
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;
    for path in [
        format!("/_matrix/client/v3/join/{room}"),
        format!("/_matrix/client/v3/rooms/{room}/leave"),
        format!("/_matrix/client/v3/rooms/{room}/join"),
    ] {
        let r = s
            .request(reqwest::Method::POST, &path, guest.t(), None)
            .await;
        assert_eq!(r.0, 200, "{path}: {}", r.1);
    }
    let members = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            owner.t(),
        )
        .await;
    assert!(
        members.1["joined"][&guest.user_id].is_object(),
        "{}",
        members.1
    );
    // A body that is there but is not JSON is still refused.
    let r = s
        .http
        .post(s.url(&format!("/_matrix/client/v3/join/{room}")))
        .bearer_auth(&guest.token)
        .body("{not json")
        .send()
        .await
        .expect("request sent");
    assert_eq!(r.status().as_u16(), 400);
}

/// /messages also starts from a `/sync` next_batch, as the spec allows (matrix-nio pages from
/// it): backwards includes the last event before that position, forwards starts after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_page_from_a_sync_token() {
    let s = TestServer::start().await;
    let u = s.register("kit", "kit-password").await;
    let room = s.create_room(&u, json!({})).await;
    for i in 0..3 {
        s.send_text(&u, &room, &format!("early{i}")).await;
    }
    let middle = s.sync(&u, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    for i in 0..3 {
        s.send_text(&u, &room, &format!("late{i}")).await;
    }
    let bodies = |v: &Value| -> Vec<String> {
        v["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let base = format!("/_matrix/client/v3/rooms/{room}/messages");

    let back = s
        .get(&format!("{base}?dir=b&limit=3&from={middle}"), u.t())
        .await;
    assert_eq!(back.0, 200, "{}", back.1);
    assert_eq!(bodies(&back.1), ["early2", "early1", "early0"]);
    assert_eq!(back.1["start"], middle.as_str());
    // Its `end` goes on from there, back to the room's creation.
    let end = back.1["end"].as_str().expect("end");
    let older = s
        .get(&format!("{base}?dir=b&limit=50&from={end}"), u.t())
        .await;
    let chunk = older.1["chunk"].as_array().expect("chunk");
    assert_eq!(
        chunk.last().map(|e| &e["type"]),
        Some(&json!("m.room.create"))
    );
    assert!(bodies(&older.1).is_empty(), "{}", older.1);

    let forward = s
        .get(&format!("{base}?dir=f&limit=10&from={middle}"), u.t())
        .await;
    assert_eq!(forward.0, 200, "{}", forward.1);
    assert_eq!(bodies(&forward.1), ["late0", "late1", "late2"]);

    // A sync token from before the room existed: nothing before it, everything after it.
    let (_, reg) = s
        .get(&format!("{base}?dir=b&from=s0_0_0_0_0_0_0"), u.t())
        .await;
    assert_eq!(reg["chunk"], json!([]), "{reg}");
    assert_error(
        &s.get(&format!("{base}?dir=b&from=s1_2"), u.t()).await,
        400,
        "M_INVALID_PARAM",
    );
}

/// A local join carries the joiner's display name and avatar in the member event, as a join
/// through another server already did: clients (matrix-nio) name members from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_joins_carry_the_profile() {
    let s = TestServer::start().await;
    let owner = s.register("lena", "lena-password").await;
    let guest = s.register("mo", "mo-password").await;
    let r = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/avatar_url", guest.user_id),
            guest.t(),
            &json!({"avatar_url": "mxc://trellis.test/mo"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let room = s
        .create_room(&owner, json!({"preset": "public_chat"}))
        .await;
    s.join(&guest, &room).await;
    let (status, content) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                guest.user_id
            ),
            owner.t(),
        )
        .await;
    assert_eq!(status, 200, "{content}");
    assert_eq!(content["membership"], "join");
    assert_eq!(content["displayname"], "mo");
    assert_eq!(content["avatar_url"], "mxc://trellis.test/mo");
}

/// The room's state events of `kind`, by state key.
async fn state_event(s: &TestServer, u: &User, room: &str, kind: &str) -> Value {
    let (status, state) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/state"), u.t())
        .await;
    assert_eq!(status, 200, "{state}");
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == "")
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} in {state}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_12_room_lifecycle_with_creators_above_every_power_level() {
    let s = TestServer::start().await;
    let alice = s.register("alice12", "alice-password").await;
    let bob = s.register("bob12", "bob-password").await;
    let carol = s.register("carol12", "carol-password").await;
    let room = s
        .create_room(
            &alice,
            json!({
                "room_version": "12",
                "preset": "private_chat",
                "name": "Twelve",
                "creation_content": {"additional_creators": [bob.user_id]},
                "power_level_content_override": {"users": {alice.user_id.as_str(): 100, carol.user_id.as_str(): 50}}
            }),
        )
        .await;

    // The room ID is the create event's hash and names no server; the create event has no
    // creator field and lists the additional creator.
    let create = state_event(&s, &alice, &room, "m.room.create").await;
    assert_eq!(
        room,
        format!(
            "!{}",
            create["event_id"].as_str().unwrap().trim_start_matches('$')
        )
    );
    assert!(!room.contains(':'), "{room}");
    assert_eq!(create["room_id"], room.as_str());
    assert_eq!(create["content"]["room_version"], "12");
    assert!(create["content"]["creator"].is_null(), "{create}");
    assert_eq!(
        create["content"]["additional_creators"],
        json!([bob.user_id])
    );

    // Creators are left out of the power levels (even when the override names them); only
    // they may upgrade the room.
    let power = state_event(&s, &alice, &room, "m.room.power_levels").await;
    let users = power["content"]["users"].as_object().unwrap();
    assert!(!users.contains_key(&alice.user_id), "{power}");
    assert!(!users.contains_key(&bob.user_id), "{power}");
    assert_eq!(users[&carol.user_id], 50);
    assert_eq!(power["content"]["events"]["m.room.tombstone"], 150);

    // A creator cannot be given a power level: the auth rules refuse such an event.
    let mut listed = power["content"].clone();
    listed["users"][&alice.user_id] = json!(100);
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"),
            alice.t(),
            &listed,
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // The additional creator joins and has unlimited power: any state, power levels too.
    for u in [&bob, &carol] {
        let (st, body) = s
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                alice.t(),
                &json!({"user_id": u.user_id}),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        s.join(u, &room).await;
    }
    let (st, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.tombstone"),
            bob.t(),
            &json!({"body": "moved", "replacement_room": "!elsewhere"}),
        )
        .await;
    assert_eq!(
        st, 200,
        "an additional creator may send a 150 event: {body}"
    );
    let mut promoted = power["content"].clone();
    promoted["users"][&carol.user_id] = json!(100);
    let (st, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"),
            bob.t(),
            &promoted,
        )
        .await;
    assert_eq!(st, 200, "{body}");

    // Carol at 100 still cannot touch a creator, nor send what needs 150.
    for target in [&alice, &bob] {
        assert_error(
            &s.post(
                &format!("/_matrix/client/v3/rooms/{room}/kick"),
                carol.t(),
                &json!({"user_id": target.user_id}),
            )
            .await,
            403,
            "M_FORBIDDEN",
        );
    }
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.tombstone"),
            carol.t(),
            &json!({"body": "moved", "replacement_room": "!elsewhere"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Creators cannot kick each other either: neither outranks the other.
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // A creator may kick anyone else.
    let (st, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            bob.t(),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(st, 200, "{body}");

    // Messages both ways and history back to the create event.
    for (i, u) in [&alice, &bob, &alice].iter().enumerate() {
        let (st, body) = send_text(&s, u, &room, &format!("t{i}"), &format!("m{i}")).await;
        assert_eq!(st, 200, "{body}");
    }
    let history = paginate(&s, &bob, &room, "b", 5, "").await;
    let bodies: Vec<&str> = history
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["m2", "m1", "m0"]);
    assert_eq!(history.last().unwrap()["type"], "m.room.create");
    assert_eq!(history.last().unwrap()["room_id"], room.as_str());

    // A creator can leave; the room goes on.
    let (st, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, body) = send_text(&s, &alice, &room, "after", "after bob left").await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_12_presets_and_bad_creators() {
    let s = TestServer::start().await;
    let alice = s.register("alice12p", "alice-password").await;
    let dan = s.register("dan12p", "dan-password").await;

    // A trusted private chat makes its invitees creators (not power level 100).
    let room = s
        .create_room(
            &alice,
            json!({"preset": "trusted_private_chat", "invite": [dan.user_id], "is_direct": true}),
        )
        .await;
    let create = state_event(&s, &alice, &room, "m.room.create").await;
    assert_eq!(create["content"]["room_version"], "12", "12 is the default");
    assert_eq!(
        create["content"]["additional_creators"],
        json!([dan.user_id])
    );
    let power = state_event(&s, &alice, &room, "m.room.power_levels").await;
    assert_eq!(power["content"]["users"], json!({}), "{power}");
    s.join(&dan, &room).await;
    let (st, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            dan.t(),
            &json!({"name": "ours"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");

    // Additional creators must be user IDs; nothing is created otherwise.
    for bad in [json!("@dan:x"), json!(["not a user"]), json!([1])] {
        assert_error(
            &s.post(
                "/_matrix/client/v3/createRoom",
                alice.t(),
                &json!({"room_version": "12", "creation_content": {"additional_creators": bad}}),
            )
            .await,
            400,
            "M_BAD_JSON",
        );
    }

    // Version 11 keeps the old ways: a server in the room ID, the creator at 100.
    let old = s
        .create_room(
            &alice,
            json!({"room_version": "11", "preset": "trusted_private_chat", "invite": [dan.user_id]}),
        )
        .await;
    assert!(old.ends_with(&format!(":{}", s.server_name())), "{old}");
    let power = state_event(&s, &alice, &old, "m.room.power_levels").await;
    assert_eq!(power["content"]["users"][&alice.user_id], 100);
    assert_eq!(power["content"]["users"][&dan.user_id], 100);
    assert_eq!(power["content"]["events"]["m.room.tombstone"], 100);
    let create = state_event(&s, &alice, &old, "m.room.create").await;
    assert!(create["content"]["additional_creators"].is_null());
}

/// Sends build on the tip the previous send left (remembered, not read back); a write
/// that moved the tip behind the server's back (as another process would) and a retried
/// transaction are both noticed by the store, and the send is rebuilt on what is stored.
#[tokio::test]
async fn a_send_on_a_moved_tip_is_rebuilt_and_a_retry_still_finds_its_event() {
    use sqlx::Connection;
    let s = TestServer::start().await;
    let a = s.register("lena", "lena-password").await;
    let room = s.create_room(&a, json!({"preset": "public_chat"})).await;
    let (status, first) = send_text(&s, &a, &room, "m1", "one").await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = send_text(&s, &a, &room, "m2", "two").await;
    assert_eq!(status, 200, "{second}");
    // The retry comes after the server remembered the tip m2 left.
    let (status, again) = send_text(&s, &a, &room, "m1", "one").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"], first["event_id"]);

    // Another writer replaces the tip: the create event becomes the only forward extremity.
    let mut db = sqlx::PgConnection::connect(s.config.database.url.as_deref().unwrap())
        .await
        .unwrap();
    let (create_id,): (String,) = sqlx::query_as(
        "WITH gone AS (DELETE FROM forward_extremities RETURNING room_nid),
              created AS (SELECT e.room_nid, e.event_nid, i.event_id FROM events e
                          JOIN event_ids i ON i.event_nid = e.event_nid
                          WHERE e.event_type = 'm.room.create'),
              tip AS (INSERT INTO forward_extremities (room_nid, event_nid)
                      SELECT room_nid, event_nid FROM created)
         SELECT event_id FROM created",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let (status, third) = send_text(&s, &a, &room, "m3", "three").await;
    assert_eq!(status, 200, "{third}");
    let (json,): (String,) = sqlx::query_as(
        "SELECT e.json FROM events e JOIN event_ids i ON i.event_nid = e.event_nid
         WHERE i.event_id = $1",
    )
    .bind(third["event_id"].as_str().unwrap())
    .fetch_one(&mut db)
    .await
    .unwrap();
    let pdu: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pdu["prev_events"], json!([create_id]), "{pdu}");
    let (tips,): (Vec<String>,) = sqlx::query_as(
        "SELECT array_agg(i.event_id) FROM forward_extremities f
         JOIN event_ids i ON i.event_nid = f.event_nid",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(tips, vec![third["event_id"].as_str().unwrap().to_owned()]);

    let all = paginate(&s, &a, &room, "f", 100, "").await;
    let mut bodies: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    // "three" stands on the create event now: each stored once, in the graph's order.
    bodies.sort_unstable();
    assert_eq!(bodies, vec!["one", "three", "two"]);
    s.shutdown().await;
}

/// Sends to many rooms at once are written together (one statement for several rooms); a
/// retried transaction among them fails only its own room's part, which is rebuilt, and
/// every room ends as one chain holding each message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_many_rooms_at_once_are_each_stored_once_in_order() {
    use sqlx::Connection;
    let s = TestServer::start().await;
    let a = s.register("mona", "mona-password").await;
    let mut rooms = Vec::new();
    for _ in 0..8 {
        rooms.push(s.create_room(&a, json!({"preset": "public_chat"})).await);
    }
    let sends = rooms.iter().enumerate().map(|(r, room)| {
        let (s, a) = (&s, &a);
        async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let (status, body) =
                    send_text(s, a, room, &format!("r{r}m{i}"), &format!("{r} {i}")).await;
                assert_eq!(status, 200, "{body}");
                ids.push(body["event_id"].clone());
                if i % 5 == 4 {
                    // A client retrying the send it just made.
                    let (status, again) =
                        send_text(s, a, room, &format!("r{r}m{i}"), &format!("{r} {i}")).await;
                    assert_eq!(status, 200, "{again}");
                    assert_eq!(again["event_id"], body["event_id"]);
                }
            }
            ids
        }
    });
    futures::future::join_all(sends).await;

    for (r, room) in rooms.iter().enumerate() {
        let all = paginate(&s, &a, room, "f", 7, "").await;
        let bodies: Vec<&str> = all
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        let expected: Vec<String> = (0..20).map(|i| format!("{r} {i}")).collect();
        assert_eq!(bodies, expected, "room {r}");
    }
    let mut db = sqlx::PgConnection::connect(s.config.database.url.as_deref().unwrap())
        .await
        .unwrap();
    let tips: Vec<(i64, i64)> =
        sqlx::query_as("SELECT room_nid, count(*) FROM forward_extremities GROUP BY room_nid")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(tips.len(), 8);
    assert!(tips.iter().all(|(_, n)| *n == 1), "{tips:?}");
    s.shutdown().await;
}

/// A new room's initial events are stored together, each on the state the one before it
/// made: a chain of state groups, one per event, each a delta of one entry on the last.
#[tokio::test]
async fn creation_events_stand_each_on_the_state_the_previous_one_made() {
    use sqlx::Connection;
    let s = TestServer::start().await;
    let a = s.register("nina", "nina-password").await;
    let b = s.register("omar", "omar-password").await;
    let room = s
        .create_room(
            &a,
            json!({"preset": "private_chat", "name": "N", "topic": "T",
                   "invite": [b.user_id.clone()]}),
        )
        .await;
    let mut db = sqlx::PgConnection::connect(s.config.database.url.as_deref().unwrap())
        .await
        .unwrap();
    /// Type, state before, state after, its previous group, its chain length.
    type Row = (String, Option<i64>, Option<i64>, Option<i64>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT e.event_type, e.state_before, e.state_after, g.prev_group, g.chain_len
             FROM events e JOIN rooms r ON r.room_nid = e.room_nid
             LEFT JOIN state_groups g ON g.state_group = e.state_after
             WHERE r.room_id = $1 ORDER BY e.depth",
    )
    .bind(&room)
    .fetch_all(&mut db)
    .await
    .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access",
            "m.room.name",
            "m.room.topic",
            "m.room.member"
        ]
    );
    assert_eq!(rows[0].1, None, "the create event stands on nothing");
    assert_eq!(rows[0].4, Some(0), "the first group is a snapshot");
    for (i, w) in rows.windows(2).enumerate() {
        let (before, after) = (&w[0], &w[1]);
        assert_eq!(
            after.1,
            before.2,
            "event {} stands on the one before",
            i + 1
        );
        assert_eq!(after.3, before.2, "its group is a delta on that state");
        assert_eq!(after.4, Some(i as i32 + 1));
    }
    let (current, members): (Option<i64>, i64) = sqlx::query_as(
        "SELECT r.state_group, (SELECT count(*) FROM room_members m WHERE m.room_nid = r.room_nid)
         FROM rooms r WHERE r.room_id = $1",
    )
    .bind(&room)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(current, rows.last().unwrap().2);
    assert_eq!(members, 2);
    let (_, name) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            a.t(),
        )
        .await;
    assert_eq!(name["name"], "N");
    s.shutdown().await;
}

/// How many events of the room `u` can page through.
async fn timeline_len(s: &TestServer, u: &User, room: &str) -> usize {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["chunk"].as_array().unwrap().len()
}

/// Every way of building an event refuses one over the spec's 65,536 bytes with
/// `413 M_TOO_LARGE`, before anything is stored, however the size is reached (plain text,
/// multibyte characters, characters canonical JSON escapes); events near the limit pass.
#[tokio::test]
async fn events_over_the_size_limit_are_refused_before_anything_is_stored() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let target = s.send_text(&alice, &room, "target").await;
    let big = "x".repeat(70_000);
    let multibyte = "é".repeat(33_000);
    let escaped = "\u{1}".repeat(11_000);
    let before = timeline_len(&s, &alice, &room).await;

    let too_large = |r: (u16, Value), what: &str| {
        assert_eq!(r.0, 413, "{what}: {}", r.1);
        assert_eq!(r.1["errcode"], "M_TOO_LARGE", "{what}: {}", r.1);
    };
    for (i, text) in [&big, &multibyte, &escaped].into_iter().enumerate() {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/big-{i}");
        let r = s
            .put(
                &path,
                alice.t(),
                &json!({"msgtype": "m.text", "body": text}),
            )
            .await;
        too_large(r, &format!("message {i}"));
    }
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            alice.t(),
            &json!({"topic": big}),
        )
        .await;
    too_large(r, "state event");
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{target}/r1"),
            alice.t(),
            &json!({"reason": big}),
        )
        .await;
    too_large(r, "redaction reason");
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            alice.t(),
            &json!({"user_id": bob.user_id, "reason": big}),
        )
        .await;
    too_large(r, "kick reason");
    let carol = s.register("carol", "carol-password").await;
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": carol.user_id, "reason": big}),
        )
        .await;
    too_large(r, "invite reason");
    assert_eq!(
        timeline_len(&s, &alice, &room).await,
        before,
        "nothing was stored"
    );

    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", alice.t()).await;
    for body in [
        json!({"name": big}),
        json!({"initial_state": [{"type": "m.room.topic", "state_key": "", "content": {"topic": big}}]}),
        json!({"creation_content": {"filler": big}}),
    ] {
        let r = s
            .post("/_matrix/client/v3/createRoom", alice.t(), &body)
            .await;
        too_large(r, "createRoom");
    }
    let (_, after) = s.get("/_matrix/client/v3/joined_rooms", alice.t()).await;
    assert_eq!(joined, after, "no room was created");

    // A profile whose member events could not be built is refused before it is stored.
    let long_url = format!("mxc://localhost/{}", "a".repeat(70_000));
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
            alice.t(),
            &json!({"avatar_url": long_url}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );
    let (_, profile) = s
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.user_id),
            alice.t(),
        )
        .await;
    assert!(profile["avatar_url"].is_null(), "{profile}");

    // Just under the limit is fine.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/near");
    let near = "y".repeat(64_000);
    let (status, body) = s
        .put(
            &path,
            alice.t(),
            &json!({"msgtype": "m.text", "body": near}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Identical createRoom requests at the same moment (40: some land in the same millisecond) make as many rooms: in room version 12
/// the room ID is the create event's hash, and two create events alike to the millisecond
/// would name one room (this answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_rooms_created_at_once_are_distinct_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let body = serde_json::json!({"room_version": "12"});
    let creates =
        (0..40).map(|_| s.post("/_matrix/client/v3/createRoom", Some(&alice.token), &body));
    let answers = futures::future::join_all(creates).await;
    let mut ids = std::collections::HashSet::new();
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        ids.insert(body["room_id"].as_str().expect("room_id").to_owned());
    }
    assert_eq!(ids.len(), 40, "{ids:?}");
    let (_, joined) = s
        .get("/_matrix/client/v3/joined_rooms", Some(&alice.token))
        .await;
    assert_eq!(
        joined["joined_rooms"].as_array().map(Vec::len),
        Some(40),
        "{joined}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_members_profiles_and_own_transaction_ids() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let profile = |u: &str, field: &str| {
        format!(
            "/_matrix/client/v3/profile/{}/{field}",
            common::server::enc(u)
        )
    };
    let (status, body) = s
        .put(
            &profile(&alice.user_id, "displayname"),
            alice.t(),
            &json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .put(
            &profile(&alice.user_id, "avatar_url"),
            alice.t(),
            &json!({"avatar_url": "mxc://trellis.test/alice"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;

    let path = format!(
        "/_matrix/client/v3/rooms/{}/joined_members",
        common::server::enc(&room)
    );
    let (status, body) = s.get(&path, bob.t()).await;
    assert_eq!(status, 200, "{body}");
    let joined = &body["joined"];
    assert_eq!(joined[&alice.user_id]["display_name"], "Alice A.", "{body}");
    assert_eq!(
        joined[&alice.user_id]["avatar_url"], "mxc://trellis.test/alice",
        "{body}"
    );
    assert_eq!(joined[&bob.user_id]["display_name"], "bob", "{body}");
    assert!(
        joined[&bob.user_id]
            .get("avatar_url")
            .is_none_or(Value::is_null),
        "{body}"
    );
    assert_eq!(joined.as_object().map(|j| j.len()), Some(2), "{body}");

    // The sender's own device sees its transaction id in /sync and /messages; nobody else
    // (not even another device of the sender) does.
    let (_, b) = s.login("alice", "alice-password").await;
    let laptop = common::server::User::from_response(&b);
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/my-txn-1",
        common::server::enc(&room)
    );
    let (status, body) = s
        .put(
            &send,
            alice.t(),
            &json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_owned();
    let txn_in_sync = |sync: &Value| {
        sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .and_then(|t| t.iter().find(|e| e["event_id"] == event_id.as_str()))
            .map(|e| e["unsigned"]["transaction_id"].clone())
    };
    let messages = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5",
        common::server::enc(&room)
    );
    let txn_in_messages = |page: &Value| {
        page["chunk"]
            .as_array()
            .and_then(|c| c.iter().find(|e| e["event_id"] == event_id.as_str()))
            .map(|e| e["unsigned"]["transaction_id"].clone())
    };
    let mine = s.sync(&alice, "").await;
    assert_eq!(txn_in_sync(&mine), Some(json!("my-txn-1")), "{mine}");
    let (_, page) = s.get(&messages, alice.t()).await;
    assert_eq!(txn_in_messages(&page), Some(json!("my-txn-1")), "{page}");
    for other in [&laptop, &bob] {
        let theirs = s.sync(other, "").await;
        assert_eq!(txn_in_sync(&theirs), Some(Value::Null), "{theirs}");
        let (_, page) = s.get(&messages, other.t()).await;
        assert_eq!(txn_in_messages(&page), Some(Value::Null), "{page}");
    }
}

//! Reading around a room's timeline through the client API: member lists (now and at a
//! token), joined members, event context with tokens that continue /messages,
//! timestamp_to_event, and the state a former member reads.

mod common;

use std::time::Duration;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

async fn leave(s: &TestServer, u: &User, room: &str) {
    let (status, res) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            u.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "leave: {res}");
}

/// The token a backward /messages page of one event hands out: the position just before
/// the room's newest event.
async fn token_before_newest(s: &TestServer, u: &User, room: &str) -> (String, Value) {
    let (status, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    (
        page["end"].as_str().unwrap().to_owned(),
        page["chunk"][0].clone(),
    )
}

/// Every event from `from` in direction `dir`, page by page.
async fn paginate_from(
    s: &TestServer,
    u: &User,
    room: &str,
    dir: &str,
    from: Option<&str>,
    extra: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = from.map(str::to_owned);
    for _ in 0..1000 {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir={dir}&limit=4{extra}");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, page) = s.get(&path, u.t()).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// (state_key, membership) of each member event in a /members answer.
async fn members(s: &TestServer, u: &User, room: &str, query: &str) -> Vec<(String, String)> {
    let (status, res) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members{query}"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "members{query}: {res}");
    let mut out: Vec<(String, String)> = res["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.room.member");
            assert_eq!(e["room_id"], room);
            assert!(e["event_id"].is_string() && e["sender"].is_string());
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&User, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(u, m)| (u.user_id.clone(), (*m).to_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_filters_at_tokens_and_errors() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let dave = s.register("dave", "dave-password").await;
    let eve = s.register("eve", "eve-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;

    s.join(&bob, &room).await;
    // Paging back over bob's join hands out the position just before it.
    let (before_bob, newest) = token_before_newest(&s, &alice, &room).await;
    assert_eq!(newest["state_key"], bob.user_id.as_str());
    s.send_text(&alice, &room, "welcome").await;
    let (after_bob, _) = token_before_newest(&s, &alice, &room).await;
    s.join(&carol, &room).await;
    leave(&s, &carol, &room).await;

    let all = members(&s, &alice, &room, "").await;
    assert_eq!(
        all,
        pairs(&[(&alice, "join"), (&bob, "join"), (&carol, "leave")])
    );
    let joined = pairs(&[(&alice, "join"), (&bob, "join")]);
    assert_eq!(members(&s, &alice, &room, "?membership=join").await, joined);
    assert_eq!(
        members(&s, &alice, &room, "?not_membership=leave").await,
        joined
    );
    assert_eq!(
        members(&s, &alice, &room, "?membership=leave").await,
        pairs(&[(&carol, "leave")])
    );
    assert_eq!(
        members(&s, &alice, &room, "?membership=join&not_membership=leave").await,
        joined
    );

    // As of a point before bob joined: only alice; after it (before carol): alice and bob.
    assert_eq!(
        members(&s, &alice, &room, &format!("?at={before_bob}")).await,
        pairs(&[(&alice, "join")])
    );
    assert_eq!(
        members(&s, &alice, &room, &format!("?at={after_bob}")).await,
        joined
    );
    assert_eq!(
        members(
            &s,
            &alice,
            &room,
            &format!("?at={after_bob}&not_membership=join")
        )
        .await,
        vec![]
    );

    // Carol, gone, sees the list as it was when she left, not dave's later join.
    s.join(&dave, &room).await;
    assert_eq!(
        members(&s, &carol, &room, "").await,
        pairs(&[(&alice, "join"), (&bob, "join"), (&carol, "leave")])
    );
    assert!(
        members(&s, &alice, &room, "")
            .await
            .contains(&(dave.user_id.clone(), "join".to_owned()))
    );

    let path = format!("/_matrix/client/v3/rooms/{room}/members");
    assert_error(
        &s.get(&format!("{path}?at=garbage"), alice.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&s.get(&path, eve.t()).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.get(
            "/_matrix/client/v3/rooms/!nowhere:trellis.test/members",
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_members_with_profiles() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let eve = s.register("eve", "eve-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let (status, res) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                alice.user_id
            ),
            alice.t(),
            &json!({"membership": "join", "displayname": "Alice", "avatar_url": "mxc://trellis.test/alice"}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;
    leave(&s, &carol, &room).await;

    let (status, res) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let joined = res["joined"].as_object().unwrap();
    let mut users: Vec<&String> = joined.keys().collect();
    users.sort();
    assert_eq!(users, vec![&alice.user_id, &bob.user_id]);
    assert_eq!(
        joined[&alice.user_id],
        json!({"display_name": "Alice", "avatar_url": "mxc://trellis.test/alice"})
    );
    assert!(joined[&bob.user_id].get("avatar_url").is_none());

    let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    assert_error(&s.get(&path, eve.t()).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.get(
            "/_matrix/client/v3/rooms/!nowhere:trellis.test/joined_members",
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_splits_like_synapse_and_tokens_continue_messages() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s.create_room(&alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(s.send_text(&alice, &room, &format!("msg{i}")).await);
    }
    let target = &sent[9];
    let ctx_path = |q: &str| format!("/_matrix/client/v3/rooms/{room}/context/{target}{q}");

    let (status, ctx) = s.get(&ctx_path("?limit=6"), alice.t()).await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], target.as_str());
    assert_eq!(ctx["event"]["content"]["body"], "msg9");
    let before = ctx["events_before"].as_array().unwrap().clone();
    let after = ctx["events_after"].as_array().unwrap().clone();
    // limit / 2 before (newest first), the rest after (oldest first).
    assert_eq!(bodies(&before), ["msg8", "msg7", "msg6"]);
    assert_eq!(bodies(&after), ["msg10", "msg11", "msg12"]);
    // The state at the last event returned: the whole room state.
    let state_types: Vec<&str> = ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in ["m.room.create", "m.room.member", "m.room.power_levels"] {
        assert!(state_types.contains(&t), "{t} in {state_types:?}");
    }

    // The tokens continue /messages in both directions with no gap and no duplicate.
    let start = ctx["start"].as_str().unwrap();
    let end = ctx["end"].as_str().unwrap();
    let messages_only = format!("&filter={}", enc(r#"{"types":["m.room.message"]}"#));
    let older = paginate_from(&s, &alice, &room, "b", Some(start), &messages_only).await;
    let newer = paginate_from(&s, &alice, &room, "f", Some(end), &messages_only).await;
    let mut seen: Vec<String> = ids(&older).into_iter().rev().collect();
    seen.extend(ids(&before).into_iter().rev());
    seen.push(target.clone());
    seen.extend(ids(&after));
    seen.extend(ids(&newer));
    assert_eq!(seen, sent);

    // Unfiltered, the same tokens reach exactly every other event of the room.
    let older = paginate_from(&s, &alice, &room, "b", Some(start), "").await;
    let newer = paginate_from(&s, &alice, &room, "f", Some(end), "").await;
    let everything = paginate_from(&s, &alice, &room, "f", None, "").await;
    let mut seen: Vec<String> = ids(&older).into_iter().rev().collect();
    seen.extend(ids(&before).into_iter().rev());
    seen.push(target.clone());
    seen.extend(ids(&after));
    seen.extend(ids(&newer));
    assert_eq!(seen, ids(&everything));
    assert_eq!(older.last().unwrap()["type"], "m.room.create");

    // An odd limit puts the extra event after; limit 0 returns the event alone, with tokens
    // right around it.
    let (_, ctx) = s.get(&ctx_path("?limit=5"), alice.t()).await;
    assert_eq!(
        bodies(ctx["events_before"].as_array().unwrap()),
        ["msg8", "msg7"]
    );
    assert_eq!(
        bodies(ctx["events_after"].as_array().unwrap()),
        ["msg10", "msg11", "msg12"]
    );
    let (status, ctx) = s.get(&ctx_path("?limit=0"), alice.t()).await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], target.as_str());
    assert!(ctx.get("events_before").is_none() && ctx.get("events_after").is_none());
    let (_, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={}",
                ctx["start"].as_str().unwrap()
            ),
            alice.t(),
        )
        .await;
    assert_eq!(bodies(page["chunk"].as_array().unwrap()), ["msg8"]);
    let (_, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1&from={}",
                ctx["end"].as_str().unwrap()
            ),
            alice.t(),
        )
        .await;
    assert_eq!(bodies(page["chunk"].as_array().unwrap()), ["msg10"]);

    // At the newest event, `end` still continues to events sent afterwards.
    let newest = sent.last().unwrap();
    let (_, ctx) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{newest}?limit=4"),
            alice.t(),
        )
        .await;
    assert_eq!(
        bodies(ctx["events_before"].as_array().unwrap()),
        ["msg18", "msg17"]
    );
    assert!(ctx.get("events_after").is_none());
    let later = s.send_text(&alice, &room, "later").await;
    let newer = paginate_from(
        &s,
        &alice,
        &room,
        "f",
        Some(ctx["end"].as_str().unwrap()),
        "",
    )
    .await;
    assert_eq!(ids(&newer), [later]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_lazy_loads_senders_and_errors() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let dave = s.register("dave", "dave-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;
    s.send_text(&carol, &room, "c0").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(s.send_text(&alice, &room, &format!("a{i}")).await);
        sent.push(s.send_text(&bob, &room, &format!("b{i}")).await);
    }
    let b1 = &sent[3];

    let lazy = enc(r#"{"lazy_load_members":true}"#);
    let (status, ctx) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{b1}?limit=2&filter={lazy}"),
            carol.t(),
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(bodies(ctx["events_before"].as_array().unwrap()), ["a1"]);
    assert_eq!(bodies(ctx["events_after"].as_array().unwrap()), ["a2"]);
    let mut state: Vec<(String, String)> = ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["state_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    state.sort();
    let mut expected = vec![
        ("m.room.member".to_owned(), alice.user_id.clone()),
        ("m.room.member".to_owned(), bob.user_id.clone()),
    ];
    expected.sort();
    assert_eq!(state, expected);

    // The event filter applies around the event (not to it); lazy state follows what is
    // returned.
    let only_bob = enc(&format!(
        r#"{{"lazy_load_members":true,"senders":["{}"],"types":["m.room.message"]}}"#,
        bob.user_id
    ));
    let a1 = &sent[2];
    let (status, ctx) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{a1}?limit=4&filter={only_bob}"),
            carol.t(),
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["content"]["body"], "a1");
    assert_eq!(bodies(ctx["events_before"].as_array().unwrap()), ["b0"]);
    assert_eq!(
        bodies(ctx["events_after"].as_array().unwrap()),
        ["b1", "b2"]
    );
    assert_eq!(ctx["state"].as_array().unwrap().len(), 2);

    // Without lazy loading every member is in the state.
    let (_, ctx) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{b1}?limit=2"),
            carol.t(),
        )
        .await;
    let member_count = ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .count();
    assert_eq!(member_count, 3);

    let other = s.create_room(&alice, json!({})).await;
    let elsewhere = s.send_text(&alice, &other, "elsewhere").await;
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{elsewhere}"),
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/context/$nothing:trellis.test"),
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{b1}"),
            dave.t(),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/!nowhere:trellis.test/context/{b1}"),
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_to_event_nearest_both_ways() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let eve = s.register("eve", "eve-password").await;
    let room = s.create_room(&alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let id = s.send_text(&alice, &room, &format!("m{i}")).await;
        let (status, ev) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
                alice.t(),
            )
            .await;
        assert_eq!(status, 200, "{ev}");
        sent.push((id, ev["origin_server_ts"].as_i64().unwrap()));
    }
    let (_, first) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1"),
            alice.t(),
        )
        .await;
    let create_ts = first["chunk"][0]["origin_server_ts"].as_i64().unwrap();
    let [(m0, t0), (m1, t1), (m2, t2)] = <[(String, i64); 3]>::try_from(sent).unwrap();
    assert!(create_ts < t0 && t0 < t1 && t1 < t2);

    let path = format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event");
    let find = |ts: i64, dir: &'static str| {
        let path = &path;
        let s = &s;
        let alice = &alice;
        async move { s.get(&format!("{path}?ts={ts}&dir={dir}"), alice.t()).await }
    };
    for (ts, dir, want, want_ts) in [
        (t1, "f", &m1, t1),
        (t1, "b", &m1, t1),
        (t1 + 1, "f", &m2, t2),
        (t1 - 1, "b", &m0, t0),
        (t0 - 1, "f", &m0, t0),
        (t2 + 100_000, "b", &m2, t2),
    ] {
        let (status, res) = find(ts, dir).await;
        assert_eq!(status, 200, "ts={ts} dir={dir}: {res}");
        assert_eq!(res["event_id"], want.as_str(), "ts={ts} dir={dir}");
        assert_eq!(res["origin_server_ts"], want_ts, "ts={ts} dir={dir}");
    }
    assert_error(&find(t2 + 1, "f").await, 404, "M_NOT_FOUND");
    assert_error(&find(create_ts - 1, "b").await, 404, "M_NOT_FOUND");

    assert_error(
        &s.get(&format!("{path}?ts={t1}&dir=sideways"), alice.t())
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("{path}?ts=yesterday&dir=f"), alice.t())
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_eq!(s.get(&format!("{path}?dir=f"), alice.t()).await.0, 400);
    assert_error(
        &s.get(&format!("{path}?ts={t1}&dir=f"), eve.t()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get(
            &format!(
                "/_matrix/client/v1/rooms/!nowhere:trellis.test/timestamp_to_event?ts={t1}&dir=f"
            ),
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

/// `m.room.name` and the whole state as `u` reads them: (status, name or error body).
async fn state_name(s: &TestServer, u: &User, room: &str) -> (u16, Value) {
    s.get(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        u.t(),
    )
    .await
}

/// The content of `event_type`/`state_key` in a `/state` answer.
fn in_state<'a>(state: &'a Value, event_type: &str, state_key: &str) -> Option<&'a Value> {
    state
        .as_array()
        .expect("state events")
        .iter()
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
        .map(|e| &e["content"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_members_read_the_state_as_it_was_when_they_left() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let dave = s.register("dave", "dave-password").await;
    let eve = s.register("eve", "eve-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "before"}))
        .await;
    for u in [&bob, &carol, &dave] {
        s.join(u, &room).await;
    }
    let rename = |name: &'static str| {
        let (s, alice, room) = (&s, &alice, &room);
        async move {
            let (status, body) = s
                .put(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                    alice.t(),
                    &json!({"name": name}),
                )
                .await;
            assert_eq!(status, 200, "rename: {body}");
        }
    };

    // Bob leaves, carol is kicked and dave banned, each at a different name.
    leave(&s, &bob, &room).await;
    rename("after bob").await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            alice.t(),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, 200, "kick: {body}");
    rename("after carol").await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            alice.t(),
            &json!({"user_id": dave.user_id}),
        )
        .await;
    assert_eq!(status, 200, "ban: {body}");
    rename("now").await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            alice.t(),
            &json!({"topic": "set later"}),
        )
        .await;
    assert_eq!(status, 200, "topic: {body}");

    for (u, name, membership) in [
        (&alice, "now", "join"),
        (&bob, "before", "leave"),
        (&carol, "after bob", "leave"),
        (&dave, "after carol", "ban"),
    ] {
        let (status, body) = state_name(&s, u, &room).await;
        assert_eq!(
            (status, &body["name"]),
            (200, &json!(name)),
            "{}",
            u.user_id
        );
        let (status, state) = s
            .get(&format!("/_matrix/client/v3/rooms/{room}/state"), u.t())
            .await;
        assert_eq!(status, 200, "{state}");
        assert_eq!(in_state(&state, "m.room.name", "").unwrap()["name"], name);
        assert_eq!(
            in_state(&state, "m.room.member", &u.user_id).unwrap()["membership"],
            membership
        );
        if membership != "join" {
            // Nothing from after they left: the topic came later.
            assert!(in_state(&state, "m.room.topic", "").is_none(), "{state}");
            assert_error(
                &s.get(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
                    u.t(),
                )
                .await,
                404,
                "M_NOT_FOUND",
            );
        }
    }

    // Never a member: refused. A forgotten room is as if never joined.
    assert_error(&state_name(&s, &eve, &room).await, 403, "M_FORBIDDEN");
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "forget: {body}");
    assert_error(&state_name(&s, &bob, &room).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), bob.t())
            .await,
        403,
        "M_FORBIDDEN",
    );

    // Back in the room, the current state again.
    s.join(&bob, &room).await;
    assert_eq!(state_name(&s, &bob, &room).await.1["name"], "now");
    s.shutdown().await;
}

//! Simplified sliding sync (MSC4186) over HTTP: lists, ranges and recency, required_state,
//! timelines and pagination from prev_batch, invites, resumption with `pos` (also after a
//! restart), leave/kick/ban ending a room's stream, long-polls, the extensions, bad input.

mod common;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn post(
    s: &TestServer,
    u: &User,
    pos: Option<&str>,
    timeout_ms: u64,
    body: &Value,
) -> (u16, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(p) = pos {
        path.push_str(&format!("&pos={}", enc(p)));
    }
    s.post(&path, u.t(), body).await
}

/// A sliding sync that must succeed, answering at once unless it waits for news.
async fn ss(s: &TestServer, u: &User, pos: Option<&str>, body: &Value) -> Value {
    let (status, res) = post(s, u, pos, 0, body).await;
    assert_eq!(status, 200, "sliding sync: {res}");
    res
}

fn pos(res: &Value) -> String {
    res["pos"].as_str().expect("pos").to_owned()
}

/// One list `all` over the first `n` rooms.
fn list(n: u64, timeline_limit: u64, required_state: Value) -> Value {
    json!({"conn_id": "main", "lists": {"all": {
        "ranges": [[0, n - 1]], "timeline_limit": timeline_limit, "required_state": required_state
    }}})
}

/// The rooms of the response ordered by bump stamp, newest first.
fn by_recency(res: &Value) -> Vec<String> {
    let mut rooms: Vec<(i64, String)> = res["rooms"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, r)| (r["bump_stamp"].as_i64().unwrap_or(-1), id.clone()))
                .collect()
        })
        .unwrap_or_default();
    rooms.sort_by(|a, b| b.cmp(a));
    rooms.into_iter().map(|(_, id)| id).collect()
}

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn types_and_keys(events: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or("").to_owned(),
                        e["state_key"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn named_room(s: &TestServer, u: &User, name: &str) -> String {
    s.create_room(u, json!({"name": name, "preset": "public_chat"}))
        .await
}

#[tokio::test]
async fn lists_sort_by_recency_and_move_when_a_message_arrives() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let a = named_room(&s, &alice, "A").await;
    let b = named_room(&s, &alice, "B").await;
    let c = named_room(&s, &alice, "C").await;

    let body = list(2, 1, json!([["m.room.name", ""]]));
    let res = ss(&s, &alice, None, &body).await;
    assert_eq!(res["lists"]["all"]["count"], 3, "{res}");
    assert_eq!(by_recency(&res), vec![c.clone(), b.clone()], "{res}");
    let room = &res["rooms"][&c];
    assert_eq!(room["initial"], true);
    assert_eq!(room["name"], "C");
    assert_eq!(room["joined_count"], 1);
    assert_eq!(room["notification_count"], 0);
    assert_eq!(
        types_and_keys(&room["required_state"]),
        vec![("m.room.name".to_owned(), String::new())]
    );
    assert_eq!(room["timeline"].as_array().map(Vec::len), Some(1));

    // A message in the oldest room brings it to the top: it is new to the connection.
    s.send_text(&alice, &a, "hello-a").await;
    let res = ss(&s, &alice, Some(&pos(&res)), &body).await;
    assert_eq!(res["lists"]["all"]["count"], 3);
    let room = &res["rooms"][&a];
    assert_eq!(room["initial"], true, "{res}");
    assert_eq!(bodies(&room["timeline"]), vec!["hello-a"]);
    assert!(
        room["bump_stamp"].as_i64() > res["rooms"][&c]["bump_stamp"].as_i64().or(Some(0)),
        "{res}"
    );
    // C was sent already and has nothing new; B fell out of the range.
    assert!(
        res["rooms"].get(&c).is_none() && res["rooms"].get(&b).is_none(),
        "{res}"
    );

    // A state change does not bump: C stays below A.
    let (st, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{c}/state/m.room.topic/"),
            alice.t(),
            &json!({"topic": "t"}),
        )
        .await;
    assert_eq!(st, 200);
    let fresh = ss(&s, &alice, None, &list(3, 0, json!([]))).await;
    assert_eq!(by_recency(&fresh), vec![a, c, b], "{fresh}");
}

#[tokio::test]
async fn required_state_special_values() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let carol = s.register("carol", "pw-carol-1").await;
    let room = named_room(&s, &alice, "Talk").await;
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;
    s.send_text(&bob, &room, "from-bob").await;

    let member = |u: &User| ("m.room.member".to_owned(), u.user_id.clone());
    let res = ss(
        &s,
        &alice,
        None,
        &list(
            1,
            1,
            json!([
                ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"],
                ["m.room.create", ""]
            ]),
        ),
    )
    .await;
    let got = types_and_keys(&res["rooms"][&room]["required_state"]);
    let mut want = vec![
        ("m.room.create".to_owned(), String::new()),
        member(&alice),
        member(&bob),
    ];
    want.sort();
    assert_eq!(got, want, "only the timeline's sender and me: {res}");

    let res = ss(&s, &alice, None, &list(1, 1, json!([["*", "*"]]))).await;
    let all = types_and_keys(&res["rooms"][&room]["required_state"]);
    for k in [
        member(&carol),
        ("m.room.join_rules".to_owned(), String::new()),
    ] {
        assert!(all.contains(&k), "{k:?} in {all:?}");
    }

    let res = ss(
        &s,
        &alice,
        None,
        &list(1, 1, json!([["*", "*"], ["m.room.member", "$LAZY"]])),
    )
    .await;
    let lazy = types_and_keys(&res["rooms"][&room]["required_state"]);
    assert!(
        lazy.contains(&member(&bob)) && !lazy.contains(&member(&carol)),
        "{lazy:?}"
    );
    assert!(lazy.contains(&("m.room.name".to_owned(), String::new())));

    // Incrementally, a new sender's member event comes with their message, and only theirs.
    let lazy_body = list(
        1,
        1,
        json!([["m.room.member", "$LAZY"], ["m.room.member", "$ME"]]),
    );
    let first = ss(&s, &alice, None, &lazy_body).await;
    s.send_text(&carol, &room, "from-carol").await;
    let next = ss(&s, &alice, Some(&pos(&first)), &lazy_body).await;
    assert_eq!(
        types_and_keys(&next["rooms"][&room]["required_state"]),
        vec![member(&carol)],
        "{next}"
    );

    // Heroes name an unnamed room.
    let dm = s
        .create_room(&alice, json!({"invite": [bob.user_id]}))
        .await;
    s.join(&bob, &dm).await;
    let res = ss(&s, &alice, None, &list(1, 0, json!([]))).await;
    let r = &res["rooms"][&dm];
    assert_eq!(r["name"], "bob", "{res}");
    assert_eq!(r["heroes"][0]["user_id"], bob.user_id.as_str());
}

#[tokio::test]
async fn limited_timeline_continues_through_messages_from_prev_batch() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let room = named_room(&s, &alice, "Long").await;
    for i in 0..10 {
        s.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let res = ss(&s, &alice, None, &list(1, 3, json!([]))).await;
    let r = &res["rooms"][&room];
    assert_eq!(bodies(&r["timeline"]), vec!["m7", "m8", "m9"], "{res}");
    assert_eq!(r["limited"], true);
    assert_eq!(r["num_live"], 0);
    let from = r["prev_batch"].as_str().expect("prev_batch");
    let (st, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100&from={}",
                enc(from)
            ),
            alice.t(),
        )
        .await;
    assert_eq!(st, 200, "{page}");
    let mut older = bodies(&page["chunk"]);
    older.reverse();
    assert_eq!(older, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let last = page["chunk"]
        .as_array()
        .and_then(|c| c.last())
        .expect("events");
    assert_eq!(last["type"], "m.room.create", "paged back to the creation");

    // Incremental: only the new event, live.
    s.send_text(&alice, &room, "m10").await;
    let res = ss(&s, &alice, Some(&pos(&res)), &list(1, 3, json!([]))).await;
    let r = &res["rooms"][&room];
    assert_eq!(bodies(&r["timeline"]), vec!["m10"], "{res}");
    assert!(
        r.get("initial").is_none() && r.get("limited").is_none(),
        "{r}"
    );
    assert_eq!(r["num_live"], 1);
}

#[tokio::test]
async fn invites_come_with_stripped_state_then_the_room_once_joined() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let room = named_room(&s, &bob, "Party").await;
    let (st, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            bob.t(),
            &json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(st, 200);
    let body = json!({"conn_id": "c", "lists": {
        "invites": {"ranges": [[0, 9]], "timeline_limit": 5, "filters": {"is_invite": true}},
        "joined": {"ranges": [[0, 9]], "timeline_limit": 5, "filters": {"is_invite": false}}
    }});
    let res = ss(&s, &alice, None, &body).await;
    assert_eq!(res["lists"]["invites"]["count"], 1, "{res}");
    assert_eq!(res["lists"]["joined"]["count"], 0);
    let r = &res["rooms"][&room];
    assert_eq!(r["initial"], true);
    assert_eq!(r["name"], "Party");
    let stripped = types_and_keys(&r["invite_state"]);
    assert!(
        stripped.contains(&("m.room.member".to_owned(), alice.user_id.clone())),
        "{r}"
    );
    assert!(
        stripped.contains(&("m.room.name".to_owned(), String::new())),
        "{r}"
    );
    assert!(
        r.get("timeline").is_none(),
        "no timeline for an invite: {r}"
    );

    s.join(&alice, &room).await;
    let res = ss(&s, &alice, Some(&pos(&res)), &body).await;
    assert_eq!(res["lists"]["invites"]["count"], 0, "{res}");
    assert_eq!(res["lists"]["joined"]["count"], 1);
    let r = &res["rooms"][&room];
    assert_eq!(r["initial"], true, "joined: sent whole: {r}");
    assert!(r.get("invite_state").is_none());
    let last = r["timeline"]
        .as_array()
        .and_then(|t| t.last())
        .expect("timeline");
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["content"]["membership"], "join");
}

#[tokio::test]
async fn same_pos_resumes_without_loss_also_after_a_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let room = named_room(&s, &alice, "R").await;
    let body = list(5, 5, json!([]));
    let first = ss(&s, &alice, None, &body).await;
    let p1 = pos(&first);

    s.send_text(&alice, &room, "one").await;
    let second = ss(&s, &alice, Some(&p1), &body).await;
    assert_eq!(bodies(&second["rooms"][&room]["timeline"]), vec!["one"]);
    // The answer was lost: the same request again gets the same news.
    let again = ss(&s, &alice, Some(&p1), &body).await;
    assert_eq!(
        bodies(&again["rooms"][&room]["timeline"]),
        vec!["one"],
        "{again}"
    );
    let p3 = pos(&again);

    s.restart().await;
    // Nothing new: nothing resent, the same position.
    let quiet = ss(&s, &alice, Some(&p3), &body).await;
    assert!(
        quiet["rooms"].as_object().is_none_or(|r| r.is_empty()),
        "{quiet}"
    );
    assert_eq!(quiet["pos"], p3.as_str());
    s.send_text(&alice, &room, "two").await;
    let after = ss(&s, &alice, Some(&p3), &body).await;
    let r = &after["rooms"][&room];
    assert_eq!(bodies(&r["timeline"]), vec!["two"], "{after}");
    assert!(r.get("initial").is_none(), "not resent whole: {r}");
}

#[tokio::test]
async fn unknown_or_foreign_pos_answers_unknown_pos() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let body = list(1, 1, json!([]));
    for bad in ["999999", "abc", "-1", ""] {
        let r = post(&s, &alice, Some(bad), 0, &body).await;
        assert_error(&r, 400, "M_UNKNOWN_POS");
    }
    let res = ss(&s, &alice, None, &body).await;
    let p = pos(&res);
    // Another user, another conn_id: not theirs.
    assert_error(
        &post(&s, &bob, Some(&p), 0, &body).await,
        400,
        "M_UNKNOWN_POS",
    );
    let other = json!({"conn_id": "other", "lists": body["lists"].clone()});
    assert_error(
        &post(&s, &alice, Some(&p), 0, &other).await,
        400,
        "M_UNKNOWN_POS",
    );
    // Starting the connection again forgets its positions.
    ss(&s, &alice, None, &body).await;
    assert_error(
        &post(&s, &alice, Some(&p), 0, &body).await,
        400,
        "M_UNKNOWN_POS",
    );
}

#[tokio::test]
async fn leave_kick_and_ban_end_the_rooms_stream() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    for how in ["leave", "kick", "ban"] {
        let room = named_room(&s, &bob, how).await;
        s.join(&alice, &room).await;
        let body = json!({"conn_id": how, "lists": {"all": {"ranges": [[0, 20]], "timeline_limit": 10}},
                          "room_subscriptions": {room.clone(): {"timeline_limit": 10, "required_state": [["*", "*"]]}}});
        let res = ss(&s, &alice, None, &body).await;
        assert_eq!(res["rooms"][&room]["initial"], true);
        let (st, r) = match how {
            "leave" => {
                s.post(
                    &format!("/_matrix/client/v3/rooms/{room}/leave"),
                    alice.t(),
                    &json!({}),
                )
                .await
            }
            _ => {
                s.post(
                    &format!("/_matrix/client/v3/rooms/{room}/{how}"),
                    bob.t(),
                    &json!({"user_id": alice.user_id}),
                )
                .await
            }
        };
        assert_eq!(st, 200, "{how}: {r}");
        s.send_text(&bob, &room, &format!("after-{how}")).await;
        let (st, _) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
                bob.t(),
                &json!({"topic": "secret"}),
            )
            .await;
        assert_eq!(st, 200);

        let res = ss(&s, &alice, Some(&pos(&res)), &body).await;
        let r = &res["rooms"][&room];
        let timeline = r["timeline"]
            .as_array()
            .unwrap_or_else(|| panic!("{how}: the leave is sent: {res}"));
        let last = timeline.last().expect("an event");
        assert_eq!(last["type"], "m.room.member", "{how}: {r}");
        assert_eq!(last["state_key"], alice.user_id.as_str());
        assert!(
            bodies(&r["timeline"]).is_empty(),
            "{how}: nothing after: {r}"
        );
        assert!(!r.to_string().contains("secret"), "{how}: {r}");

        // From then on, nothing of the room, whatever the request says.
        s.send_text(&bob, &room, &format!("later-{how}")).await;
        let res = ss(&s, &alice, Some(&pos(&res)), &body).await;
        assert!(res["rooms"].get(&room).is_none(), "{how}: {res}");
        assert!(!res.to_string().contains("later-"), "{how}: {res}");
        // A new connection does not list it either.
        let fresh = ss(&s, &alice, None, &body).await;
        assert!(
            !fresh.to_string().contains("later-") && !fresh.to_string().contains("secret"),
            "{how}: {fresh}"
        );
    }
}

#[tokio::test]
async fn long_poll_is_woken_by_a_message_and_times_out_empty() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let room = named_room(&s, &alice, "Poll").await;
    s.join(&bob, &room).await;
    let body = list(5, 5, json!([]));
    let res = ss(&s, &alice, None, &body).await;
    let p = pos(&res);

    // Nothing happens: the poll answers at its timeout, with the same position.
    let (st, quiet) = post(&s, &alice, Some(&p), 300, &body).await;
    assert_eq!(st, 200);
    assert_eq!(quiet["pos"], p.as_str());
    assert!(
        quiet["rooms"].as_object().is_none_or(|r| r.is_empty()),
        "{quiet}"
    );

    // Whether the message lands before or during the wait, the poll answers with it.
    let (polled, ()) = tokio::join!(post(&s, &alice, Some(&p), 30_000, &body), async {
        s.send_text(&bob, &room, "wake-up").await;
    });
    assert_eq!(polled.0, 200);
    assert_eq!(
        bodies(&polled.1["rooms"][&room]["timeline"]),
        vec!["wake-up"],
        "{}",
        polled.1
    );
}

/// A request woken by news reads again only the rooms the news names (everything after
/// account data or membership news), and a room's summary only when its state changed: each
/// kind of news still reaches the connection whole.
#[tokio::test]
async fn a_woken_request_sees_each_kind_of_news() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let a = named_room(&s, &alice, "A").await;
    let b = named_room(&s, &alice, "B").await;
    let c = named_room(&s, &alice, "C").await;
    for room in [&a, &b, &c] {
        s.join(&bob, room).await;
    }
    let mut body = list(3, 1, json!([["m.room.name", ""]]));
    body["extensions"] = json!({"account_data": {"enabled": true}});
    let res = ss(&s, &alice, None, &body).await;
    assert_eq!(
        by_recency(&res),
        vec![c.clone(), b.clone(), a.clone()],
        "{res}"
    );
    let mut p = pos(&res);

    // Each change lands while the request waits, so that it wakes the request.
    async fn poll_while(
        s: &TestServer,
        u: &User,
        p: &str,
        body: &Value,
        act: impl std::future::Future<Output = ()>,
    ) -> Value {
        let (polled, ()) = tokio::join!(post(s, u, Some(p), 30_000, body), async {
            s.until_syncs_wait(1).await;
            act.await;
        });
        assert_eq!(polled.0, 200, "{}", polled.1);
        polled.1
    }

    // A message from Bob in the oldest room: it moves up, with its timeline.
    let res = poll_while(&s, &alice, &p, &body, async {
        s.send_text(&bob, &a, "to-a").await;
    })
    .await;
    assert_eq!(bodies(&res["rooms"][&a]["timeline"]), vec!["to-a"], "{res}");
    // Its state did not change: its name, heroes and member counts are not sent again
    // (they are sticky), its unread count is.
    let sent = &res["rooms"][&a];
    for sticky in ["name", "avatar", "heroes", "joined_count", "invited_count"] {
        assert!(sent.get(sticky).is_none(), "{sticky} sent again: {res}");
    }
    assert_eq!(sent["notification_count"], 1, "{res}");
    let mut other = list(3, 0, json!([]));
    other["conn_id"] = json!("other");
    let fresh = ss(&s, &alice, None, &other).await;
    assert_eq!(by_recency(&fresh), vec![a.clone(), c.clone(), b.clone()]);
    assert!(
        res["rooms"][&a]["bump_stamp"].as_i64() > fresh["rooms"][&c]["bump_stamp"].as_i64(),
        "{res} {fresh}"
    );
    p = pos(&res);

    // A new name in B: its name and required state follow the room's new state.
    let res = poll_while(&s, &alice, &p, &body, async {
        s.put_state(&alice, &b, "m.room.name", "", &json!({"name": "B2"}))
            .await;
    })
    .await;
    assert_eq!(res["rooms"][&b]["name"], "B2", "{res}");
    assert_eq!(res["rooms"][&b]["joined_count"], 2, "{res}");
    assert_eq!(
        res["rooms"][&b]["required_state"][0]["content"]["name"], "B2",
        "{res}"
    );
    p = pos(&res);

    // C becomes a direct chat: only account data says so.
    let res = poll_while(&s, &alice, &p, &body, async {
        s.put_account_data(
            &alice,
            "m.direct",
            &json!({bob.user_id.clone(): [c.clone()]}),
        )
        .await;
    })
    .await;
    assert_eq!(res["rooms"][&c]["is_dm"], true, "{res}");
    p = pos(&res);

    // An invite to a new room: the user's own membership changed, so all is read again.
    let d = named_room(&s, &bob, "D").await;
    let res = poll_while(&s, &alice, &p, &body, async {
        s.invite(&bob, &d, &alice.user_id).await;
    })
    .await;
    assert!(res["rooms"][&d]["invite_state"].is_array(), "{res}");
    assert_eq!(res["lists"]["all"]["count"], 4, "{res}");
}

/// Ignoring a user hides their messages (not their state events) from timelines and their
/// invites from the lists, as in `/v3/sync`.
#[tokio::test]
async fn ignored_users_messages_and_invites_are_left_out() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let carol = s.register("carol", "pw-carol-1").await;
    let room = named_room(&s, &alice, "Shared").await;
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;
    s.put_account_data(
        &alice,
        "m.ignored_user_list",
        &json!({"ignored_users": {bob.user_id.clone(): {}}}),
    )
    .await;
    s.send_text(&bob, &room, "from-bob").await;
    s.put_state(
        &bob,
        &room,
        "m.room.member",
        &bob.user_id,
        &json!({"membership": "join", "displayname": "Bobby"}),
    )
    .await;
    s.send_text(&carol, &room, "from-carol").await;
    let invited = named_room(&s, &bob, "From Bob").await;
    s.invite(&bob, &invited, &alice.user_id).await;

    let body = list(5, 10, json!([]));
    let res = ss(&s, &alice, None, &body).await;
    let timeline = &res["rooms"][&room]["timeline"];
    let texts = bodies(timeline);
    assert!(texts.contains(&"from-carol".to_owned()), "{res}");
    assert!(!texts.contains(&"from-bob".to_owned()), "{res}");
    assert!(
        timeline
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e["content"]["displayname"] == "Bobby")),
        "a state event of an ignored user is kept: {res}"
    );
    assert!(res["rooms"].get(&invited).is_none(), "{res}");
    assert_eq!(res["lists"]["all"]["count"], 1, "{res}");

    // No longer ignored: the invite shows.
    s.put_account_data(&alice, "m.ignored_user_list", &json!({"ignored_users": {}}))
        .await;
    let res = ss(&s, &alice, Some(&pos(&res)), &body).await;
    assert!(res["rooms"][&invited]["invite_state"].is_array(), "{res}");
}

#[tokio::test]
async fn extensions_to_device_e2ee_account_data_receipts_typing() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let room = named_room(&s, &alice, "Ext").await;
    s.join(&bob, &room).await;
    let body = |since: Option<&str>| {
        json!({"conn_id": "ext", "lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1}},
        "extensions": {
            "to_device": {"enabled": true, "since": since},
            "e2ee": {"enabled": true},
            "account_data": {"enabled": true},
            "receipts": {"enabled": true},
            "typing": {"enabled": true}
        }})
    };
    let (st, _) = s
        .post(
            "/_matrix/client/v3/keys/upload",
            alice.t(),
            &json!({"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "k1", "signatures": {}}},
                    "fallback_keys": {"signed_curve25519:AAAAAg": {"key": "f", "fallback": true, "signatures": {}}}}),
        )
        .await;
    assert_eq!(st, 200);
    let res = ss(&s, &alice, None, &body(None)).await;
    let ext = &res["extensions"];
    assert_eq!(
        ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 1,
        "{res}"
    );
    assert_eq!(
        ext["e2ee"]["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    let since = ext["to_device"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // Bob: a to-device message, new keys, a receipt and typing; Alice: account data.
    let (st, _) = s
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/txn1",
            bob.t(),
            &json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"hello": "alice"}}}}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .post(
            "/_matrix/client/v3/keys/upload",
            bob.t(),
            &json!({"device_keys": {"user_id": bob.user_id, "device_id": bob.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": {format!("curve25519:{}", bob.device_id): "c", format!("ed25519:{}", bob.device_id): "e"},
                "signatures": {}}}),
        )
        .await;
    assert_eq!(st, 200);
    let event = s.send_text(&bob, &room, "read-me").await;
    let (st, _) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                enc(&event)
            ),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/typing/{}",
                enc(&bob.user_id)
            ),
            bob.t(),
            &json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(st, 200);
    for (path, content) in [
        (
            format!(
                "/_matrix/client/v3/user/{}/account_data/m.test.global",
                enc(&alice.user_id)
            ),
            json!({"g": 1}),
        ),
        (
            format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.test.room",
                enc(&alice.user_id)
            ),
            json!({"r": 1}),
        ),
    ] {
        let (st, _) = s.put(&path, alice.t(), &content).await;
        assert_eq!(st, 200);
    }

    let res = ss(&s, &alice, Some(&pos(&res)), &body(Some(&since))).await;
    let ext = &res["extensions"];
    assert_eq!(
        ext["to_device"]["events"][0]["content"]["hello"], "alice",
        "{res}"
    );
    assert_eq!(
        ext["to_device"]["events"][0]["sender"],
        bob.user_id.as_str()
    );
    assert!(
        ext["e2ee"]["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == bob.user_id.as_str())),
        "{res}"
    );
    assert!(
        ext["account_data"]["global"]
            .to_string()
            .contains("m.test.global"),
        "{res}"
    );
    assert_eq!(
        ext["account_data"]["rooms"][&room][0]["type"],
        "m.test.room"
    );
    assert_eq!(ext["receipts"]["rooms"][&room]["type"], "m.receipt");
    assert!(
        ext["receipts"]["rooms"][&room]["content"][&event]["m.read"][&bob.user_id].is_object(),
        "{res}"
    );
    assert_eq!(
        ext["typing"]["rooms"][&room]["content"]["user_ids"],
        json!([bob.user_id])
    );

    // Acknowledged: the message is not sent again.
    let next = ext["to_device"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let res = ss(&s, &alice, Some(&pos(&res)), &body(Some(&next))).await;
    assert!(
        res["extensions"]["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{res}"
    );
}

#[tokio::test]
async fn is_dm_comes_from_m_direct() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let dm = s
        .create_room(&alice, json!({"invite": [bob.user_id], "is_direct": true}))
        .await;
    let group = named_room(&s, &alice, "Group").await;
    let (st, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                enc(&alice.user_id)
            ),
            alice.t(),
            &json!({bob.user_id.clone(): [dm]}),
        )
        .await;
    assert_eq!(st, 200);
    let body = json!({"lists": {
        "dms": {"ranges": [[0, 9]], "timeline_limit": 0, "filters": {"is_dm": true}},
        "rooms": {"ranges": [[0, 9]], "timeline_limit": 0, "filters": {"is_dm": false}}
    }});
    let res = ss(&s, &alice, None, &body).await;
    assert_eq!(res["lists"]["dms"]["count"], 1, "{res}");
    assert_eq!(res["lists"]["rooms"]["count"], 1);
    assert_eq!(res["rooms"][&dm]["is_dm"], true);
    assert_eq!(res["rooms"][&group]["is_dm"], false);
}

/// Set `u`'s display name.
async fn set_displayname(s: &TestServer, u: &User, name: &str) {
    let (st, body) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&u.user_id)),
            u.t(),
            &json!({"displayname": name}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

/// Element X named a new direct chat "2 people" until the invitee answered: its heroes
/// come from member events, and invites carried no profile. Invites (from createRoom and
/// from /invite) now carry the invitee's display name, as Synapse's do.
#[tokio::test]
async fn invites_carry_the_invitees_profile_so_a_new_chat_has_a_named_hero() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let carol = s.register("carol", "pw-carol-1").await;
    set_displayname(&s, &bob, "Bob Hatter").await;
    set_displayname(&s, &carol, "Carol Queen").await;
    let dm = s
        .create_room(
            &alice,
            json!({"invite": [bob.user_id], "is_direct": true, "preset": "trusted_private_chat"}),
        )
        .await;
    let res = ss(&s, &alice, None, &list(1, 1, json!([]))).await;
    let room = &res["rooms"][&dm];
    assert_eq!(room["heroes"][0]["user_id"], bob.user_id.as_str(), "{room}");
    assert_eq!(room["heroes"][0]["displayname"], "Bob Hatter", "{room}");
    assert_eq!(room["name"], "Bob Hatter", "{room}");

    // The same for an invite through /invite.
    let (st, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{dm}/invite"),
            alice.t(),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, member) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{dm}/state/m.room.member/{}",
                enc(&carol.user_id)
            ),
            alice.t(),
        )
        .await;
    assert_eq!(st, 200, "{member}");
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["displayname"], "Carol Queen", "{member}");
}

/// Element X's new direct chat was sometimes never marked direct: a sliding sync took the
/// account data position from the sequence while bob's `m.direct` write, which had drawn
/// that position, was still committing, so the connection moved past the write and never
/// sent it. A sync now takes the position from committed rows (one user's writes commit in
/// position order, under a lock).
#[tokio::test]
async fn account_data_committing_during_a_sync_is_sent_by_the_next() {
    let s = TestServer::start().await;
    let bob = s.register("bob", "pw-bob-1").await;
    let body = json!({"conn_id": "ad", "extensions": {"account_data": {"enabled": true}}});
    let pool = common::media::db(&s).await;

    // A write that has drawn its position and not committed yet, as the server's own is
    // while its transaction commits.
    let mut tx = pool.begin().await.expect("begin");
    trellis::db::account_data::lock_user_stream(&mut *tx, &bob.user_id)
        .await
        .expect("lock");
    let content = serde_json::value::RawValue::from_string(
        json!({"@alice:trellis.test": ["!dm:trellis.test"]}).to_string(),
    )
    .expect("raw");
    trellis::db::account_data::put(&mut *tx, &bob.user_id, "", "m.direct", &content)
        .await
        .expect("put");
    // A new connection meanwhile: its first position is stored.
    let res = ss(&s, &bob, None, &body).await;
    let types = |res: &Value| -> Vec<String> {
        res["extensions"]["account_data"]["global"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["type"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(!types(&res).contains(&"m.direct".to_owned()), "{res}");
    tx.commit().await.expect("commit");

    let res = ss(&s, &bob, Some(&pos(&res)), &body).await;
    assert!(types(&res).contains(&"m.direct".to_owned()), "{res}");
}

#[tokio::test]
async fn bad_input_answers_the_right_errors() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let (st, res) = s
        .request(reqwest::Method::POST, PATH, alice.t(), None)
        .await;
    assert!(
        st == 200 || st == 400,
        "an empty body is an empty request: {st} {res}"
    );
    let raw = reqwest::Client::new()
        .post(s.url(PATH))
        .bearer_auth(&alice.token)
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status().as_u16(), 400);
    let v: Value = raw.json().await.expect("json");
    assert_eq!(v["errcode"], "M_NOT_JSON", "{v}");

    let bad = |ranges: Value| json!({"lists": {"all": {"ranges": ranges, "timeline_limit": 1}}});
    assert_error(
        &post(&s, &alice, None, 0, &bad(json!([[5, 2]]))).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &post(&s, &alice, None, 0, &bad(json!([[-1, 2]]))).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &post(&s, &alice, None, 0, &bad(json!("all"))).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &post(
            &s,
            &alice,
            None,
            0,
            &json!({"lists": {"all": {"ranges": [[0, 1]], "timeline_limit": "x"}}}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &post(
            &s,
            &alice,
            None,
            0,
            &json!({"extensions": {"to_device": {"enabled": true, "since": "x1"}}}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    let (st, _) = s.post(PATH, None, &json!({})).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn versions_advertise_it_and_auth_metadata_is_unrecognized() {
    let s = TestServer::start().await;
    let (st, v) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(st, 200);
    assert_eq!(
        v["unstable_features"]["org.matrix.simplified_msc3575"], true,
        "{v}"
    );
    for path in [
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    ] {
        assert_error(&s.get(path, None).await, 404, "M_UNRECOGNIZED");
    }
}

#[tokio::test]
async fn timeline_events_carry_their_bundled_aggregations() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let room = named_room(&s, &alice, "Edits").await;
    let original = s.send_text(&alice, &room, "helo").await;
    let (st, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/edit1"),
            alice.t(),
            &json!({"msgtype": "m.text", "body": "* hello",
                    "m.new_content": {"msgtype": "m.text", "body": "hello"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": original}}),
        )
        .await;
    assert_eq!(st, 200);
    let res = ss(&s, &alice, None, &list(1, 2, json!([]))).await;
    let timeline = res["rooms"][&room]["timeline"]
        .as_array()
        .expect("timeline");
    let first = timeline.first().expect("the original");
    assert_eq!(first["event_id"], original.as_str(), "{res}");
    assert_eq!(
        first["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"], "hello",
        "{first}"
    );
}

#[tokio::test]
async fn an_encryption_only_connection_is_woken_by_a_to_device_message() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let room = named_room(&s, &alice, "Enc").await;
    s.join(&bob, &room).await;
    let body = json!({"conn_id": "encryption", "extensions": {
        "to_device": {"enabled": true}, "e2ee": {"enabled": true}}});
    let res = ss(&s, &alice, None, &body).await;
    let p = pos(&res);
    let send = async {
        // A room message is no news for this connection; the to-device message is.
        s.send_text(&bob, &room, "not-for-encryption").await;
        let (st, _) = s
            .put(
                "/_matrix/client/v3/sendToDevice/m.test/txn-enc",
                bob.t(),
                &json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"k": "v"}}}}),
            )
            .await;
        assert_eq!(st, 200);
    };
    let ((st, polled), ()) = tokio::join!(post(&s, &alice, Some(&p), 30_000, &body), send);
    assert_eq!(st, 200, "{polled}");
    let events = &polled["extensions"]["to_device"]["events"];
    if events.as_array().is_none_or(|e| e.is_empty()) {
        // Woken before the message was stored: the next poll has it.
        let (_, again) = post(&s, &alice, Some(&pos(&polled)), 30_000, &body).await;
        assert_eq!(
            again["extensions"]["to_device"]["events"][0]["content"]["k"], "v",
            "{again}"
        );
    } else {
        assert_eq!(events[0]["content"]["k"], "v", "{polled}");
    }
    assert!(polled.get("rooms").is_none(), "{polled}");
}

/// The device that sent an event sees its transaction ID on it, in both syncs, /messages,
/// /event and /context; its other devices and other users do not.
#[tokio::test]
async fn the_sending_device_gets_its_transaction_id_back() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/echo-1"),
            alice.t(),
            &json!({"msgtype": "m.text", "body": "hello"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, login) = s.login("alice", "alice-password").await;
    let other_device = common::server::User::from_response(&login);

    let txn_of = |events: &Value| -> Vec<Option<String>> {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["content"]["body"] == "hello")
            .map(|e| e["unsigned"]["transaction_id"].as_str().map(str::to_owned))
            .collect()
    };
    let v3 = async |u: &User| {
        let sync = s.sync(u, "").await;
        sync["rooms"]["join"][&room]["timeline"]["events"].clone()
    };
    assert_eq!(txn_of(&v3(&alice).await), vec![Some("echo-1".to_owned())]);
    assert_eq!(txn_of(&v3(&other_device).await), vec![None]);
    assert_eq!(txn_of(&v3(&bob).await), vec![None]);

    let body = list(10, 5, json!([]));
    let sliding = ss(&s, &alice, None, &body).await;
    assert_eq!(
        txn_of(&sliding["rooms"][&room]["timeline"]),
        vec![Some("echo-1".to_owned())]
    );
    let sliding = ss(&s, &bob, None, &body).await;
    assert_eq!(txn_of(&sliding["rooms"][&room]["timeline"]), vec![None]);

    // The same in /messages, /event and /context.
    let event_id = {
        let (_, page) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
                alice.t(),
            )
            .await;
        assert_eq!(txn_of(&page["chunk"]), vec![Some("echo-1".to_owned())]);
        let (_, page) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
                other_device.t(),
            )
            .await;
        assert_eq!(txn_of(&page["chunk"]), vec![None]);
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["content"]["body"] == "hello")
            .unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (who, expected) in [(&alice, Some("echo-1")), (&other_device, None)] {
        let (_, ev) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&event_id)),
                who.t(),
            )
            .await;
        assert_eq!(ev["unsigned"]["transaction_id"].as_str(), expected, "{ev}");
        let (_, ctx) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/context/{}", enc(&event_id)),
                who.t(),
            )
            .await;
        assert_eq!(
            ctx["event"]["unsigned"]["transaction_id"].as_str(),
            expected,
            "{ctx}"
        );
    }
}

/// Fresh requests on one connection at once (a client retrying, two tabs) all answer.
#[tokio::test]
async fn simultaneous_fresh_requests_on_one_connection_all_answer() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    s.create_room(&alice, json!({"name": "r"})).await;
    let body = list(10, 1, json!([]));
    let answers = futures::future::join_all((0..8).map(|_| post(&s, &alice, None, 0, &body))).await;
    for (status, res) in answers {
        assert_eq!(status, 200, "{res}");
    }
}

/// A list filtered by `spaces` holds the rooms those spaces name as children (with `via`),
/// only for spaces the user is joined to; it follows a child added later.
#[tokio::test]
async fn spaces_filter_keeps_the_children_of_joined_spaces() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let space = s
        .create_room(
            &alice,
            json!({"name": "Space", "preset": "public_chat",
                   "creation_content": {"type": "m.space"}}),
        )
        .await;
    let a = named_room(&s, &alice, "A").await;
    let b = named_room(&s, &alice, "B").await;
    let c = named_room(&s, &alice, "C").await;
    let server = s.server_name();
    let child = |room: &str, via: Value| {
        let room = room.to_owned();
        let (s, alice, space) = (&s, &alice, &space);
        async move {
            s.put_state(alice, space, "m.space.child", &room, &json!({ "via": via }))
                .await
        }
    };
    child(&a, json!([server])).await;
    child(&c, json!([])).await;
    // bob's own space, which alice is not in, names B.
    let bobs = s
        .create_room(
            &bob,
            json!({"preset": "public_chat", "creation_content": {"type": "m.space"}}),
        )
        .await;
    s.put_state(&bob, &bobs, "m.space.child", &b, &json!({"via": [server]}))
        .await;

    let filtered = |spaces: Value| {
        json!({"conn_id": "spaces", "lists": {"in_space": {
            "ranges": [[0, 9]], "timeline_limit": 1, "filters": {"spaces": spaces}
        }}})
    };
    // C's child event has no via: not a child. The space itself is not its own child.
    let res = ss(&s, &alice, None, &filtered(json!([space]))).await;
    assert_eq!(res["lists"]["in_space"]["count"], 1, "{res}");
    assert_eq!(by_recency(&res), vec![a.clone()], "{res}");

    // A space alice is not joined to names nothing, even a room she is in.
    let res = ss(&s, &alice, None, &filtered(json!([bobs]))).await;
    assert_eq!(res["lists"]["in_space"]["count"], 0, "{res}");

    // A child added later joins the list on the next request.
    let body = filtered(json!([space]));
    let first = ss(&s, &alice, None, &body).await;
    child(&b, json!([server])).await;
    let res = ss(&s, &alice, Some(&pos(&first)), &body).await;
    assert_eq!(res["lists"]["in_space"]["count"], 2, "{res}");
    assert!(res["rooms"].get(&b).is_some(), "{res}");

    // Not a list of room IDs: refused.
    let bad = post(&s, &alice, None, 0, &filtered(json!(["not a room"]))).await;
    assert_error(&bad, 400, "M_BAD_JSON");
    let bad = post(&s, &alice, None, 0, &filtered(json!(5))).await;
    assert_error(&bad, 400, "M_BAD_JSON");
}

/// A room with no new events is not read again, but what changes without an event in it
/// still reaches the connection: unread counts falling when the user reads, and the DM flag
/// when `m.direct` changes.
#[tokio::test]
async fn counts_and_dm_flag_changing_without_an_event_are_sent() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "pw-alice-1").await;
    let bob = s.register("bob", "pw-bob-1").await;
    let room = named_room(&s, &alice, "R").await;
    let other = named_room(&s, &alice, "Other").await;
    s.join(&bob, &room).await;
    s.send_text(&bob, &room, "one").await;
    let last = s.send_text(&bob, &room, "two").await;

    let body = list(9, 1, json!([]));
    let first = ss(&s, &alice, None, &body).await;
    assert_eq!(first["rooms"][&room]["notification_count"], 2, "{first}");
    assert_eq!(first["rooms"][&room]["is_dm"], false);

    // Nothing new: an idle poll sends no room.
    let quiet = ss(&s, &alice, Some(&pos(&first)), &body).await;
    assert!(
        quiet["rooms"].as_object().is_none_or(|m| m.is_empty()),
        "{quiet}"
    );

    // alice reads up to bob's last message: a receipt, no room event.
    let (st, res) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&last)
            ),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200, "{res}");
    let read = ss(&s, &alice, Some(&pos(&quiet)), &body).await;
    assert_eq!(read["rooms"][&room]["notification_count"], 0, "{read}");
    assert!(read["rooms"].get(&other).is_none(), "{read}");

    // The room becomes a DM through alice's account data.
    s.put_account_data(&alice, "m.direct", &json!({bob.user_id.clone(): [room]}))
        .await;
    let dm = ss(&s, &alice, Some(&pos(&read)), &body).await;
    assert_eq!(dm["rooms"][&room]["is_dm"], true, "{dm}");
    assert!(dm["rooms"].get(&other).is_none(), "{dm}");
}

/// Rooms joined over federation keep their recency from the events other servers send: a
/// message from the other server moves the room up, a state change from there does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_another_server_move_a_room_up() {
    use common::federation::eventually;
    use common::rooms::public_room;

    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "pw-alice-1").await;
    let bob = b.register("bob", "pw-bob-1").await;
    let (remote, alias) = public_room(&a, &alice, "far").await;
    b.join(&bob, &alias).await;
    let local = named_room(&b, &bob, "Near").await;

    let body = list(9, 1, json!([]));
    let top = |res: &Value| by_recency(res).first().cloned();
    let first = ss(&b, &bob, None, &body).await;
    assert_eq!(top(&first), Some(local.clone()), "{first}");
    assert_eq!(first["lists"]["all"]["count"], 2, "{first}");

    // A message sent on A reaches B and brings the remote room to the top.
    a.send_text(&alice, &remote, "from afar").await;
    eventually("the remote message tops B's list", || async {
        let res = ss(&b, &bob, None, &body).await;
        top(&res).as_deref() == Some(remote.as_str())
            && bodies(&res["rooms"][&remote]["timeline"]).contains(&"from afar".to_owned())
    })
    .await;

    // A local message puts the local room back on top; a state change on A does not move
    // the remote room above it.
    b.send_text(&bob, &local, "near").await;
    a.put_state(
        &alice,
        &remote,
        "m.room.topic",
        "",
        &json!({"topic": "changed far away"}),
    )
    .await;
    let topic = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&remote)
    );
    eventually("the topic reaches B", || async {
        let (st, res) = b.get(&topic, bob.t()).await;
        st == 200 && res["topic"] == "changed far away"
    })
    .await;
    let fresh = ss(&b, &bob, None, &body).await;
    assert_eq!(top(&fresh), Some(local.clone()), "{fresh}");
}

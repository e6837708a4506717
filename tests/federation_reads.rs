//! The read side other servers use: /event, /state, /state_ids (MSC2314), /event_auth,
//! /backfill, /get_missing_events, /timestamp_to_event — answers, limits, bad parameters,
//! unknown IDs, and 403 for servers not in the room.

mod common;

use common::federation::{eventually, membership, signed};
use common::server::{TestServer, User, enc};
use serde_json::{Value, json};

struct Setup {
    a: TestServer,
    b: TestServer,
    c: TestServer,
    alice: User,
    room: String,
    /// Message event IDs in the order sent.
    messages: Vec<String>,
}

/// A room on A with 30 messages, then bob of B joined; C stays outside.
async fn setup() -> Setup {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "reads"}),
        )
        .await;
    let mut messages = Vec::new();
    for i in 0..30 {
        messages.push(a.send_text(&alice, &room, &format!("m{i}")).await);
    }
    b.join(&bob, &format!("#reads:{}", a.server_name())).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    Setup {
        a,
        b,
        c,
        alice,
        room,
        messages,
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Event IDs of the client-visible current state on A.
async fn client_state_ids(s: &Setup) -> Vec<String> {
    let (_, state) =
        s.a.get(
            &format!("/_matrix/client/v3/rooms/{}/state", s.room),
            s.alice.t(),
        )
        .await;
    let mut out: Vec<String> = state
        .as_array()
        .expect("state")
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// The bodies of PDUs in an answer, in order.
/// B asks A for the room's missing events: (status, answer).
async fn missing_events(s: &Setup, body: &Value) -> (u16, Value) {
    signed(
        &s.b,
        &s.a,
        "POST",
        &format!("/_matrix/federation/v1/get_missing_events/{}", enc(&s.room)),
        Some(body),
    )
    .await
}

fn bodies(pdus: &Value) -> Vec<String> {
    pdus.as_array()
        .expect("pdus")
        .iter()
        .filter_map(|p| p["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn state_and_state_ids_at_events_and_now() {
    let s = setup().await;
    let room = enc(&s.room);

    // MSC2314: no event_id is the current state, with the room version.
    let (status, now) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/state_ids/{room}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["room_version"], "12");
    let mut pdu_ids = ids(&now["pdu_ids"]);
    pdu_ids.sort();
    assert_eq!(pdu_ids, client_state_ids(&s).await);
    assert!(!ids(&now["auth_chain_ids"]).is_empty());

    // At a message sent before bob joined: the state then, without bob.
    let at = enc(&s.messages[10]);
    let (status, then) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/state_ids/{room}?event_id={at}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(ids(&then["pdu_ids"]).len() + 1, pdu_ids.len());

    // /state carries the same events as full PDUs.
    let (status, full) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/state/{room}?event_id={at}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["room_version"], "12");
    assert_eq!(
        full["pdus"].as_array().map(Vec::len),
        Some(ids(&then["pdu_ids"]).len())
    );
    assert!(
        full["pdus"]
            .as_array()
            .expect("pdus")
            .iter()
            .any(|p| p["type"] == "m.room.create")
    );
    assert_eq!(
        full["auth_chain"].as_array().map(Vec::len),
        Some(ids(&then["auth_chain_ids"]).len())
    );

    // Unknown events are 404, malformed IDs 400.
    let (status, body) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!(
            "/_matrix/federation/v1/state_ids/{room}?event_id={}",
            enc("$nothing")
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (404, json!("M_NOT_FOUND"))
    );
    let (status, body) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/state_ids/{room}?event_id=not-an-id"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (400, json!("M_INVALID_PARAM"))
    );
    let (status, _) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!(
            "/_matrix/federation/v1/state_ids/{}",
            enc("!unknown:nowhere")
        ),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn backfill_and_missing_events_walk_the_graph() {
    let s = setup().await;
    let room = enc(&s.room);
    let latest = enc(&s.messages[29]);
    let (status, page) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/backfill/{room}?v={latest}&limit=10"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["origin"], s.a.server_name());
    let got = bodies(&page["pdus"]);
    let want: Vec<String> = (20..30).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "newest first, the start included");
    // The server cap holds whatever the limit asks.
    let (_, page) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/backfill/{room}?v={latest}&limit=100000"),
        None,
    )
    .await;
    let n = page["pdus"].as_array().map_or(0, Vec::len);
    assert!(n > 30 && n <= 100, "{n}");
    let (status, _) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/backfill/{room}?limit=10"),
        None,
    )
    .await;
    assert_eq!(status, 400);

    let body = json!({
        "earliest_events": [s.messages[5]],
        "latest_events": [s.messages[10]],
        "limit": 10,
        "min_depth": 0
    });
    let (status, missing) = missing_events(&s, &body).await;
    assert_eq!(status, 200, "{missing}");
    assert_eq!(
        bodies(&missing["events"]),
        ["m6", "m7", "m8", "m9"],
        "oldest first, ends excluded"
    );
    let body =
        json!({"earliest_events": [s.messages[0]], "latest_events": [s.messages[29]], "limit": 5});
    let (_, missing) = missing_events(&s, &body).await;
    assert_eq!(
        bodies(&missing["events"]),
        ["m24", "m25", "m26", "m27", "m28"],
        "the nearest five"
    );
    // Nothing in common: the walk stays near the latest events and still finds the nearest.
    let body = json!({"earliest_events": ["$not-in-this-room"],
                      "latest_events": [s.messages[29]], "limit": 3});
    let (_, missing) = missing_events(&s, &body).await;
    assert_eq!(
        bodies(&missing["events"]),
        ["m26", "m27", "m28"],
        "the nearest three, earliest unknown"
    );
}

#[tokio::test]
async fn single_events_auth_chains_and_timestamps() {
    let s = setup().await;
    let room = enc(&s.room);
    let id = enc(&s.messages[3]);
    let (status, ev) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/event/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["origin"], s.a.server_name());
    assert_eq!(ev["pdus"][0]["content"]["body"], "m3");
    let (status, body) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/event/{}", enc("$unknown")),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (404, json!("M_NOT_FOUND"))
    );

    let (status, auth) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/event_auth/{room}/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{auth}");
    let types: Vec<&str> = auth["auth_chain"]
        .as_array()
        .expect("auth_chain")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for t in ["m.room.create", "m.room.power_levels", "m.room.member"] {
        assert!(types.contains(&t), "{types:?}");
    }

    let (status, first) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=f"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["event_id"].is_string() && first["origin_server_ts"].is_u64());
    let (status, body) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=99999999999999&dir=f"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (404, json!("M_NOT_FOUND"))
    );
    let (status, _) = signed(
        &s.b,
        &s.a,
        "GET",
        &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=sideways"),
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_server_not_in_the_room_is_refused_everywhere() {
    let s = setup().await;
    let room = enc(&s.room);
    let id = enc(&s.messages[3]);
    let gets = [
        format!("/_matrix/federation/v1/event/{id}"),
        format!("/_matrix/federation/v1/state/{room}"),
        format!("/_matrix/federation/v1/state_ids/{room}?event_id={id}"),
        format!("/_matrix/federation/v1/event_auth/{room}/{id}"),
        format!("/_matrix/federation/v1/backfill/{room}?v={id}&limit=5"),
        format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=f"),
    ];
    for path in &gets {
        let (status, body) = signed(&s.c, &s.a, "GET", path, None).await;
        assert_eq!(
            (status, body["errcode"].clone()),
            (403, json!("M_FORBIDDEN")),
            "{path}"
        );
    }
    let body = json!({"earliest_events": [], "latest_events": [s.messages[5]]});
    let (status, _) = signed(
        &s.c,
        &s.a,
        "POST",
        &format!("/_matrix/federation/v1/get_missing_events/{room}"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 403);
    // Unsigned, the same requests are 401.
    let response = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
        .get(s.a.federation_url(&gets[1]))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn both_servers_compute_the_same_state_at_each_event() {
    let s = setup().await;
    let (status, login) = s.b.login("bob", "password-b").await;
    assert_eq!(status, 200);
    let bob = User::from_response(&login);
    // Events both servers hold: state changes and messages after bob joined, from both sides.
    let mut shared = Vec::new();
    for i in 0..3 {
        shared.push(
            s.a.send_text(&s.alice, &s.room, &format!("after-a{i}"))
                .await,
        );
        let (status, res) =
            s.a.put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", s.room),
                s.alice.t(),
                &json!({"topic": format!("topic {i}")}),
            )
            .await;
        assert_eq!(status, 200, "{res}");
        shared.push(res["event_id"].as_str().expect("event_id").to_owned());
        shared.push(s.b.send_text(&bob, &s.room, &format!("after-b{i}")).await);
    }
    let last = shared.last().expect("events").clone();
    eventually("A has bob's last message", || async {
        let (status, _) = signed(
            &s.b,
            &s.a,
            "GET",
            &format!("/_matrix/federation/v1/event/{}", enc(&last)),
            None,
        )
        .await;
        status == 200
    })
    .await;
    let room = enc(&s.room);
    for event in &shared {
        let path = format!(
            "/_matrix/federation/v1/state_ids/{room}?event_id={}",
            enc(event)
        );
        let (sa, on_a) = signed(&s.b, &s.a, "GET", &path, None).await;
        let (sb, on_b) = signed(&s.a, &s.b, "GET", &path, None).await;
        assert_eq!((sa, sb), (200, 200), "{on_a} {on_b}");
        let mut x = ids(&on_a["pdu_ids"]);
        let mut y = ids(&on_b["pdu_ids"]);
        x.sort();
        y.sort();
        assert_eq!(x, y, "state before {event}");
    }
}

#[tokio::test]
async fn history_a_server_could_not_see_is_served_redacted() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_alias_name": "private-past",
                "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                                   "content": {"history_visibility": "joined"}}]
            }),
        )
        .await;
    let secret = a.send_text(&alice, &room, "before you came").await;
    b.join(&bob, &format!("#private-past:{}", a.server_name()))
        .await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    let open = a.send_text(&alice, &room, "now you see me").await;

    let (status, page) = signed(
        &b,
        &a,
        "GET",
        &format!(
            "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
            enc(&room),
            enc(&open)
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let bodies = bodies(&page["pdus"]);
    assert!(bodies.contains(&"now you see me".to_owned()), "{bodies:?}");
    assert!(
        !bodies.contains(&"before you came".to_owned()),
        "{bodies:?}"
    );
    // The hidden event is still there, redacted, so the graph stays whole.
    let (status, ev) = signed(
        &b,
        &a,
        "GET",
        &format!("/_matrix/federation/v1/event/{}", enc(&secret)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ev["pdus"][0]["type"], "m.room.message");
    assert_eq!(ev["pdus"][0]["content"], json!({}));
}

//! What a server in the room can do with events it signs itself: the checks that keep one
//! hostile member server from breaking a room for everyone else (depth at the limit,
//! redactions without the right to them).

mod common;

use common::federation::{eventually, membership};
use common::rooms::{Forger, live_dag, public_room, raw, state_ids, timeline};
use common::server::{TestServer, User, assert_error, enc};
use ruma::OwnedEventId;
use serde_json::{Value, json};

fn id(s: &str) -> OwnedEventId {
    OwnedEventId::try_from(s).unwrap()
}

/// A public room on `a` that each `(server, user)` of `others` has joined, as `a` sees it.
async fn joined_room(
    a: &TestServer,
    alice: &User,
    name: &str,
    others: &[(&TestServer, &User)],
) -> String {
    let (room, alias) = public_room(a, alice, name).await;
    for (s, u) in others {
        s.join(u, &alias).await;
        let who = u.user_id.clone();
        eventually("the room's server sees the join", || async {
            membership(a, alice, &room, &who).await.as_deref() == Some("join")
        })
        .await;
    }
    room
}

/// The auth events of a message from `sender` in room version 12 (the create event is
/// implied by the room ID): the power levels and the sender's membership.
async fn message_auth(a: &TestServer, alice: &User, room: &str, sender: &str) -> Vec<OwnedEventId> {
    let state = state_ids(a, alice, room).await;
    [("m.room.power_levels", ""), ("m.room.member", sender)]
        .iter()
        .map(|(t, k)| id(&state[&(t.to_string(), k.to_string())]))
        .collect()
}

/// The newest event of the room's timeline as `alice` sees it on `a`.
async fn latest(a: &TestServer, alice: &User, room: &str) -> OwnedEventId {
    id(&timeline(a, alice, room).await.last().unwrap().0)
}

/// The event as `u` is served it by `s` (status, body).
async fn event(s: &TestServer, u: &User, room: &str, event_id: &str) -> (u16, Value) {
    s.get(
        &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
        u.t(),
    )
    .await
}

/// Whether the event is served with its content stripped by a redaction.
async fn redacted(s: &TestServer, u: &User, room: &str, event_id: &str) -> bool {
    let (status, body) = event(s, u, room, event_id).await;
    assert_eq!(status, 200, "{event_id}: {body}");
    body["content"] == json!({})
}

/// One PDU at the deepest depth a PDU can carry must not make the room unwritable: events
/// after it are placed at that depth too, and every send still succeeds.
#[tokio::test]
async fn an_event_at_the_deepest_depth_leaves_the_room_writable() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = joined_room(&a, &alice, "deep", &[(&b, &bob)]).await;

    let forger = Forger::new(&a, &b, &room, &bob.user_id, ruma::RoomVersionId::V12);
    let mut dag = live_dag(&a, &alice, &b, &room, ruma::RoomVersionId::V12).await;
    let deepest = 9_007_199_254_740_991;
    let mut at = dag.head();
    at.depth = deepest;
    dag.fork(&at);
    let deep = dag.message(&bob.id(), "deep");
    let (status, answer) = forger
        .send("deep-1", dag.raw(std::slice::from_ref(&deep)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["pdus"][deep.as_str()], json!({}), "{answer}");

    // Several sends on top of it, each on the one before (the remembered tip) and after a
    // state change (the stored tip).
    for i in 0..3 {
        let (status, body) = a
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after-{i}"),
                alice.t(),
                &json!({"msgtype": "m.text", "body": format!("after-{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            alice.t(),
            &json!({"topic": "still writable"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    a.send_text(&alice, &room, "last").await;
    let bodies: Vec<String> = timeline(&a, &alice, &room)
        .await
        .into_iter()
        .filter(|e| e.1 == "m.room.message")
        .map(|e| e.2)
        .collect();
    assert_eq!(bodies, ["deep", "after-0", "after-1", "after-2", "last"]);

    // Our events carry the clamped depth, as the other server is served them.
    let last = latest(&a, &alice, &room).await;
    let (status, pdu) = common::federation::signed(
        &b,
        &a,
        "GET",
        &format!("/_matrix/federation/v1/event/{last}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{pdu}");
    assert_eq!(pdu["pdus"][0]["depth"], json!(deepest));
}

/// A redaction takes effect only when its sender has the room's redact power level or is on
/// the server of the redacted event's sender, whichever comes first, redaction or event;
/// local users may redact only their own events without that power.
#[tokio::test]
async fn redactions_take_effect_only_with_the_right_to_them() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let dave = a.register("dave", "password-d").await;
    let bob = b.register("bob", "password-b").await;
    let charlie = c.register("charlie", "password-c").await;
    let room = joined_room(
        &a,
        &alice,
        "redact",
        &[(&b, &bob), (&c, &charlie), (&a, &dave)],
    )
    .await;
    let v12 = ruma::RoomVersionId::V12;
    let as_bob = Forger::new(&a, &b, &room, &bob.user_id, v12.clone());
    let as_charlie = Forger::new(&a, &c, &room, &charlie.user_id, v12);
    let bob_auth = message_auth(&a, &alice, &room, &bob.user_id).await;
    let charlie_auth = message_auth(&a, &alice, &room, &charlie.user_id).await;

    // 1. Bob (power 0, another server) redacts alice's message: accepted into the graph,
    //    no effect.
    let alice_1 = a.send_text(&alice, &room, "alice-1").await;
    let (r1, json) = as_bob.redaction(&id(&alice_1), &id(&alice_1), &bob_auth, 100);
    let (status, answer) = as_bob.send("r1", vec![raw(&json)]).await;
    assert_eq!(
        (status, &answer["pdus"][r1.as_str()]),
        (200, &json!({})),
        "{answer}"
    );
    assert!(!redacted(&a, &alice, &room, &alice_1).await);

    // 2. Bob redacts his own message: applied.
    let (bob_1, json_m) = as_bob.message("bob-1", &r1, &bob_auth, 101);
    let (r2, json_r) = as_bob.redaction(&bob_1, &bob_1, &bob_auth, 102);
    let (status, _) = as_bob.send("r2", vec![raw(&json_m), raw(&json_r)]).await;
    assert_eq!(status, 200);
    assert!(redacted(&a, &alice, &room, bob_1.as_str()).await);

    // 3. The redaction comes before the event it names. Bob's of charlie's message: no
    //    effect when the message comes. Bob's of his own: applied when it comes.
    let (charlie_1, json_c1) = as_charlie.message("charlie-1", &r2, &charlie_auth, 103);
    let (bob_2, json_b2) = as_bob.message("bob-2", &r2, &bob_auth, 103);
    let (r3, json_r3) = as_bob.redaction(&charlie_1, &r2, &bob_auth, 103);
    let (r4, json_r4) = as_bob.redaction(&bob_2, &r3, &bob_auth, 104);
    let (status, answer) = as_bob.send("r34", vec![raw(&json_r3), raw(&json_r4)]).await;
    assert_eq!(status, 200);
    assert_eq!(answer["pdus"][r3.as_str()], json!({}), "{answer}");
    assert_eq!(answer["pdus"][r4.as_str()], json!({}), "{answer}");
    let (status, answer) = as_charlie.send("c1", vec![raw(&json_c1)]).await;
    assert_eq!(
        (status, &answer["pdus"][charlie_1.as_str()]),
        (200, &json!({})),
        "{answer}"
    );
    assert!(!redacted(&a, &alice, &room, charlie_1.as_str()).await);
    let (status, _) = as_bob.send("b2", vec![raw(&json_b2)]).await;
    assert_eq!(status, 200);
    assert!(redacted(&a, &alice, &room, bob_2.as_str()).await);

    // 4. With the redact power level, bob's redaction of charlie's message applies, also
    //    when it comes first.
    let (status, mut levels) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200);
    levels["users"][bob.user_id.as_str()] = json!(50);
    let (status, body) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"),
            alice.t(),
            &levels,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bob_auth = message_auth(&a, &alice, &room, &bob.user_id).await;
    let charlie_auth = message_auth(&a, &alice, &room, &charlie.user_id).await;
    let tip = latest(&a, &alice, &room).await;
    let (charlie_2, json_c2) = as_charlie.message("charlie-2", &tip, &charlie_auth, 200);
    let (charlie_3, json_c3) = as_charlie.message("charlie-3", &charlie_2, &charlie_auth, 201);
    let (r5, json_r5) = as_bob.redaction(&charlie_2, &charlie_3, &bob_auth, 202);
    // A redaction of an event nobody ever sends waits harmlessly.
    let (r6, json_r6) = as_bob.redaction(&id("$never-sent"), &r5, &bob_auth, 203);
    let (status, _) = as_charlie
        .send("c23", vec![raw(&json_c2), raw(&json_c3)])
        .await;
    assert_eq!(status, 200);
    let (status, answer) = as_bob.send("r56", vec![raw(&json_r5), raw(&json_r6)]).await;
    assert_eq!(status, 200);
    for r in [&r5, &r6] {
        assert_eq!(answer["pdus"][r.as_str()], json!({}), "{answer}");
    }
    assert!(redacted(&a, &alice, &room, charlie_2.as_str()).await);
    assert!(!redacted(&a, &alice, &room, charlie_3.as_str()).await);
    let (charlie_4, json_c4) = as_charlie.message("charlie-4", &r5, &charlie_auth, 203);
    let (r7, json_r7) = as_bob.redaction(&charlie_4, &r5, &bob_auth, 203);
    let (status, answer) = as_bob.send("r7", vec![raw(&json_r7)]).await;
    assert_eq!(
        (status, &answer["pdus"][r7.as_str()]),
        (200, &json!({})),
        "{answer}"
    );
    let (status, _) = as_charlie.send("c4", vec![raw(&json_c4)]).await;
    assert_eq!(status, 200);
    assert!(redacted(&a, &alice, &room, charlie_4.as_str()).await);

    // 5. Local users: dave (power 0) may not redact alice's message, may redact his own;
    //    alice (the creator) may redact anyone's.
    let alice_2 = a.send_text(&alice, &room, "alice-2").await;
    let dave_1 = a.send_text(&dave, &room, "dave-1").await;
    let redact = |who: &User, target: &str, txn: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/redact/{target}/{txn}");
        let token = who.t().map(str::to_owned);
        let a = &a;
        async move {
            a.put(&path, token.as_deref(), &json!({"reason": "test"}))
                .await
        }
    };
    assert_error(&redact(&dave, &alice_2, "d1").await, 403, "M_FORBIDDEN");
    assert!(!redacted(&a, &alice, &room, &alice_2).await);
    let (status, body) = redact(&dave, &dave_1, "d2").await;
    assert_eq!(status, 200, "{body}");
    assert!(redacted(&a, &alice, &room, &dave_1).await);
    let (status, body) = redact(&alice, charlie_3.as_str(), "a1").await;
    assert_eq!(status, 200, "{body}");
    assert!(redacted(&a, &alice, &room, charlie_3.as_str()).await);
}

/// A make_join template is checked before we sign it: a resident server that proposes any
/// other event (another type, someone else's state key, another room) gets no signature
/// and no send_join; a proper template goes on to send_join.
#[tokio::test]
async fn a_membership_template_is_checked_before_it_is_signed() {
    use common::media::{fake_homeserver, http_response};
    use std::sync::{Arc, Mutex};

    let a = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let template = Arc::new(Mutex::new(json!({})));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let port = {
        let (template, seen) = (template.clone(), seen.clone());
        fake_homeserver(move |line| {
            seen.lock().unwrap().push(line.to_owned());
            let body = match line.contains("/make_join/") {
                true => json!({"room_version": "10", "event": *template.lock().unwrap()}),
                false => json!({"errcode": "M_UNKNOWN", "error": "no"}),
            };
            let status = if line.contains("/make_join/") {
                "200 OK"
            } else {
                "500 Oops"
            };
            http_response(
                status,
                &[("content-type", "application/json")],
                body.to_string().as_bytes(),
            )
        })
        .await
    };
    let remote = format!("127.0.0.1:{port}");
    let room = format!("!hosted:{remote}");
    let proper = json!({
        "type": "m.room.member", "room_id": room, "sender": alice.user_id,
        "state_key": alice.user_id, "content": {"membership": "join"},
        "prev_events": ["$p"], "auth_events": ["$a"], "depth": 5, "origin": remote,
        "origin_server_ts": 1,
    });
    let join = || async {
        a.post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={remote}",
                enc(&room)
            ),
            alice.t(),
            &json!({}),
        )
        .await
    };
    let mut bad: Vec<Value> = Vec::new();
    for (key, value) in [
        ("type", json!("m.room.power_levels")),
        ("state_key", json!(format!("@admin:{remote}"))),
        ("sender", json!(format!("@admin:{remote}"))),
        ("room_id", json!(format!("!other:{remote}"))),
        ("content", json!({"membership": "ban"})),
    ] {
        let mut t = proper.clone();
        t[key] = value;
        bad.push(t);
    }
    for t in bad {
        *template.lock().unwrap() = t.clone();
        let (status, body) = join().await;
        assert_ne!(status, 200, "{t}: {body}");
        assert!(body["errcode"].is_string(), "{body}");
    }
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("send_join")),
        "a refused template was sent back signed: {:?}",
        seen.lock().unwrap()
    );
    // The proper template is signed and sent back (the fake server then fails the join).
    *template.lock().unwrap() = proper;
    let (status, _) = join().await;
    assert_ne!(status, 200);
    assert!(seen.lock().unwrap().iter().any(|l| l.contains("send_join")));
}

/// History made of events that failed authorisation is skipped, not served: paging back
/// through a run of them (more than a page) still reaches what came before.
#[tokio::test]
async fn paging_back_passes_over_a_run_of_rejected_events() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = joined_room(&a, &alice, "rejects", &[(&b, &bob)]).await;
    a.send_text(&alice, &room, "before").await;

    // Bob (power 0) renames the room 40 times: each rejected by the auth rules.
    let forger = Forger::new(&a, &b, &room, &bob.user_id, ruma::RoomVersionId::V12);
    let mut dag = live_dag(&a, &alice, &b, &room, ruma::RoomVersionId::V12).await;
    let ids: Vec<OwnedEventId> = (0..40)
        .map(|i| {
            dag.state(
                &bob.id(),
                "m.room.name",
                "",
                json!({"name": format!("n{i}")}),
            )
        })
        .collect();
    let (status, answer) = forger.send("names", dag.raw(&ids)).await;
    assert_eq!(status, 200);
    for id in &ids {
        assert!(answer["pdus"][id.as_str()]["error"].is_string(), "{answer}");
    }
    // A rejected event is no event to clients, as Synapse answers: 404 by ID and in context.
    for path in [
        format!(
            "/_matrix/client/v3/rooms/{room}/event/{}",
            enc(ids[0].as_str())
        ),
        format!(
            "/_matrix/client/v3/rooms/{room}/context/{}",
            enc(ids[0].as_str())
        ),
    ] {
        assert_error(&a.get(&path, alice.t()).await, 404, "M_NOT_FOUND");
    }
    a.send_text(&alice, &room, "after").await;

    // Page back five at a time: every page is served, nothing rejected shows, and the
    // message from before the run is reached.
    let mut from: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let query = match &from {
            Some(f) => format!("dir=b&limit=5&from={f}"),
            None => "dir=b&limit=5".to_owned(),
        };
        let (status, page) = a
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?{query}"),
                alice.t(),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        for e in page["chunk"].as_array().unwrap() {
            assert_ne!(e["type"], "m.room.name", "a rejected event was served: {e}");
            seen.extend(e["content"]["body"].as_str().map(str::to_owned));
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["after", "before"]);
}

/// The user IDs `u` sees typing in the room on `s` (an initial sync).
async fn typing_users(s: &TestServer, u: &User, room: &str) -> Vec<String> {
    let sync = s.sync(u, "").await;
    let mut out = Vec::new();
    for e in sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if e["type"] == "m.typing" {
            for id in e["content"]["user_ids"].as_array().into_iter().flatten() {
                out.extend(id.as_str().map(str::to_owned));
            }
        }
    }
    out.sort();
    out
}

/// One transaction with malformed PDUs and EDUs and EDUs speaking for users of other servers
/// still delivers everything good in it; the rest is dropped.
#[tokio::test]
async fn bad_and_spoofed_parts_of_a_transaction_harm_nothing_else() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = joined_room(&a, &alice, "spoof", &[(&b, &bob)]).await;
    let forger = Forger::new(&a, &b, &room, &bob.user_id, ruma::RoomVersionId::V12);
    let mut dag = live_dag(&a, &alice, &b, &room, ruma::RoomVersionId::V12).await;
    let good = dag.message(&bob.id(), "good");
    let typing = |user: &str| json!({"edu_type": "m.typing", "content": {"room_id": room, "user_id": user, "typing": true}});
    let carol = format!("@carol:{}", b.server_name());
    let pdus = vec![
        raw(r#"{"type": 5}"#),
        raw(r#"[1, 2, 3]"#),
        raw(&json!({"room_id": room, "type": "m.room.message", "sender": bob.user_id}).to_string()),
        raw(&dag.event(&good).json),
    ];
    let edus = vec![
        raw(r#"{"edu_type": "m.typing", "content": "not an object"}"#),
        raw(r#"{"no_type": true}"#),
        raw(&typing(&alice.user_id).to_string()),
        raw(&typing("@mallory:elsewhere.example").to_string()),
        raw(&json!({"edu_type": "m.receipt", "content": {room.clone(): {"m.read": {alice.user_id.clone(): {"event_ids": [good], "data": {"ts": 1}}}}}}).to_string()),
        raw(&typing(&carol).to_string()),
    ];
    let (status, answer) = forger.send_with_edus("mixed-1", pdus, edus).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"][good.as_str()], json!({}), "{answer}");
    let seen: Vec<String> = timeline(&a, &alice, &room)
        .await
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert!(seen.contains(&"good".to_owned()), "{seen:?}");
    // Carol (of the sending server, though not in the room) is refused by the room check;
    // the spoofed users never show; alice's own receipt was not set by the other server.
    assert_eq!(typing_users(&a, &alice, &room).await, Vec::<String>::new());
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{good}"),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sync = a.sync(&alice, "").await;
    let receipts = sync["rooms"]["join"][&room]["ephemeral"]["events"].to_string();
    assert!(
        !receipts.contains("m.receipt") || !receipts.contains(&alice.user_id),
        "{receipts}"
    );

    // A following transaction with bob's own typing is applied: the queue did not stall.
    let (status, _) = forger
        .send_with_edus(
            "mixed-2",
            Vec::new(),
            vec![raw(&typing(&bob.user_id).to_string())],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        typing_users(&a, &alice, &room).await,
        vec![bob.user_id.clone()]
    );
}

/// The state a resident server answers a send_join with is checked event by event: a state
/// event whose content was changed after it was signed (here in the resident's own
/// database, as a dishonest or broken server would serve it) fails its content hash and is
/// taken redacted, as the spec says, never with the forged content; the join goes through.
#[tokio::test]
async fn a_forged_state_event_in_a_send_join_answer_is_not_taken() {
    use sqlx::Connection;
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = public_room(&a, &alice, "forged").await;
    let topic = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&room)
    );
    let (status, body) = a
        .put(&topic, alice.t(), &json!({"topic": "the true topic"}))
        .await;
    assert_eq!(status, 200, "{body}");

    let mut db = sqlx::PgConnection::connect(a.config.database.url.as_deref().unwrap())
        .await
        .unwrap();
    let forged = sqlx::query(
        "UPDATE events SET json = replace(json, 'the true topic', 'a forged topic')
         WHERE event_type = 'm.room.topic' AND json LIKE '%the true topic%'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(forged.rows_affected(), 1);

    b.join(&bob, &alias).await;
    let (status, body) = b.get(&topic, bob.t()).await;
    assert_eq!(
        (status, &body),
        (200, &json!({})),
        "the topic is taken redacted"
    );
    // Bob is in the room and can talk in it.
    let (status, body) = b
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
            bob.t(),
            &json!({"msgtype": "m.text", "body": "hello"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

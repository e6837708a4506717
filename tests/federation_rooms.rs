//! Rooms across Trellis servers on loopback (TLS, separate databases): joins by alias,
//! messages both ways, outages and catch-up, invites and leaves, bad PDUs in a transaction,
//! and concurrent sends converging to one state.

mod common;

use common::federation::{eventually, membership};
use common::rooms::{
    Forger, bodies, public_room, public_room_of, raw, state_ids, state_of, timeline,
};
use common::server::{TestServer, User, enc};
use common::stripped::{RECOMMENDED, room_with_every_stripped_state, stripped_types};
use serde_json::{Value, json};

#[tokio::test]
async fn three_servers_join_by_alias_and_exchange_messages_in_order() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let carol = c.register("carol", "password-c").await;
    let (room, alias) = public_room(&a, &alice, "lobby").await;

    b.join(&bob, &alias).await;
    c.join(&carol, &alias).await;
    let bob_id = bob.user_id.clone();
    let carol_id = carol.user_id.clone();
    eventually("A sees bob and carol joined", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
            && membership(&a, &alice, &room, &carol_id).await.as_deref() == Some("join")
    })
    .await;
    eventually("B sees carol joined (forwarded by A)", || async {
        membership(&b, &bob, &room, &carol_id).await.as_deref() == Some("join")
    })
    .await;

    let mut expected = Vec::new();
    for i in 0..50 {
        let text = format!("a{i}");
        a.send_text(&alice, &room, &text).await;
        expected.push(text);
    }
    eventually("B has alice's 50 messages", || async {
        bodies(&timeline(&b, &bob, &room).await).len() == 50
    })
    .await;
    for i in 0..50 {
        let text = format!("b{i}");
        b.send_text(&bob, &room, &text).await;
        expected.push(text);
    }
    for (server, user) in [(&a, &alice), (&b, &bob), (&c, &carol)] {
        eventually("every server has all 100 messages", || async {
            bodies(&timeline(server, user, &room).await).len() == 100
        })
        .await;
        assert_eq!(
            bodies(&timeline(server, user, &room).await),
            expected,
            "order on {}",
            server.server_name()
        );
    }

    // /sync shows them too, in the same order.
    let filter = enc(&json!({"room": {"timeline": {"limit": 200}}}).to_string());
    let sync = c.sync(&carol, &format!("?filter={filter}")).await;
    let events = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline");
    let synced: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(synced, expected);
}

#[tokio::test]
async fn a_stopped_server_receives_what_it_missed() {
    let a = TestServer::start_federating().await;
    let mut b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = public_room(&a, &alice, "outage").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    b.stop().await;
    let mut expected = Vec::new();
    for i in 0..20 {
        let text = format!("while-down-{i}");
        a.send_text(&alice, &room, &text).await;
        expected.push(text);
    }
    b.resume().await;
    // Tokens survive the restart; log in again to be independent of that.
    let (status, login) = b.login("bob", "password-b").await;
    assert_eq!(status, 200);
    let bob = User::from_response(&login);
    eventually("B caught up with the 20 events", || async {
        bodies(&timeline(&b, &bob, &room).await) == expected
    })
    .await;
}

/// createRoom's `invite` names a user of another server: the invite goes through that
/// server (which must countersign it), as a later /invite would, and keeps `is_direct`.
#[tokio::test]
async fn create_room_invites_users_of_other_servers() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (st, _) = b
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&bob.user_id)
            ),
            bob.t(),
            &json!({"displayname": "Bob Hatter"}),
        )
        .await;
    assert_eq!(st, 200);
    let room = a
        .create_room(
            &alice,
            json!({"preset": "trusted_private_chat", "invite": [bob.user_id], "is_direct": true}),
        )
        .await;
    let sync = b.sync(&bob, "").await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let own = invite
        .as_array()
        .and_then(|i| i.iter().find(|e| e["state_key"] == bob.user_id.as_str()))
        .unwrap_or_else(|| panic!("bob's server has the invite: {sync}"));
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["content"]["is_direct"], true);
    // The invite carries bob's profile as his server tells it, so alice's client names the
    // chat after him before he answers.
    assert_eq!(own["content"]["displayname"], "Bob Hatter", "{own}");
    b.join(&bob, &room).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob joined", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
}

#[tokio::test]
async fn invites_joins_rejections_and_leaves_across_servers() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let carol = b.register("carol", "password-c").await;
    let room = a
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;

    // A private room: joining without an invite is refused by the resident server (named by
    // `via`: since room version 12 a room ID names no server).
    let (status, _) = b
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room),
                a.server_name()
            ),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 403);

    for user in [&bob, &carol] {
        let (status, res) = a
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                alice.t(),
                &json!({"user_id": user.user_id}),
            )
            .await;
        assert_eq!(status, 200, "invite: {res}");
    }
    // The invite reaches B's /sync with the room's stripped state.
    let sync = b.sync(&bob, "").await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let invite = invite.as_array().expect("invite_state");
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.create" && e["sender"] == alice.user_id.as_str())
    );
    assert!(invite.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == bob.user_id.as_str()
        && e["content"]["membership"] == "invite"));

    // Bob accepts: joining through the inviting server.
    b.join(&bob, &room).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob joined", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    a.send_text(&alice, &room, "welcome").await;
    eventually("bob sees the message", || async {
        bodies(&timeline(&b, &bob, &room).await) == ["welcome"]
    })
    .await;

    // Carol rejects. B is in the room by now (bob joined), so her leave is appended on B
    // and reaches A over /send.
    let (status, res) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            carol.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "reject: {res}");
    let carol_id = carol.user_id.clone();
    eventually("A sees carol's rejection", || async {
        membership(&a, &alice, &room, &carol_id).await.as_deref() == Some("leave")
    })
    .await;

    // Bob leaves; A sees it, and bob's server no longer gets the room's events.
    let (status, _) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("A sees bob leave", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("leave")
    })
    .await;
    let (_, joined) = b.get("/_matrix/client/v3/joined_rooms", bob.t()).await;
    assert_eq!(joined["joined_rooms"], json!([]));
}

#[tokio::test]
async fn rejecting_an_invite_to_a_room_the_server_is_not_in() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let (status, _) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, res) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "reject through make_leave/send_leave: {res}");
    assert_eq!(
        membership(&a, &alice, &room, bob.user_id.as_str())
            .await
            .as_deref(),
        Some("leave")
    );
    let sync = b.sync(&bob, "").await;
    assert!(sync["rooms"]["invite"][&room].is_null(), "{sync}");
}

#[tokio::test]
async fn concurrent_sends_on_two_servers_converge() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_alias_name": "fork",
                "power_level_content_override": {"users": {alice.user_id.as_str(): 100, bob.user_id.as_str(): 100}}
            }),
        )
        .await;
    b.join(&bob, &format!("#fork:{}", a.server_name())).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    // Both servers write at once: messages and competing state.
    tokio::join!(
        async {
            for i in 0..10 {
                a.send_text(&alice, &room, &format!("fa{i}")).await;
                let (st, _) = a
                    .put(
                        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
                        alice.t(),
                        &json!({"topic": format!("alice {i}")}),
                    )
                    .await;
                assert_eq!(st, 200);
            }
        },
        async {
            for i in 0..10 {
                b.send_text(&bob, &room, &format!("fb{i}")).await;
                let (st, _) = b
                    .put(
                        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
                        bob.t(),
                        &json!({"topic": format!("bob {i}")}),
                    )
                    .await;
                assert_eq!(st, 200);
            }
        }
    );
    for (server, user) in [(&a, &alice), (&b, &bob)] {
        eventually("all 20 messages on both servers", || async {
            bodies(&timeline(server, user, &room).await).len() == 20
        })
        .await;
    }
    // The last events of each side may still be in flight: the states agree once both
    // servers have everything.
    eventually("both servers resolve to the same state", || async {
        state_of(&a, &alice, &room).await == state_of(&b, &bob, &room).await
    })
    .await;
    let state = state_of(&a, &alice, &room).await;
    assert!(state.iter().any(|(t, _, _)| t == "m.room.topic"));
}

fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_pdu_with_a_bad_signature_is_rejected_alone() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    // PDUs built by hand in the room version before 12, where auth events list the create event.
    let (room, alias) = public_room_of(&a, &alice, "sigs", Some("10")).await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    // Forge a transaction as B would send it, signed with B's own key.
    let forger = Forger::new(&a, &b, &room, &bob.user_id, ruma::RoomVersionId::V10);
    let state = state_ids(&a, &alice, &room).await;
    let auth: Vec<ruma::OwnedEventId> = [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", bob.user_id.as_str()),
    ]
    .iter()
    .map(|(t, k)| {
        ruma::OwnedEventId::try_from(state[&(t.to_string(), k.to_string())].as_str()).unwrap()
    })
    .collect();
    let latest = timeline(&a, &alice, &room).await.last().unwrap().0.clone();
    let latest = ruma::OwnedEventId::try_from(latest.as_str()).unwrap();
    let (good1, json1) = forger.message("good-1", &latest, &auth, 100);
    let (bad, json_bad) = forger.message("bad", &good1, &auth, 101);
    let (good3, json3) = forger.message("good-3", &good1, &auth, 101);
    // Replace the bad event's signature with the first event's: valid base64, wrong bytes.
    let mut bad_value: Value = serde_json::from_str(&json_bad).unwrap();
    let first: Value = serde_json::from_str(&json1).unwrap();
    bad_value["signatures"] = first["signatures"].clone();
    let (status, answer) = forger
        .send(
            "forged-1",
            vec![raw(&json1), raw(&bad_value.to_string()), raw(&json3)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["pdus"][good1.as_str()], json!({}), "{answer}");
    assert_eq!(answer["pdus"][good3.as_str()], json!({}), "{answer}");
    assert!(
        answer["pdus"][bad.as_str()]["error"].is_string(),
        "{answer}"
    );

    let seen = bodies(&timeline(&a, &alice, &room).await);
    assert!(seen.contains(&"good-1".to_owned()) && seen.contains(&"good-3".to_owned()));
    assert!(!seen.contains(&"bad".to_owned()));

    // A transaction without an X-Matrix signature is refused.
    let unsigned = insecure_client()
        .put(a.federation_url("/_matrix/federation/v1/send/unsigned-1"))
        .json(&json!({"origin": b.server_name(), "origin_server_ts": 1, "pdus": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
}

#[tokio::test]
async fn a_transaction_of_messages_a_state_change_and_a_fork_is_taken_in_order() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = public_room(&a, &alice, "batch").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    // Events as B would send them, signed with B's key, in room version 12 (the default):
    // the create event is implied by the room ID.
    let forger = Forger::new(&a, &b, &room, &bob.user_id, ruma::RoomVersionId::V12);
    let state = state_ids(&a, &alice, &room).await;
    let id_of = |t: &str, k: &str| {
        ruma::OwnedEventId::try_from(state[&(t.to_owned(), k.to_owned())].as_str()).unwrap()
    };
    let message_auth = vec![
        id_of("m.room.power_levels", ""),
        id_of("m.room.member", &bob.user_id),
    ];
    let mut member_auth = message_auth.clone();
    member_auth.push(id_of("m.room.join_rules", ""));
    let latest = timeline(&a, &alice, &room).await.last().unwrap().0.clone();
    let latest = ruma::OwnedEventId::try_from(latest.as_str()).unwrap();
    let m1 = forger.message("m1", &latest, &message_auth, 100);
    let m2 = forger.message("m2", &m1.0, &message_auth, 101);
    let m3 = forger.message("m3", &m2.0, &message_auth, 102);
    let renamed = json!({"membership": "join", "displayname": "Bob Batch"});
    let s4 = forger.event(
        "m.room.member",
        Some(&bob.user_id),
        renamed,
        &m3.0,
        &member_auth,
        103,
    );
    // After the change, bob's messages cite his new member event.
    let after_auth = vec![message_auth[0].clone(), s4.0.clone()];
    let m5 = forger.message("m5", &s4.0, &after_auth, 104);
    let m6 = forger.message("m6", &m5.0, &after_auth, 105);
    // A fork off m2: kept, but it does not follow every forward extremity.
    let f7 = forger.message("f7", &m2.0, &message_auth, 102);
    // m1 comes twice: one event.
    let all = [&m6, &f7, &m1, &s4, &m3, &m5, &m2, &m1];
    let (status, answer) = forger
        .send("batch-1", all.iter().map(|e| raw(&e.1)).collect())
        .await;
    assert_eq!(status, 200);
    for e in all {
        assert_eq!(answer["pdus"][e.0.as_str()], json!({}), "{answer}");
    }

    let seen = bodies(&timeline(&a, &alice, &room).await);
    for body in ["m1", "m2", "m3", "m5", "m6", "f7"] {
        assert_eq!(
            seen.iter().filter(|b| *b == body).count(),
            1,
            "{body} in {seen:?}"
        );
    }
    let pos = |b: &str| seen.iter().position(|x| x == b).unwrap();
    assert!(pos("m1") < pos("m2") && pos("m2") < pos("m3") && pos("m3") < pos("m5"));
    assert!(pos("m5") < pos("m6") && pos("m2") < pos("f7"));
    let (status, member) = a
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                enc(&bob.user_id)
            ),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(member["displayname"], "Bob Batch", "the state change took");

    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(a.config.database.url.as_deref().unwrap())
        .await
        .unwrap();
    let extremities: Vec<(String,)> = sqlx::query_as(
        "SELECT i.event_id FROM forward_extremities f JOIN event_ids i USING (event_nid)
         JOIN rooms r USING (room_nid) WHERE r.room_id = $1 ORDER BY 1",
    )
    .bind(&room)
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut expected = vec![m6.0.to_string(), f7.0.to_string()];
    expected.sort();
    assert_eq!(
        extremities.into_iter().map(|e| e.0).collect::<Vec<_>>(),
        expected,
        "the chain's end and the fork"
    );
}

#[tokio::test]
async fn typing_and_receipts_cross_servers() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = public_room(&a, &alice, "ephemeral").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    let (status, _) = b
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/typing/{}",
                enc(&bob.user_id)
            ),
            bob.t(),
            &json!({"typing": true, "timeout": 20000}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("alice sees bob typing", || async {
        let sync = a.sync(&alice, "").await;
        sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|evs| {
                evs.iter().any(|e| {
                    e["type"] == "m.typing"
                        && e["content"]["user_ids"]
                            .as_array()
                            .is_some_and(|u| u.iter().any(|u| u == bob.user_id.as_str()))
                })
            })
    })
    .await;

    let event_id = a.send_text(&alice, &room, "read me").await;
    eventually("bob has the message", || async {
        bodies(&timeline(&b, &bob, &room).await).contains(&"read me".to_owned())
    })
    .await;
    let (status, _) = b
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                enc(&event_id)
            ),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("alice sees bob's receipt", || async {
        let sync = a.sync(&alice, "").await;
        sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|evs| {
                evs.iter().any(|e| {
                    e["type"] == "m.receipt"
                        && e["content"][&event_id]["m.read"][bob.user_id.as_str()].is_object()
                })
            })
    })
    .await;

    // Presence: bob's change reaches alice's server, which shows it to co-members.
    let (status, _) = b
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)),
            bob.t(),
            &json!({"presence": "unavailable", "status_msg": "in a meeting"}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("alice sees bob's presence", || async {
        let (status, body) = a
            .get(
                &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)),
                alice.t(),
            )
            .await;
        status == 200 && body["presence"] == "unavailable" && body["status_msg"] == "in a meeting"
    })
    .await;
}

#[tokio::test]
async fn knocking_on_a_room_of_another_server() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "name": "Knock here",
                "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
            }),
        )
        .await;
    let (status, res) = b
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                enc(&room),
                a.server_name()
            ),
            bob.t(),
            &json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(status, 200, "knock: {res}");
    assert_eq!(
        membership(&a, &alice, &room, bob.user_id.as_str())
            .await
            .as_deref(),
        Some("knock")
    );
    let sync = b.sync(&bob, "").await;
    let knock_state = sync["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .expect("knock_state");
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock here")
    );

    // Let in: invite, then join through the resident server.
    let (status, _) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200);
    b.join(&bob, &room).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob joined", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
}

#[tokio::test]
async fn a_server_denied_by_the_acl_cannot_join() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    // ACLs match the host without its port: on loopback every test server is 127.0.0.1.
    let room = a
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "initial_state": [{"type": "m.room.server_acl", "state_key": "",
                                   "content": {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": true}}]
            }),
        )
        .await;
    let (status, res) = b
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room),
                a.server_name()
            ),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 403, "{res}");
    assert_eq!(res["errcode"], "M_FORBIDDEN");
    assert_eq!(
        membership(&a, &alice, &room, bob.user_id.as_str()).await,
        None
    );
}

#[tokio::test]
async fn encryption_plumbing_crosses_servers() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = public_room(&a, &alice, "secret").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    let since = a.sync(&alice, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // Bob uploads device keys: alice's server hears of the change and her client is told.
    let keys = json!({
        "user_id": bob.user_id, "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{}", bob.device_id): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI"},
        "signatures": {}
    });
    let (status, res) = b
        .post(
            "/_matrix/client/v3/keys/upload",
            bob.t(),
            &json!({"device_keys": keys}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    eventually(
        "alice's sync lists bob's device list as changed",
        || async {
            let sync = a.sync(&alice, &format!("?since={since}&timeout=0")).await;
            sync["device_lists"]["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|u| u == bob.user_id.as_str()))
        },
    )
    .await;
    let (status, res) = a
        .post(
            "/_matrix/client/v3/keys/query",
            alice.t(),
            &json!({"device_keys": {bob.user_id.clone(): []}}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(
        res["device_keys"][&bob.user_id][&bob.device_id].is_object(),
        "{res}"
    );

    // A to-device message from alice reaches bob's device on the other server, once.
    let bob_since = b.sync(&bob, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let (status, res) = a
        .put(
            "/_matrix/client/v3/sendToDevice/m.room_key_request/txn-1",
            alice.t(),
            &json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"body": "olm"}}}}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    eventually("bob receives the to-device message", || async {
        let sync = b.sync(&bob, &format!("?since={bob_since}&timeout=0")).await;
        sync["to_device"]["events"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["sender"] == alice.user_id.as_str() && e["content"]["body"] == "olm")
        })
    })
    .await;
}

/// The content of the room's current `kind` state event as `u` on `s` sees it.
async fn state_content(s: &TestServer, u: &User, room: &str, kind: &str) -> Option<Value> {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}"),
            u.t(),
        )
        .await;
    (status == 200).then_some(body)
}

#[tokio::test]
async fn a_version_12_room_joined_across_servers() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let carol = b.register("carol", "password-c").await;
    let (room, alias) = public_room_of(&a, &alice, "twelve", Some("12")).await;
    assert!(
        !room.contains(':'),
        "a version 12 room ID names no server: {room}"
    );
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    // B holds the create event the room ID stands for, and the room's state.
    let create = state_content(&b, &bob, &room, "m.room.create").await;
    assert_eq!(create.unwrap()["room_version"], "12");
    assert_eq!(
        state_ids(&b, &bob, &room).await,
        state_ids(&a, &alice, &room).await
    );

    // Messages both ways, each side waiting for the other's: one order on both servers.
    let mut expected = Vec::new();
    for i in 0..4 {
        for (s, u, peer, pu) in [(&a, &alice, &b, &bob), (&b, &bob, &a, &alice)] {
            let text = format!("{}-{i}", &u.user_id[1..2]);
            s.send_text(u, &room, &text).await;
            expected.push(text);
            let want = expected.clone();
            eventually("the other server has it", || async {
                bodies(&timeline(peer, pu, &room).await) == want
            })
            .await;
        }
    }
    assert_eq!(bodies(&timeline(&a, &alice, &room).await), expected);

    // An invite over federation, accepted through the inviter's server, then a leave.
    let (status, res) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    b.join(&carol, &room).await;
    let carol_id = carol.user_id.clone();
    eventually("A sees carol join", || async {
        membership(&a, &alice, &room, &carol_id).await.as_deref() == Some("join")
    })
    .await;
    let (status, _) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("A sees bob leave", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("leave")
    })
    .await;
    a.send_text(&alice, &room, "after bob left").await;
    eventually("carol still gets messages", || async {
        bodies(&timeline(&b, &carol, &room).await)
            .last()
            .map(String::as_str)
            == Some("after bob left")
    })
    .await;
}

#[tokio::test]
async fn a_version_12_fork_resolves_the_same_on_both_servers() {
    let mut a = TestServer::start_federating().await;
    let mut b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({
                "room_version": "12",
                "preset": "public_chat",
                "room_alias_name": "fork12",
                "power_level_content_override": {"users": {bob.user_id.as_str(): 100}}
            }),
        )
        .await;
    b.join(&bob, &format!("#fork12:{}", a.server_name())).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    // Each side writes while the other is down: B's moderator names the room and sets the
    // topic, A's creator sets another topic and takes the moderator's power away.
    a.stop().await;
    for (kind, content) in [
        ("m.room.topic", json!({"topic": "from b"})),
        ("m.room.name", json!({"name": "named on b"})),
    ] {
        let (st, body) = b
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/state/{kind}"),
                bob.t(),
                &content,
            )
            .await;
        assert_eq!(st, 200, "{body}");
    }
    b.send_text(&bob, &room, "b while a was down").await;
    b.stop().await;
    a.resume().await;
    let alice = User::from_response(&a.login("alice", "password-a").await.1);
    let (st, body) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            alice.t(),
            &json!({"topic": "from a"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let mut power = state_content(&a, &alice, &room, "m.room.power_levels")
        .await
        .unwrap();
    power["users"] = json!({});
    let (st, body) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"),
            alice.t(),
            &power,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    a.send_text(&alice, &room, "a while b was down").await;
    b.resume().await;
    let bob = User::from_response(&b.login("bob", "password-b").await.1);

    // Both servers get both branches and resolve them alike: the demotion comes first, so
    // the moderator's concurrent state no longer counts.
    for (server, user) in [(&a, &alice), (&b, &bob)] {
        eventually("both branches on both servers", || async {
            let seen = bodies(&timeline(server, user, &room).await);
            seen.contains(&"b while a was down".to_owned())
                && seen.contains(&"a while b was down".to_owned())
        })
        .await;
    }
    eventually("both servers resolve to the same state", || async {
        state_of(&a, &alice, &room).await == state_of(&b, &bob, &room).await
    })
    .await;
    for (server, user) in [(&a, &alice), (&b, &bob)] {
        let topic = state_content(server, user, &room, "m.room.topic").await;
        assert_eq!(topic.unwrap()["topic"], "from a");
        assert!(
            state_content(server, user, &room, "m.room.name")
                .await
                .is_none()
        );
        let power = state_content(server, user, &room, "m.room.power_levels").await;
        assert_eq!(power.unwrap()["users"], json!({}));
    }
}

#[tokio::test]
async fn the_conflicted_state_subgraph_is_the_auth_paths_between_conflicted_events() {
    let url = common::db::fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    // Auth edges (event -> auth event): 2->1, 3->2, 4->3, 5->2, 6->1, 7->4.
    let edges: Vec<(i64, i64)> = vec![(2, 1), (3, 2), (4, 3), (5, 2), (6, 1), (7, 4)];
    let mut tx = pool.begin().await.unwrap();
    trellis::db::events::insert_auth_edges_many(&mut tx, &edges)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let walk = |conflicted: Vec<i64>, also: Vec<i64>, cap: i64| {
        let pool = pool.clone();
        async move {
            let (mut nids, truncated) =
                trellis::db::graph::conflicted_subgraph(&pool, &conflicted, &also, cap)
                    .await
                    .unwrap();
            nids.sort_unstable();
            (nids, truncated)
        }
    };
    // 3 lies between 4 and 2; 1 (below both), 5 and 7 (above one only) do not.
    assert_eq!(walk(vec![4, 2], vec![], 100).await, (vec![2, 3, 4], false));
    // Two branches meeting only at a common ancestor: nothing in between.
    assert_eq!(walk(vec![7, 5], vec![], 100).await, (vec![5, 7], false));
    // An event not stored yet (100, with auth event 3) reaches 2 through 3.
    assert_eq!(
        walk(vec![100, 2], vec![3], 100).await,
        (vec![2, 3, 100], false)
    );
    // The walk stops at its cap and says so.
    assert!(walk(vec![7, 2], vec![], 2).await.1);
    pool.close().await;
}

/// Another server's invitee and knocker see the room's recommended stripped state (the
/// invite's `invite_room_state` and the knock's `knock_room_state`).
#[tokio::test]
async fn invites_and_knocks_across_servers_carry_the_recommended_stripped_state() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let carol = b.register("carol", "password-c").await;
    let room = a
        .create_room(&alice, room_with_every_stripped_state())
        .await;

    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "invite: {body}");
    let sync = b.sync(&bob, "").await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    assert_eq!(stripped_types(invite), RECOMMENDED, "{invite}");

    let (status, body) = b
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                enc(&room),
                a.server_name()
            ),
            carol.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "knock: {body}");
    let sync = b.sync(&carol, "").await;
    let knock = &sync["rooms"]["knock"][&room]["knock_state"]["events"];
    assert_eq!(stripped_types(knock), RECOMMENDED, "{knock}");
    let encryption = knock
        .as_array()
        .and_then(|k| k.iter().find(|e| e["type"] == "m.room.encryption"))
        .expect("encryption");
    assert_eq!(encryption["content"]["algorithm"], "m.megolm.v1.aes-sha2");
}

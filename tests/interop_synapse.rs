//! Interop with a real Synapse, run by `scripts/interop`: that script starts Synapse on
//! loopback and names it in `INTEROP_SYNAPSE_URL` (client API) and
//! `INTEROP_SYNAPSE_SERVER_NAME`; each test here starts its own Trellis server beside it, the two
//! federate over TLS on loopback, and every case is checked through both servers' client APIs.
//! Without that Synapse the tests are ignored (and fail with a message if forced to run).

mod common;

mod interop;

use std::collections::HashSet;
use std::time::Duration;

use common::federation::eventually;
use common::server::{TestServer, enc};
use interop::{Side, Synapse, synapse, trellis_side};
use serde_json::{Value, json};

/// Synapse, and a new Trellis server beside it.
async fn servers() -> (Synapse, TestServer) {
    (synapse(), TestServer::start_federating().await)
}

/// A new user on each server: alice on Trellis, bob on Synapse.
async fn users<'s, 't>(syn: &'s Synapse, t: &'t TestServer) -> (Side<'t>, Side<'s>) {
    (trellis_side(t, "alice").await, syn.side("bob").await)
}

/// A room made by a Synapse user who names no room version is in Synapse's default version
/// (12 in Synapse 1.163); a Trellis user must be able to join it and talk in it.
#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn a_trellis_user_joins_a_room_of_synapses_default_version() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    let (status, body) = bob
        .api
        .get("/_matrix/client/v3/capabilities", bob.user.t())
        .await;
    assert_eq!(status, 200, "{body}");
    let default = body["capabilities"]["m.room_versions"]["default"].clone();
    let room = bob
        .create_room(json!({"preset": "public_chat", "room_version": default}))
        .await;
    alice.join_via(&room, &bob).await;
    bob.wait_membership(&room, &alice.user.user_id, "join")
        .await;
    let id = alice.send(&room, "hello in the default version").await;
    bob.wait_event(&room, &id).await;
    let id = bob.send(&room, "hello back").await;
    alice.wait_event(&room, &id).await;
}

/// `guest` joins a room on `host`'s server; the two exchange messages and state, each
/// waiting for the other's event before answering, so the graph is a line; both servers then
/// list the same events once in the same order. Then `guest` leaves.
async fn join_talk_and_leave(host: &Side<'_>, guest: &Side<'_>) {
    let room = host
        .create_room(json!({
            "preset": "public_chat",
            "name": "interop",
        }))
        .await;
    guest.join_via(&room, host).await;
    host.wait_membership(&room, &guest.user.user_id, "join")
        .await;
    guest
        .wait_membership(&room, &host.user.user_id, "join")
        .await;

    // The guest may set state: a power level change made on one server, checked on both.
    let mut levels = host
        .state(&room, "m.room.power_levels", "")
        .await
        .expect("power levels");
    levels["users"][&guest.user.user_id] = json!(50);
    let id = host
        .put_state(&room, "m.room.power_levels", "", &levels)
        .await;
    guest.wait_event(&room, &id).await;
    let mut sent = vec![id];
    for i in 0..3 {
        let id = host.send(&room, &format!("from-host-{i}")).await;
        guest.wait_event(&room, &id).await;
        sent.push(id);
        let id = guest.send(&room, &format!("from-guest-{i}")).await;
        host.wait_event(&room, &id).await;
        sent.push(id);
    }
    let topic = json!({"topic": "set by the host"});
    let id = host.put_state(&room, "m.room.topic", "", &topic).await;
    guest.wait_event(&room, &id).await;
    sent.push(id);
    let mark = json!({"set_by": guest.user.user_id});
    let id = guest
        .put_state(&room, "org.trellis.interop", &guest.user.user_id, &mark)
        .await;
    host.wait_event(&room, &id).await;
    sent.push(id);

    let on_host = ids(&host.timeline(&room).await);
    let on_guest = ids(&guest.timeline(&room).await);
    assert_eq!(
        on_host, on_guest,
        "both servers list the room's events in the same order"
    );
    let ours: Vec<String> = on_host
        .iter()
        .filter(|id| sent.contains(id))
        .cloned()
        .collect();
    assert_eq!(ours, sent, "every exchanged event once, in order");
    for side in [host, guest] {
        assert_eq!(
            side.state(&room, "m.room.topic", "").await,
            Some(topic.clone())
        );
        assert_eq!(
            side.state(&room, "org.trellis.interop", &guest.user.user_id)
                .await,
            Some(mark.clone())
        );
    }

    let since = guest.sync_token().await;
    guest.leave(&room).await;
    host.wait_membership(&room, &guest.user.user_id, "leave")
        .await;
    guest
        .sync_since_until(&since, "the room among left rooms", |sync| {
            sync["rooms"]["leave"][room.as_str()].is_object()
        })
        .await;
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn a_synapse_user_joins_talks_in_and_leaves_a_trellis_room() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    join_talk_and_leave(&alice, &bob).await;
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn a_trellis_user_joins_talks_in_and_leaves_a_synapse_room() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    join_talk_and_leave(&bob, &alice).await;
}

/// `host` invites `guest` to two private rooms: `guest` sees each invite in /sync, accepts
/// the first (joining through the inviting server) and rejects the second.
async fn invite_accept_and_reject(host: &Side<'_>, guest: &Side<'_>) {
    let accepted = host
        .create_room(json!({"preset": "private_chat", "name": "accepted"}))
        .await;
    let rejected = host
        .create_room(json!({"preset": "private_chat", "name": "rejected"}))
        .await;
    let since = guest.sync_token().await;
    for room in [&accepted, &rejected] {
        host.invite(room, &guest.user.user_id).await;
    }
    let invites = guest
        .sync_since_until(&since, "both invites", |sync| {
            [&accepted, &rejected]
                .iter()
                .all(|r| sync["rooms"]["invite"][r.as_str()].is_object())
        })
        .await;
    let stripped = &invites["rooms"]["invite"][accepted.as_str()]["invite_state"]["events"];
    assert!(
        stripped.as_array().is_some_and(|s| s
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "accepted")),
        "the invite carries the room's stripped state: {stripped}"
    );

    guest.join_plain(&accepted).await;
    host.wait_membership(&accepted, &guest.user.user_id, "join")
        .await;
    let id = guest.send(&accepted, "accepted the invite").await;
    host.wait_event(&accepted, &id).await;

    let since = invites["next_batch"].as_str().expect("next_batch");
    guest.leave(&rejected).await;
    host.wait_membership(&rejected, &guest.user.user_id, "leave")
        .await;
    guest
        .sync_since_until(since, "the rejected invite among left rooms", |sync| {
            sync["rooms"]["invite"][rejected.as_str()].is_null()
                && sync["rooms"]["leave"][rejected.as_str()].is_object()
        })
        .await;
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn invites_from_trellis_to_synapse_are_accepted_and_rejected() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    invite_accept_and_reject(&alice, &bob).await;
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn invites_from_synapse_to_trellis_are_accepted_and_rejected() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    invite_accept_and_reject(&bob, &alice).await;
}

/// `host` writes history before `guest` joins; `guest` then pages back through it on its
/// own server, which must fetch it from `host`'s (/backfill): every message once, in order,
/// back to the room's creation.
async fn late_joiner_pages_back(host: &Side<'_>, guest: &Side<'_>) {
    let room = host
        .create_room(json!({"preset": "public_chat", "name": "history"}))
        .await;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(host.send(&room, &format!("history-{i}")).await);
    }
    guest.join_via(&room, host).await;
    host.wait_membership(&room, &guest.user.user_id, "join")
        .await;

    let events = guest.timeline(&room).await;
    let messages: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(messages, sent, "every message once, in order");
    assert_eq!(events[0]["type"], "m.room.create", "back to the start");
    assert_eq!(
        ids(&events),
        ids(&host.timeline(&room).await),
        "the same history on both servers"
    );
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn a_synapse_user_back_paginates_trellis_history() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    late_joiner_pages_back(&alice, &bob).await;
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn a_trellis_user_back_paginates_synapse_history() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    late_joiner_pages_back(&bob, &alice).await;
}

/// Trellis is stopped while Synapse carries on in a Synapse room; when it is back, Synapse
/// catches it up with the latest event only, whose ancestors Trellis lacks. A short gap is filled with /get_missing_events; a gap
/// longer than Trellis asks for is bridged with /state_ids and /event (the state after it,
/// including a topic changed inside the gap, must be right) and /messages pages through it.
#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn trellis_fills_gaps_in_a_synapse_room() {
    let syn = synapse();
    let mut t = TestServer::start_with(|c| {
        common::server::make_federating(c);
        c.federation.max_missing_events = 5;
    })
    .await;
    let (alice, bob) = users(&syn, &t).await;
    let room = bob
        .create_room(json!({"preset": "public_chat", "name": "gaps"}))
        .await;
    alice.join_via(&room, &bob).await;
    bob.wait_membership(&room, &alice.user.user_id, "join")
        .await;
    let alice_user = alice.user.clone();
    let mut sent = vec![bob.send(&room, "before").await];
    // Synapse catches a server up only from a PDU it once delivered there.
    alice.wait_event(&room, &sent[0]).await;

    for (gap, len) in [("short", 3), ("long", 12)] {
        t.stop().await;
        // The first event fails to go and starts a backoff; those sent during the backoff
        // make Synapse drop its queue for Trellis and remember to catch it up instead.
        let failures = interop::failed_transactions_to(t.server_name());
        sent.push(bob.send(&room, &format!("{gap}-gap-0")).await);
        eventually("Synapse fails to reach the stopped Trellis", || async {
            interop::failed_transactions_to(t.server_name()) > failures
        })
        .await;
        for i in 1..len {
            sent.push(bob.send(&room, &format!("{gap}-gap-{i}")).await);
        }
        let topic = json!({"topic": format!("changed during the {gap} gap")});
        sent.push(bob.put_state(&room, "m.room.topic", "", &topic).await);
        t.resume().await;
        let alice = Side::trellis(&t, alice_user.clone());
        // Synapse dropped what it could not send and backs off for hours: a request from
        // Trellis tells it Trellis is back, and it catches up with the room's latest event.
        alice.contact(&bob).await;
        let last = bob.send(&room, &format!("after the {gap} gap")).await;
        sent.push(last.clone());
        alice.wait_event(&room, &last).await;
        assert_eq!(
            alice.state(&room, "m.room.topic", "").await,
            Some(topic),
            "the state after the {gap} gap"
        );
        let seen: Vec<String> = ids(&alice.timeline(&room).await)
            .into_iter()
            .filter(|id| sent.contains(id))
            .collect();
        assert_eq!(
            seen, sent,
            "every event across the {gap} gap once, in order"
        );
        let used = interop::requests_to_synapse_from(t.server_name());
        let called = |endpoint: &str| used.iter().any(|r| r.contains(endpoint));
        assert!(
            called("/_matrix/federation/v1/get_missing_events/"),
            "the {gap} gap was filled with /get_missing_events: {used:#?}"
        );
        if gap == "long" {
            assert!(
                called("/_matrix/federation/v1/state_ids/")
                    && called("/_matrix/federation/v1/event/"),
                "the long gap was bridged with /state_ids and /event: {used:#?}"
            );
        }
    }
}

/// `host` writes messages a few milliseconds apart before `guest` joins; `guest` looks them
/// up by time on its own server, which holds none of them and must ask `host`'s.
async fn timestamps_across(host: &Side<'_>, guest: &Side<'_>) {
    let room = host
        .create_room(json!({"preset": "public_chat", "name": "clock"}))
        .await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = host.send(&room, &format!("tick-{i}")).await;
        let ts = host.event(&room, &id).await["origin_server_ts"]
            .as_i64()
            .expect("origin_server_ts");
        sent.push((id, ts));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    guest.join_via(&room, host).await;
    for (dir, ts, want) in [
        ("f", sent[1].1 + 1, &sent[2]),
        ("b", sent[4].1 - 1, &sent[3]),
    ] {
        let (status, found) = guest
            .api
            .get(
                &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}"),
                guest.user.t(),
            )
            .await;
        assert_eq!(status, 200, "timestamp_to_event dir={dir}: {found}");
        assert_eq!(found["event_id"], want.0.as_str(), "dir={dir}: {found}");
        assert_eq!(found["origin_server_ts"], want.1, "dir={dir}");
    }
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn synapse_finds_trellis_events_by_timestamp() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    timestamps_across(&alice, &bob).await;
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn trellis_finds_synapse_events_by_timestamp() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    timestamps_across(&bob, &alice).await;
}

/// `owner` makes a space on its server whose child room `other` made on the other server;
/// `owner` is not in the child, so its server's /hierarchy must ask the other server.
async fn space_with_a_remote_child(owner: &Side<'_>, other: &Side<'_>) {
    let child = other
        .create_room(json!({
            "preset": "public_chat",
            "name": "remote child",
            "topic": "lives on the other server",
        }))
        .await;
    let space = owner
        .create_room(json!({
            "preset": "public_chat",
            "name": "space",
            "creation_content": {"type": "m.space"},
        }))
        .await;
    owner
        .put_state(
            &space,
            "m.space.child",
            &child,
            &json!({"via": [other.server]}),
        )
        .await;
    let (status, body) = owner
        .api
        .get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space)),
            owner.user.t(),
        )
        .await;
    assert_eq!(status, 200, "hierarchy: {body}");
    let rooms = body["rooms"].as_array().expect("rooms");
    let found = rooms
        .iter()
        .find(|r| r["room_id"] == child.as_str())
        .unwrap_or_else(|| panic!("the remote child is listed: {body}"));
    assert_eq!(found["name"], "remote child");
    assert_eq!(found["topic"], "lives on the other server");
    assert_eq!(found["num_joined_members"], 1);
    assert_eq!(found["join_rule"], "public");
    let top = rooms
        .iter()
        .find(|r| r["room_id"] == space.as_str())
        .expect("the space itself");
    assert_eq!(top["room_type"], "m.space");
    assert!(
        top["children_state"]
            .as_array()
            .is_some_and(|c| c.iter().any(|e| e["state_key"] == child.as_str())),
        "the space lists its child: {top}"
    );
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn trellis_hierarchy_shows_a_child_on_synapse() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    space_with_a_remote_child(&alice, &bob).await;
}

#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn synapse_hierarchy_shows_a_child_on_trellis() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    space_with_a_remote_child(&bob, &alice).await;
}

/// Typing notices and read receipts cross in both directions in a Trellis room.
#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn typing_and_receipts_cross_both_ways() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "ephemeral"}))
        .await;
    bob.join_via(&room, &alice).await;
    alice
        .wait_membership(&room, &bob.user.user_id, "join")
        .await;

    for (from, to) in [(&alice, &bob), (&bob, &alice)] {
        let since = to.sync_token().await;
        from.typing(&room, true).await;
        let who = from.user.user_id.clone();
        let typing = to
            .sync_since_until(&since, "the other server's user typing", |sync| {
                ephemeral(sync, &room, "m.typing").any(|e| {
                    e["content"]["user_ids"]
                        .as_array()
                        .is_some_and(|u| u.iter().any(|u| u == who.as_str()))
                })
            })
            .await;
        let since = typing["next_batch"].as_str().expect("next_batch");
        from.typing(&room, false).await;
        to.sync_since_until(since, "the typing notice withdrawn", |sync| {
            ephemeral(sync, &room, "m.typing").any(|e| {
                e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| !u.iter().any(|u| u == who.as_str()))
            })
        })
        .await;
    }

    for (reader, writer) in [(&alice, &bob), (&bob, &alice)] {
        let id = writer.send(&room, "read me").await;
        reader.wait_event(&room, &id).await;
        let since = writer.sync_token().await;
        let (status, body) = reader
            .api
            .post(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                    enc(&id)
                ),
                reader.user.t(),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "receipt: {body}");
        let who = reader.user.user_id.clone();
        writer
            .sync_since_until(&since, "the other server's read receipt", |sync| {
                ephemeral(sync, &room, "m.receipt")
                    .any(|e| e["content"][&id]["m.read"][&who]["ts"].is_u64())
            })
            .await;
    }
}

fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |e| e["type"] == kind)
}

/// An encrypted room across the two servers: device keys queried and one-time keys claimed
/// from the other server, an encrypted event delivered intact, a new device announced to the
/// other side (device list update) and a to-device message sent across, both ways.
#[tokio::test]
#[ignore = "needs a running Synapse: run scripts/interop"]
async fn encrypted_room_keys_and_device_lists_cross_both_ways() {
    let (syn, t) = servers().await;
    let (alice, bob) = users(&syn, &t).await;
    alice.upload_keys().await;
    bob.upload_keys().await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "invite": [bob.user.user_id],
            "initial_state": [{
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }],
        }))
        .await;
    bob.wait_invite(&room).await;
    bob.join_plain(&room).await;
    alice
        .wait_membership(&room, &bob.user.user_id, "join")
        .await;
    assert_eq!(
        bob.state(&room, "m.room.encryption", "").await,
        Some(json!({"algorithm": "m.megolm.v1.aes-sha2"}))
    );

    for (asker, owner) in [(&alice, &bob), (&bob, &alice)] {
        let keys = asker.query_keys(&owner.user.user_id).await;
        let device = &keys["device_keys"][&owner.user.user_id][&owner.user.device_id];
        assert_eq!(
            device["keys"],
            interop::device_keys(&owner.user)["keys"],
            "{} sees the other server's device keys: {keys}",
            asker.server
        );
        let claimed = asker.claim_key(&owner.user).await;
        let otk = &claimed["one_time_keys"][&owner.user.user_id][&owner.user.device_id];
        assert_eq!(
            otk["signed_curve25519:AAAAAQ"]["key"],
            interop::one_time_key(&owner.user),
            "{} claims a one-time key from the other server: {claimed}",
            asker.server
        );
    }

    let encrypted = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnB6b3RhdG8tY2lwaGVydGV4dA",
        "sender_key": "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
        "device_id": alice.user.device_id,
        "session_id": "interop-session",
    });
    let id = alice
        .send_event(&room, "m.room.encrypted", &encrypted)
        .await;
    bob.wait_event(&room, &id).await;
    assert_eq!(bob.event(&room, &id).await["content"], encrypted);

    for (from, to) in [(&alice, &bob), (&bob, &alice)] {
        // A new device of `from` reaches `to`'s server as a device list update.
        let since = to.sync_token().await;
        let second = from.new_device().await;
        let who = from.user.user_id.clone();
        to.sync_since_until(&since, "the other server's new device", |sync| {
            sync["device_lists"]["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|u| u == who.as_str()))
        })
        .await;
        let keys = to.query_keys(&from.user.user_id).await;
        let devices: HashSet<&str> = keys["device_keys"][&from.user.user_id]
            .as_object()
            .map(|d| d.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            devices,
            HashSet::from([from.user.device_id.as_str(), second.device_id.as_str()]),
            "both devices of the other server's user: {keys}"
        );

        let since = to.sync_token().await;
        from.send_to_device(
            &to.user,
            json!({"note": format!("to-device from {}", from.server)}),
        )
        .await;
        let sender = from.user.user_id.clone();
        to.sync_since_until(&since, "the to-device message", |sync| {
            sync["to_device"]["events"].as_array().is_some_and(|evs| {
                evs.iter()
                    .any(|e| e["sender"] == sender.as_str() && e["type"] == "org.trellis.interop")
            })
        })
        .await;
    }
}

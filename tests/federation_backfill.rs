//! Trellis as the asking server: back-paginating history it never received (/backfill),
//! and filling gaps before an incoming event (/get_missing_events, then /state_ids).

mod common;

use common::federation::{eventually, membership};
use common::server::{TestServer, User, enc};
use serde_json::{Value, json};

/// Page back through the whole room as `u` on `s`, `limit` at a time; message bodies newest
/// first.
async fn page_back_all(s: &TestServer, u: &User, room: &str, limit: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..200 {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={limit}");
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let (status, page) = s.get(&path, u.t()).await;
        assert_eq!(status, 200, "{page}");
        for e in page["chunk"].as_array().expect("chunk") {
            if e["type"] == "m.room.message" {
                out.push(e["content"]["body"].as_str().unwrap_or("").to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

async fn joined_pair(name: &str) -> (TestServer, TestServer, User, User, String) {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": name}),
        )
        .await;
    (a, b, alice, bob, room)
}

#[tokio::test]
async fn a_late_joiner_pages_back_through_the_whole_history() {
    let (a, b, alice, bob, room) = joined_pair("history").await;
    for i in 0..500 {
        a.send_text(&alice, &room, &format!("h{i}")).await;
    }
    b.join(&bob, &format!("#history:{}", a.server_name())).await;

    // Local data only: B holds nothing before the join.
    let (status, page) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&backfill=false"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .all(|e| e["type"] != "m.room.message"),
        "{page}"
    );

    let seen = page_back_all(&b, &bob, &room, 50).await;
    let want: Vec<String> = (0..500).rev().map(|i| format!("h{i}")).collect();
    assert_eq!(seen, want, "every event once, in order");
    // /sync never shows history as new.
    let sync = b.sync(&bob, "").await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert!(
        timeline.as_array().is_some_and(|t| t.len() <= 20),
        "{timeline}"
    );
}

/// Make `a` forget that it owes `dest` anything (as if those events were lost on the way).
async fn drop_queue(a: &TestServer, dest: &TestServer) {
    let url = a.config.database.url.clone().expect("database url");
    let db = sqlx::PgPool::connect(&url).await.expect("db");
    sqlx::query("DELETE FROM federation_outbox WHERE destination = $1")
        .bind(dest.server_name())
        .execute(&db)
        .await
        .expect("delete");
}

async fn bodies_on(s: &TestServer, u: &User, room: &str) -> Vec<String> {
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000&backfill=false"),
            u.t(),
        )
        .await;
    page["chunk"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn gaps_are_filled_by_missing_events_or_by_state() {
    let (a, mut b, alice, bob, room) = joined_pair("gaps").await;
    b.join(&bob, &format!("#gaps:{}", a.server_name())).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    // 30 events B never receives, then one it does: get_missing_events closes the gap.
    b.stop().await;
    for i in 0..30 {
        a.send_text(&alice, &room, &format!("lost{i}")).await;
    }
    drop_queue(&a, &b).await;
    b.resume().await;
    let (_, login) = b.login("bob", "password-b").await;
    let bob = User::from_response(&login);
    a.send_text(&alice, &room, "after-small-gap").await;
    eventually("B has the 30 missed events and the new one", || async {
        let seen = bodies_on(&b, &bob, &room).await;
        seen.first().map(String::as_str) == Some("after-small-gap") && seen.len() == 31
    })
    .await;

    // 500 events lost: more than get_missing_events may fetch; the event is accepted on the
    // state A reports before it, and the rest of history comes by backfill.
    b.stop().await;
    for i in 0..500 {
        a.send_text(&alice, &room, &format!("gone{i}")).await;
    }
    drop_queue(&a, &b).await;
    b.resume().await;
    let (_, login) = b.login("bob", "password-b").await;
    let bob = User::from_response(&login);
    a.send_text(&alice, &room, "after-big-gap").await;
    eventually("B accepted the event after the big gap", || async {
        bodies_on(&b, &bob, &room).await.first().map(String::as_str) == Some("after-big-gap")
    })
    .await;
    // B can send on top of it: the room stays usable.
    b.send_text(&bob, &room, "still here").await;
    eventually("A gets bob's message", || async {
        let (_, page) = a
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
                alice.t(),
            )
            .await;
        page["chunk"].as_array().is_some_and(|c| {
            c.iter()
                .any(|e: &Value| e["content"]["body"] == "still here")
        })
    })
    .await;
}

#[tokio::test]
async fn recover_room_rebuilds_a_room_after_the_database_was_lost() {
    let (a, mut b, alice, bob, room) = joined_pair("recover").await;
    b.join(&bob, &format!("#recover:{}", a.server_name())).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    a.send_text(&alice, &room, "before the loss").await;

    // B loses its database; its name and signing key stay.
    b.stop().await;
    b.config.database.url = Some(common::db::fresh_database().await);
    b.resume().await;
    let bob = b.register("bob", "password-b").await;
    let (status, _) = b
        .get(&format!("/_matrix/client/v3/rooms/{room}/state"), bob.t())
        .await;
    assert_eq!(status, 404, "the room is gone from B");

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("trellis.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&b.config).expect("config toml"),
    )
    .expect("write");
    // Asynchronously: the servers run on this test's runtime and must keep answering.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "admin",
            "recover-room",
            &room,
            "--via",
            a.server_name(),
            "--config",
        ])
        .arg(&config_path)
        .output()
        .await
        .expect("run trellis admin");
    assert!(
        out.status.success(),
        "recover-room failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bob is a member again without a new invite, and can talk. The recovery wrote from
    // another process: the running server may take a moment to see the room as rebuilt.
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let member_path = format!(
        "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
        common::server::enc(&bob.user_id)
    );
    eventually(
        &format!("B sees bob joined again (recover-room said: {stderr})"),
        || async {
            let (status, member) = b.get(&member_path, bob.t()).await;
            (status, member["membership"].as_str()) == (200, Some("join"))
        },
    )
    .await;
    b.send_text(&bob, &room, "back again").await;
    eventually("A gets bob's message", || async {
        let (_, page) = a
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
                alice.t(),
            )
            .await;
        page["chunk"].as_array().is_some_and(|c| {
            c.iter()
                .any(|e: &Value| e["content"]["body"] == "back again")
        })
    })
    .await;
    // A bad room ID is refused with a clear message.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "admin",
            "recover-room",
            "not-a-room",
            "--via",
            a.server_name(),
            "--config",
        ])
        .arg(&config_path)
        .output()
        .await
        .expect("run trellis admin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid room ID"));
}

#[tokio::test]
async fn timestamp_to_event_asks_other_servers_across_a_gap() {
    let (a, b, alice, bob, room) = joined_pair("timeline").await;
    for i in 0..5 {
        a.send_text(&alice, &room, &format!("early{i}")).await;
    }
    b.join(&bob, &format!("#timeline:{}", a.server_name()))
        .await;
    let (_, create) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create"),
            alice.t(),
        )
        .await;
    assert!(create.is_object());
    let (_, state) = a
        .get(&format!("/_matrix/client/v3/rooms/{room}/state"), alice.t())
        .await;
    let create_id = state
        .as_array()
        .expect("state")
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .and_then(|e| e["event_id"].as_str())
        .expect("create event")
        .to_owned();
    // B holds nothing before bob's join: its nearest event after 0 sits next to the gap, so
    // A is asked and its answer (the room's first event) wins.
    let (status, found) = b
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=0&dir=f"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], create_id.as_str());
}

/// Jumping to a date in a room joined late: the event another server names is fetched and
/// stored with the history before it, so the client can open it (/event, /context) and page
/// from it.
#[tokio::test]
async fn an_event_found_by_timestamp_elsewhere_can_be_opened_here() {
    let (a, b, alice, bob, room) = joined_pair("jump").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(a.send_text(&alice, &room, &format!("early{i}")).await);
        // Each send stamped after the last answer plus this pause: no two share a millisecond.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (_, early5) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[5]),
            alice.t(),
        )
        .await;
    let ts = early5["origin_server_ts"]
        .as_i64()
        .expect("origin_server_ts");
    b.join(&bob, &format!("#jump:{}", a.server_name())).await;
    // B holds nothing of that time: it asks A.
    let (status, found) = b
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], ids[5].as_str());
    let (status, event) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[5]),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["body"], "early5");
    let (status, context) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", ids[5]),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{context}");
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(before, ["early4", "early3"], "{context}");

    // Backwards from just before early7: B now holds early5 and what precedes it, but
    // nothing after it up to bob's join; early5 sits next to that gap, so A is asked again
    // and its nearer answer (early6) wins.
    let (_, early7) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[7]),
            alice.t(),
        )
        .await;
    let ts = early7["origin_server_ts"]
        .as_i64()
        .expect("origin_server_ts")
        - 1;
    let (status, found) = b
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=b"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], ids[6].as_str(), "{found}");
}

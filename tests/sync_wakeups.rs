//! Which news wakes a waiting /sync: only news for its user (events in their rooms,
//! membership about them, their devices' to-device messages, their account data, typing and
//! receipts in their rooms, presence and keys of co-members), and none of it is lost.
//!
//! A sync that is not woken answers at its timeout with the token it was given: had it been
//! woken and read again, its token would have moved with the news it found nothing in.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::server::{TestServer, User};
use serde_json::{Value, json};

/// Long-poll timeout for syncs that must not wake.
const IDLE_MS: u64 = 1500;
/// Long-poll timeout for syncs that must wake (they answer long before it).
const WAKE_MS: u64 = 20_000;

fn next(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Long-poll as `u` from `since` while `act` runs (after a pause that lets the sync start
/// waiting); returns the answer and how long it took.
async fn poll_while<F: Future<Output = ()>>(
    s: &TestServer,
    u: &User,
    since: &str,
    timeout_ms: u64,
    act: F,
) -> (Value, Duration) {
    let query = format!("?since={since}&timeout={timeout_ms}");
    let started = Instant::now();
    let (res, ()) = tokio::join!(s.sync(u, &query), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        act.await;
    });
    (res, started.elapsed())
}

/// The sync slept through: it answered at its timeout with nothing and the same token.
fn assert_not_woken(res: &Value, since: &str, took: Duration, what: &str) {
    assert!(
        took >= Duration::from_millis(IDLE_MS - 100),
        "{what}: answered after {took:?}, before the timeout: {res}"
    );
    assert_eq!(res["next_batch"], since, "{what}: the token moved: {res}");
    assert!(
        res["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "{what}: {res}"
    );
}

fn assert_woken(took: Duration, what: &str) {
    assert!(
        took < Duration::from_secs(10),
        "{what}: woke only after {took:?}"
    );
}

fn bodies(res: &Value, room: &str) -> Vec<String> {
    res["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn send(s: &TestServer, u: &User, room: &str, body: &str) {
    s.send_text(u, room, body).await;
}

/// PUT or POST (`put`) `body` to `path` as `u`, asserting success.
async fn ok(s: &TestServer, put: bool, u: &User, path: String, body: Value) {
    let path = format!("/_matrix/client/v3{path}");
    let (status, res) = match put {
        true => s.put(&path, u.t(), &body).await,
        false => s.post(&path, u.t(), &body).await,
    };
    assert_eq!(status, 200, "{path}: {res}");
}

async fn typing(s: &TestServer, u: &User, room: &str, on: bool) {
    let path = format!("/rooms/{room}/typing/{}", u.user_id);
    ok(s, true, u, path, json!({"typing": on, "timeout": 10000})).await;
}

async fn presence(s: &TestServer, u: &User) {
    let path = format!("/presence/{}/status", u.user_id);
    ok(
        s,
        true,
        u,
        path,
        json!({"presence": "online", "status_msg": "hi"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wake_only_members_of_their_room() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let x = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &x).await;
    let y = s
        .create_room(&carol, json!({"preset": "public_chat"}))
        .await;
    let since = next(&s.sync(&bob, "?timeout=0").await);

    // Messages, state and typing in a room Bob is not in leave his sync asleep.
    let (res, took) = poll_while(&s, &bob, &since, IDLE_MS, async {
        send(&s, &carol, &y, "not for bob").await;
        let topic = json!({"topic": "elsewhere"});
        ok(
            &s,
            true,
            &carol,
            format!("/rooms/{y}/state/m.room.topic/"),
            topic,
        )
        .await;
        typing(&s, &carol, &y, true).await;
        typing(&s, &carol, &y, false).await;
    })
    .await;
    assert_not_woken(&res, &since, took, "activity in another room");

    // A message in his room wakes it, with just that message.
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, async {
        send(&s, &alice, &x, "for bob").await;
    })
    .await;
    assert_woken(took, "a message in his room");
    assert_eq!(bodies(&res, &x), vec!["for bob"], "{res}");
    assert!(res["rooms"]["join"].get(&y).is_none(), "{res}");
    let since = next(&res);

    // So does typing in his room.
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, typing(&s, &alice, &x, true)).await;
    assert_woken(took, "typing in his room");
    let shown = &res["rooms"]["join"][&x]["ephemeral"]["events"][0];
    assert_eq!(shown["type"], "m.typing", "{res}");
    assert_eq!(shown["content"]["user_ids"], json!([alice.user_id]));
    // Alice stops, so no expiry wakes him later.
    typing(&s, &alice, &x, false).await;
    let since = next(
        &s.sync(&bob, &format!("?since={}&timeout=0", next(&res)))
            .await,
    );

    // And an invite to the other room, which he was not in when the sync started.
    let target = json!({"user_id": bob.user_id});
    let invite = ok(
        &s,
        false,
        &carol,
        format!("/rooms/{y}/invite"),
        target.clone(),
    );
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, invite).await;
    assert_woken(took, "an invite");
    assert!(res["rooms"]["invite"].get(&y).is_some(), "{res}");
    let since = next(&res);

    // Once he joins, the room's messages wake him too.
    s.join(&bob, &y).await;
    let since = next(&s.sync(&bob, &format!("?since={since}&timeout=0")).await);
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, async {
        send(&s, &carol, &y, "now for bob").await;
    })
    .await;
    assert_woken(took, "a message in a room he joined");
    assert_eq!(bodies(&res, &y), vec!["now for bob"], "{res}");
    let since = next(&res);

    // Being kicked wakes him, and the room moves to `leave`.
    let kick = ok(&s, false, &carol, format!("/rooms/{y}/kick"), target);
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, kick).await;
    assert_woken(took, "a kick");
    assert!(res["rooms"]["leave"].get(&y).is_some(), "{res}");
    let since = next(&res);

    // After that, the room's messages are no news for him.
    let (res, took) = poll_while(&s, &bob, &since, IDLE_MS, async {
        send(&s, &carol, &y, "after the kick").await;
    })
    .await;
    assert_not_woken(&res, &since, took, "a message in a room he was kicked from");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_account_data_and_co_members_wake_the_right_syncs() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let (status, second) = s.login("bob", "bob-password").await;
    assert_eq!(status, 200);
    let bob2 = User::from_response(&second);
    let x = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &x).await;
    let since = next(&s.sync(&bob, "?timeout=0").await);

    let to_device = |device: &str, txn: &str| {
        let body = json!({"messages": {bob.user_id.clone(): {device: {"n": txn}}}});
        let path = format!("/sendToDevice/m.custom/{txn}");
        ok(&s, true, &alice, path, body)
    };

    // A message for Bob's other device does not wake this one...
    let other = to_device(&bob2.device_id, "t1");
    let (res, took) = poll_while(&s, &bob, &since, IDLE_MS, other).await;
    assert_not_woken(&res, &since, took, "to-device for another device");
    // ...one for this device does.
    let this = to_device(&bob.device_id, "t2");
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, this).await;
    assert_woken(took, "to-device for this device");
    assert_eq!(res["to_device"]["events"][0]["content"]["n"], "t2", "{res}");
    let since = next(&res);

    // Someone else's account data is no news; his own is.
    let path = |u: &User| format!("/user/{}/account_data/m.x", u.user_id);
    let theirs = ok(&s, true, &carol, path(&carol), json!({"a": 1}));
    let (res, took) = poll_while(&s, &bob, &since, IDLE_MS, theirs).await;
    assert_not_woken(&res, &since, took, "another user's account data");
    let his = ok(&s, true, &bob2, path(&bob), json!({"b": 2}));
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, his).await;
    assert_woken(took, "his own account data");
    assert_eq!(res["account_data"]["events"][0]["content"]["b"], 2, "{res}");
    let since = next(&res);

    // Presence and new keys of someone sharing no room with him leave him asleep.
    let keys = |u: &User| {
        json!({"device_keys": {
            "user_id": u.user_id,
            "device_id": u.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {format!("curve25519:{}", u.device_id): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI"},
            "signatures": {}
        }})
    };
    let (res, took) = poll_while(&s, &bob, &since, IDLE_MS, async {
        presence(&s, &carol).await;
        ok(&s, false, &carol, "/keys/upload".into(), keys(&carol)).await;
    })
    .await;
    assert_not_woken(&res, &since, took, "a stranger's presence and keys");

    // Those of a co-member wake him.
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, presence(&s, &alice)).await;
    assert_woken(took, "a co-member's presence");
    let senders: Vec<&str> = res["presence"]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["sender"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(senders, vec![alice.user_id.as_str()], "{res}");
    let since = next(&res);
    let upload = ok(&s, false, &alice, "/keys/upload".into(), keys(&alice));
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, upload).await;
    assert_woken(took, "a co-member's new keys");
    assert_eq!(
        res["device_lists"]["changed"],
        json!([alice.user_id]),
        "{res}"
    );
    s.shutdown().await;
}

/// News that lands while the sync is reading, before it waits, is not lost: each round
/// sends at the moment the sync starts, and the sync must answer with the message long
/// before its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_racing_the_start_of_a_sync_is_not_lost() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let x = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &x).await;
    let mut since = next(&s.sync(&bob, "?timeout=0").await);
    for round in 0..20 {
        let body = format!("race{round}");
        let started = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        // The send and the sync start together; whichever wins, the sync must see the
        // message, in this answer or (if it answered with something else) the next ones.
        let query = format!("?since={since}&timeout={WAKE_MS}");
        let (res, ()) = tokio::join!(s.sync(&bob, &query), async {
            tokio::time::sleep(Duration::from_millis(round % 5)).await;
            send(&s, &alice, &x, &body).await;
        });
        seen.extend(bodies(&res, &x));
        since = next(&res);
        while !seen.contains(&body) {
            let res = s
                .sync(&bob, &format!("?since={since}&timeout={WAKE_MS}"))
                .await;
            seen.extend(bodies(&res, &x));
            since = next(&res);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "round {round}: the message came only after {:?}",
            started.elapsed()
        );
    }
    s.shutdown().await;
}

/// What the notifier keeps in memory starts empty after a restart: a token from before it
/// still gets every event since, and waiting syncs wake as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_before_a_restart_misses_nothing() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let x = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let y = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &x).await;
    s.join(&bob, &y).await;
    let since = next(&s.sync(&bob, "?timeout=0").await);
    send(&s, &alice, &x, "before the restart").await;
    s.restart().await;
    // Another sync starts the notifier after the restart; then more news in the other room.
    s.sync(&alice, "?timeout=0").await;
    send(&s, &alice, &y, "after the restart").await;

    let res = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    assert_eq!(bodies(&res, &x), vec!["before the restart"], "{res}");
    assert_eq!(bodies(&res, &y), vec!["after the restart"], "{res}");
    let since = next(&res);
    let (res, took) = poll_while(&s, &bob, &since, WAKE_MS, async {
        send(&s, &alice, &x, "woken").await;
    })
    .await;
    assert_woken(took, "a message after the restart");
    assert_eq!(bodies(&res, &x), vec!["woken"], "{res}");
    s.shutdown().await;
}

/// A sync whose filter drops presence, typing and receipts is not answered for them: it
/// answers with the message sent after them, never early and empty, whether they land
/// before its first read or while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_the_filter_drops_answers_nobody() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let filter = common::server::enc(
        &json!({
            "presence": {"not_types": ["*"]},
            "room": {"ephemeral": {"types": []}},
        })
        .to_string(),
    );
    let first = s.sync(&bob, &format!("?filter={filter}")).await;
    let since = next(&first);
    let query = format!("?since={since}&timeout={WAKE_MS}&filter={filter}");
    let (res, ()) = tokio::join!(s.sync(&bob, &query), async {
        presence(&s, &alice).await;
        typing(&s, &alice, &room, true).await;
        ok(
            &s,
            true,
            &alice,
            format!("/rooms/{room}/send/m.room.message/after"),
            json!({"msgtype": "m.text", "body": "after"}),
        )
        .await;
    });
    assert_eq!(bodies(&res, &room), ["after"], "{res}");
    assert!(
        res["presence"]["events"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{res}"
    );
}

//! Typing, receipts, read markers and presence: the endpoints, their errors, and delivery
//! through /sync.

mod common;

use std::time::{Duration, Instant};

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

fn next(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

/// The room's ephemeral event of `kind`, if the sync has one.
fn ephemeral(sync: &Value, room: &str, kind: &str) -> Option<Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
        .cloned()
}

fn presence_of(sync: &Value, user: &User) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["sender"] == user.user_id.as_str())
        .cloned()
}

/// A server with alice and bob in one room and carol in none.
async fn setup() -> (TestServer, User, User, User, String) {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    (s, alice, bob, carol, room)
}

async fn typing(s: &TestServer, u: &User, room: &str, target: &str, body: Value) -> (u16, Value) {
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/typing/{}", enc(target)),
        u.t(),
        &body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_shows_in_sync_and_expires_into_a_waiting_sync() {
    let (s, alice, bob, carol, room) = setup().await;
    let since = next(&s.sync(&bob, "").await);

    // Errors: someone else's typing, a non-member, an unknown room.
    let on = json!({"typing": true, "timeout": 1500});
    assert_error(
        &typing(&s, &bob, &room, &alice.user_id, on.clone()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &typing(&s, &carol, &room, &carol.user_id, on.clone()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &typing(&s, &alice, "!nope:trellis.test", &alice.user_id, on.clone()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(typing(&s, &alice, &room, &alice.user_id, on).await.0, 200);

    let seen = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    let t = ephemeral(&seen, &room, "m.typing").expect("m.typing");
    assert_eq!(t["content"]["user_ids"], json!([alice.user_id]));
    let since = next(&seen);

    // Nothing else happens: the expiry itself wakes the waiting sync, well before its timeout.
    let started = Instant::now();
    let woke = s.sync(&bob, &format!("?since={since}&timeout=20000")).await;
    let waited = started.elapsed();
    let t = ephemeral(&woke, &room, "m.typing").expect("m.typing after expiry");
    assert_eq!(t["content"]["user_ids"], json!([]));
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let since = next(&woke);

    // Starting and stopping by hand.
    let long = json!({"typing": true, "timeout": 600000});
    assert_eq!(typing(&s, &alice, &room, &alice.user_id, long).await.0, 200);
    let seen = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    assert_eq!(
        ephemeral(&seen, &room, "m.typing").unwrap()["content"]["user_ids"],
        json!([alice.user_id])
    );
    let since = next(&seen);
    let off = json!({"typing": false});
    assert_eq!(typing(&s, &alice, &room, &alice.user_id, off).await.0, 200);
    let seen = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    assert_eq!(
        ephemeral(&seen, &room, "m.typing").unwrap()["content"]["user_ids"],
        json!([])
    );
    // No news: the same token comes back and nothing is repeated.
    let since = next(&seen);
    let quiet = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    assert_eq!(next(&quiet), since);
    assert!(ephemeral(&quiet, &room, "m.typing").is_none());
}

async fn receipt(
    s: &TestServer,
    u: &User,
    room: &str,
    kind: &str,
    event: &str,
    body: Value,
) -> (u16, Value) {
    s.post(
        &format!(
            "/_matrix/client/v3/rooms/{room}/receipt/{kind}/{}",
            enc(event)
        ),
        u.t(),
        &body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_reach_members_and_private_ones_only_their_owner() {
    let (s, alice, bob, carol, room) = setup().await;
    let e1 = s.send_text(&alice, &room, "one").await;
    let e2 = s.send_text(&alice, &room, "two").await;
    let bob_since = next(&s.sync(&bob, "").await);
    let alice_since = next(&s.sync(&alice, "").await);

    // Errors: unknown event, non-member, unknown receipt type.
    assert_error(
        &receipt(&s, &alice, &room, "m.read", "$nope", json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &receipt(&s, &carol, &room, "m.read", &e1, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &receipt(&s, &alice, &room, "m.bogus", &e1, json!({})).await,
        400,
        "M_INVALID_PARAM",
    );

    let ok = receipt(&s, &alice, &room, "m.read", &e1, json!({})).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let ok = receipt(
        &s,
        &alice,
        &room,
        "m.read",
        &e2,
        json!({"thread_id": "main"}),
    )
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let ok = receipt(&s, &alice, &room, "m.read.private", &e2, json!({})).await;
    assert_eq!(ok.0, 200, "{}", ok.1);

    // Bob sees alice's public receipts, threaded one with its thread, not the private one.
    let seen = s.sync(&bob, &format!("?since={bob_since}&timeout=0")).await;
    let r = ephemeral(&seen, &room, "m.receipt").expect("m.receipt for bob");
    let c = &r["content"];
    assert!(c[&e1]["m.read"][&alice.user_id]["ts"].is_u64(), "{c}");
    assert_eq!(c[&e2]["m.read"][&alice.user_id]["thread_id"], "main", "{c}");
    assert!(c[&e2]["m.read.private"].is_null(), "{c}");

    // Alice sees her own private receipt.
    let mine = s
        .sync(&alice, &format!("?since={alice_since}&timeout=0"))
        .await;
    let r = ephemeral(&mine, &room, "m.receipt").expect("m.receipt for alice");
    assert!(
        r["content"][&e2]["m.read.private"][&alice.user_id]["ts"].is_u64(),
        "{r}"
    );

    // An initial sync carries every receipt of the room (bob's view: public only).
    let initial = s.sync(&bob, "").await;
    let r = ephemeral(&initial, &room, "m.receipt").expect("m.receipt initial");
    assert!(
        r["content"][&e1]["m.read"][&alice.user_id].is_object(),
        "{r}"
    );
    assert!(r["content"][&e2]["m.read.private"].is_null(), "{r}");

    // A waiting sync wakes for a receipt.
    let since = next(&seen);
    let waiter = {
        let url = s.url(&format!(
            "/_matrix/client/v3/sync?since={since}&timeout=20000"
        ));
        let req = s.http.get(url).bearer_auth(&bob.token);
        tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(
        receipt(&s, &alice, &room, "m.read", &e2, json!({})).await.0,
        200
    );
    let woke = waiter.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let r = ephemeral(&woke, &room, "m.receipt").expect("receipt wakes the sync");
    assert!(
        r["content"][&e2]["m.read"][&alice.user_id].is_object(),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_set_fully_read_and_a_receipt() {
    let (s, alice, bob, carol, room) = setup().await;
    let e1 = s.send_text(&alice, &room, "one").await;
    let bob_since = next(&s.sync(&bob, "").await);
    let path = format!("/_matrix/client/v3/rooms/{room}/read_markers");

    assert_error(
        &s.post(&path, alice.t(), &json!({"m.fully_read": "$nope"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(&path, carol.t(), &json!({"m.fully_read": e1})).await,
        403,
        "M_FORBIDDEN",
    );
    let ok = s
        .post(
            &path,
            alice.t(),
            &json!({"m.fully_read": e1, "m.read": e1, "m.read.private": e1}),
        )
        .await;
    assert_eq!(ok.0, 200, "{}", ok.1);

    let (status, data) = s
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read",
                enc(&alice.user_id)
            ),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["event_id"], e1.as_str());

    let initial = s.sync(&alice, "").await;
    let ad = initial["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(ad.iter().any(|e| e["type"] == "m.fully_read"), "{ad:?}");

    let seen = s.sync(&bob, &format!("?since={bob_since}&timeout=0")).await;
    let r = ephemeral(&seen, &room, "m.receipt").expect("m.receipt");
    assert!(
        r["content"][&e1]["m.read"][&alice.user_id].is_object(),
        "{r}"
    );
    assert!(r["content"][&e1]["m.read.private"].is_null(), "{r}");

    // The receipt endpoint also takes m.fully_read.
    let e2 = s.send_text(&alice, &room, "two").await;
    let ok = receipt(&s, &alice, &room, "m.fully_read", &e2, json!({})).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let (_, data) = s
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read",
                enc(&alice.user_id)
            ),
            alice.t(),
        )
        .await;
    assert_eq!(data["event_id"], e2.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_seen_by_co_members_only() {
    let (s, alice, bob, carol, _room) = setup().await;
    let path = |u: &User| format!("/_matrix/client/v3/presence/{}/status", enc(&u.user_id));
    // Bob's and carol's first syncs are offline ones, so they do not set themselves online.
    let bob_since = next(&s.sync(&bob, "?set_presence=offline").await);
    let carol_since = next(&s.sync(&carol, "?set_presence=offline").await);

    assert_error(
        &s.put(&path(&bob), alice.t(), &json!({"presence": "online"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.put(&path(&alice), alice.t(), &json!({"presence": "dancing"}))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    let ok = s
        .put(
            &path(&alice),
            alice.t(),
            &json!({"presence": "online", "status_msg": "hi"}),
        )
        .await;
    assert_eq!(ok.0, 200, "{}", ok.1);

    let (status, got) = s.get(&path(&alice), bob.t()).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["presence"], "online");
    assert_eq!(got["status_msg"], "hi");
    assert_eq!(got["currently_active"], true);
    assert_eq!(s.get(&path(&alice), alice.t()).await.0, 200);
    assert_error(&s.get(&path(&alice), carol.t()).await, 403, "M_FORBIDDEN");

    let seen = s
        .sync(
            &bob,
            &format!("?since={bob_since}&timeout=0&set_presence=offline"),
        )
        .await;
    let p = presence_of(&seen, &alice).expect("bob sees alice");
    assert_eq!(p["type"], "m.presence");
    assert_eq!(p["content"]["presence"], "online");
    assert_eq!(p["content"]["status_msg"], "hi");
    let bob_since = next(&seen);
    let theirs = s
        .sync(
            &carol,
            &format!("?since={carol_since}&timeout=0&set_presence=offline"),
        )
        .await;
    assert!(presence_of(&theirs, &alice).is_none(), "{theirs}");

    // Through /sync's set_presence: alice's sync marks her unavailable, keeping her message.
    s.sync(&alice, "?set_presence=unavailable&timeout=0").await;
    let (_, got) = s.get(&path(&alice), bob.t()).await;
    assert_eq!(got["presence"], "unavailable");
    assert_eq!(got["status_msg"], "hi");
    let seen = s
        .sync(
            &bob,
            &format!("?since={bob_since}&timeout=0&set_presence=offline"),
        )
        .await;
    let p = presence_of(&seen, &alice).expect("bob sees the change");
    assert_eq!(p["content"]["presence"], "unavailable");
    let initial = s.sync(&carol, "?set_presence=offline").await;
    assert!(presence_of(&initial, &alice).is_none(), "{initial}");

    // A plain sync sets its user online.
    s.sync(&bob, "?timeout=0").await;
    let (_, got) = s.get(&path(&bob), alice.t()).await;
    assert_eq!(got["presence"], "online");
}

/// matrix-nio sends an unthreaded receipt as `{"thread_id": null}`: a null optional field
/// reads as an absent one. A field of the wrong type is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_thread_id_is_an_unthreaded_receipt() {
    let (s, alice, bob, _carol, room) = setup().await;
    let e1 = s.send_text(&alice, &room, "one").await;
    let since = next(&s.sync(&bob, "").await);
    let ok = receipt(&s, &alice, &room, "m.read", &e1, json!({"thread_id": null})).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_error(
        &receipt(&s, &alice, &room, "m.read", &e1, json!({"thread_id": 5})).await,
        400,
        "M_BAD_JSON",
    );
    let seen = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    let r = ephemeral(&seen, &room, "m.receipt").expect("m.receipt for bob");
    let mine = &r["content"][&e1]["m.read"][&alice.user_id];
    assert!(mine["ts"].is_u64(), "{r}");
    assert!(mine.get("thread_id").is_none(), "{r}");
}

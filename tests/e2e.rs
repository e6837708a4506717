//! End-to-end encryption plumbing: key upload/query/claim/changes, cross-signing, to-device
//! messages through /sync, and room key backups.

mod common;

use std::time::{Duration, Instant};

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

const MASTER: &str = "nqOvzeuGWT/sRx3h7+MHoInYj3Uk2LD/unI9kDYcHwk";
const SELF_SIGNING: &str = "Ikyn1eGy/E0EZd0JIjJPIGUDOGD8jOHh1ifmSThwJFo";
const USER_SIGNING: &str = "BkgXJAJTPxq+mLu1EoG/hUfwmIXjtwmiDz3K45i7tkI";

fn device_keys(u: &User) -> Value {
    json!({
        "user_id": u.user_id,
        "device_id": u.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", u.device_id): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
            format!("ed25519:{}", u.device_id): "lEuiRJBit0IG6nUf5pUzWTUEsRVVe/HJkoKuEww9ULI",
        },
        "signatures": {u.user_id.clone(): {format!("ed25519:{}", u.device_id): "dSO80A01XiigH3uBiDVx/EjzaoycHcjq9lfQX0uWsqxl2giMIiSPR8a4d291W1ihKJL/a+myXS367WT6NAIcBA"}}
    })
}

fn otk(n: &str) -> Value {
    json!({"key": format!("otk-{n}"), "signatures": {}})
}

async fn upload(s: &TestServer, u: &User, body: Value) -> (u16, Value) {
    s.post("/_matrix/client/v3/keys/upload", u.t(), &body).await
}

async fn claim(s: &TestServer, u: &User, target: &User) -> Value {
    let (status, body) = s
        .post(
            "/_matrix/client/v3/keys/claim",
            u.t(),
            &json!({"one_time_keys": {target.user_id.clone(): {target.device_id.clone(): "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["one_time_keys"][&target.user_id][&target.device_id].clone()
}

fn key_ids(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_query_claim_and_fallback() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;

    // Device keys must be the caller's own.
    let mut foreign = device_keys(&alice);
    foreign["device_id"] = json!("SOMEONEELSE");
    assert_error(
        &upload(&s, &alice, json!({"device_keys": foreign})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &upload(&s, &alice, json!({"device_keys": device_keys(&bob)})).await,
        400,
        "M_INVALID_PARAM",
    );

    let (status, res) = upload(
        &s,
        &alice,
        json!({
            "device_keys": device_keys(&alice),
            "one_time_keys": {"signed_curve25519:AAAAAQ": otk("1"), "signed_curve25519:AAAAAg": otk("2")},
            "fallback_keys": {"signed_curve25519:AAAAAw": {"key": "fallback", "fallback": true, "signatures": {}}},
        }),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["one_time_key_counts"]["signed_curve25519"], 2);

    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.t(),
            &json!({"display_name": "Alice's phone"}),
        )
        .await;
    assert_eq!(status, 200);

    // Bob sees Alice's device keys, with the device name in unsigned; remote users fail.
    let (status, res) = s
        .post(
            "/_matrix/client/v3/keys/query",
            bob.t(),
            &json!({"device_keys": {alice.user_id.clone(): [], "@x:remote.test": []}}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let dk = &res["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(dk["device_id"], alice.device_id.as_str());
    assert_eq!(
        dk["keys"][format!("curve25519:{}", alice.device_id)],
        "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI"
    );
    assert_eq!(
        dk["unsigned"]["device_display_name"], "Alice's phone",
        "{dk}"
    );
    assert!(res["failures"]["remote.test"].is_object(), "{res}");
    // Asking for one unknown device answers nothing for it.
    let (_, res) = s
        .post(
            "/_matrix/client/v3/keys/query",
            bob.t(),
            &json!({"device_keys": {alice.user_id.clone(): ["NOPE"]}}),
        )
        .await;
    assert!(
        res["device_keys"][&alice.user_id]["NOPE"].is_null(),
        "{res}"
    );

    // Before any claim the fallback key is unused.
    let before = s.sync(&alice, "").await;
    assert_eq!(before["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(
        before["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Two claims take the two one-time keys, each once; then the fallback key, repeatedly.
    let first = key_ids(&claim(&s, &bob, &alice).await);
    let second = key_ids(&claim(&s, &bob, &alice).await);
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);
    assert!(first[0].starts_with("signed_curve25519:AAAA"));
    let fallback = claim(&s, &bob, &alice).await;
    assert_eq!(key_ids(&fallback), vec!["signed_curve25519:AAAAAw"]);
    assert_eq!(fallback["signed_curve25519:AAAAAw"]["key"], "fallback");
    let again = claim(&s, &bob, &alice).await;
    assert_eq!(key_ids(&again), vec!["signed_curve25519:AAAAAw"]);

    let (_, res) = upload(&s, &alice, json!({})).await;
    assert!(
        res["one_time_key_counts"]["signed_curve25519"].is_null()
            || res["one_time_key_counts"]["signed_curve25519"] == 0,
        "{res}"
    );
    let after = s.sync(&alice, "").await;
    assert_eq!(after["device_unused_fallback_key_types"], json!([]));

    // A device with no keys at all yields nothing; remote claims are failures.
    let (status, res) = s
        .post(
            "/_matrix/client/v3/keys/claim",
            alice.t(),
            &json!({"one_time_keys": {
                bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"},
                "@x:remote.test": {"DEV": "signed_curve25519"},
            }}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(res["one_time_keys"][&bob.user_id].is_null(), "{res}");
    assert!(res["failures"]["remote.test"].is_object(), "{res}");

    // Without a token: 401.
    assert_error(
        &s.post(
            "/_matrix/client/v3/keys/query",
            None,
            &json!({"device_keys": {}}),
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_is_delivered_once_and_wakes_sync() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let since = s.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A long-polling sync wakes when the message arrives.
    let base = s.base.clone();
    let token = alice.token.clone();
    let target = (bob.user_id.clone(), bob.device_id.clone());
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let res = reqwest::Client::new()
            .put(format!(
                "{base}/_matrix/client/v3/sendToDevice/m.room_key_request/txn1"
            ))
            .bearer_auth(token)
            .json(&json!({"messages": {target.0: {target.1: {"action": "request", "n": 1}}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    });
    let started = Instant::now();
    let woke = s.sync(&bob, &format!("?since={since}&timeout=30000")).await;
    assert!(started.elapsed() < Duration::from_secs(10), "woke late");
    sender.await.unwrap();
    let events = woke["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{woke}");
    assert_eq!(events[0]["type"], "m.room_key_request");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["content"]["n"], 1);

    // Retrying the same transaction delivers nothing new.
    let path = "/_matrix/client/v3/sendToDevice/m.room_key_request/txn1";
    let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}}});
    assert_eq!(s.put(path, alice.t(), &body).await.0, 200);

    // Syncing past it acknowledges it: never delivered again.
    let next = woke["next_batch"].as_str().unwrap().to_owned();
    let after = s.sync(&bob, &format!("?since={next}&timeout=0")).await;
    assert!(after["to_device"]["events"].is_null(), "{after}");
    assert_eq!(after["next_batch"], next.as_str());

    // `*` reaches every device of the user.
    let (_, second) = s.login("bob", "bob-password").await;
    let bob2 = User::from_response(&second);
    let body = json!({"messages": {bob.user_id.clone(): {"*": {"n": 2}}}});
    assert_eq!(
        s.put(
            "/_matrix/client/v3/sendToDevice/m.custom/txn2",
            alice.t(),
            &body
        )
        .await
        .0,
        200
    );
    let one = s.sync(&bob, &format!("?since={next}&timeout=0")).await;
    assert_eq!(one["to_device"]["events"][0]["content"]["n"], 2, "{one}");
    let two = s.sync(&bob2, "").await;
    assert_eq!(two["to_device"]["events"][0]["content"]["n"], 2, "{two}");

    // A malformed since token is rejected.
    assert_error(
        &s.get("/_matrix/client/v3/sync?since=s1_2", bob.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_and_sync_device_lists() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let from = s.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A long-poll wakes on a key change of someone sharing a room.
    let base = s.base.clone();
    let (token, keys) = (alice.token.clone(), device_keys(&alice));
    let uploader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let res = reqwest::Client::new()
            .post(format!("{base}/_matrix/client/v3/keys/upload"))
            .bearer_auth(token)
            .json(&json!({"device_keys": keys}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    });
    // Carol shares no room with Bob: her change is not his business.
    assert_eq!(
        upload(&s, &carol, json!({"device_keys": device_keys(&carol)}))
            .await
            .0,
        200
    );
    let started = Instant::now();
    let res = s.sync(&bob, &format!("?since={from}&timeout=30000")).await;
    uploader.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut changed = res["device_lists"]["changed"].clone();
    if changed.is_null() {
        // The wake-up may have come from Carol's change alone; the next sync has Alice's.
        let next = res["next_batch"].as_str().unwrap();
        changed =
            s.sync(&bob, &format!("?since={next}&timeout=5000")).await["device_lists"]["changed"]
                .clone();
    }
    assert_eq!(changed, json!([alice.user_id]), "{res}");
    let to = s.sync(&bob, &format!("?since={from}&timeout=0")).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, res) = s
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={from}&to={to}"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["changed"], json!([alice.user_id]));
    // The same keys again are no change.
    assert_eq!(
        upload(&s, &alice, json!({"device_keys": device_keys(&alice)}))
            .await
            .0,
        200
    );
    let (_, res) = s
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={to}&to={to}"),
            bob.t(),
        )
        .await;
    assert_eq!(res["changed"], json!([]));

    // Bob leaves: Alice no longer shares a room with him.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let after_leave = s.sync(&alice, &format!("?since={to}&timeout=0")).await;
    assert_eq!(
        after_leave["device_lists"]["left"],
        json!([bob.user_id]),
        "{after_leave}"
    );

    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/keys/changes?from=bogus&to={to}"),
            bob.t(),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    s.shutdown().await;
}

fn cross_key(u: &User, usage: &str, key: &str) -> Value {
    json!({"user_id": u.user_id, "usage": [usage], "keys": {format!("ed25519:{key}"): key}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_needs_password_and_signatures_show_in_query() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    assert_eq!(
        upload(&s, &alice, json!({"device_keys": device_keys(&alice)}))
            .await
            .0,
        200
    );
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    // A user's first cross-signing keys need no password (MSC3967, spec 1.11) ...
    let first_keys = json!({"master_key": cross_key(&alice, "master", "Zmlyc3RtYXN0ZXJrZXk")});
    let (status, res) = s.post(path, alice.t(), &first_keys).await;
    assert_eq!(status, 200, "{res}");
    // ... replacing them does.
    let mut body = json!({
        "master_key": cross_key(&alice, "master", MASTER),
        "self_signing_key": cross_key(&alice, "self_signing", SELF_SIGNING),
        "user_signing_key": cross_key(&alice, "user_signing", USER_SIGNING),
    });
    let (status, first) = s.post(path, alice.t(), &body).await;
    assert_eq!(status, 401, "{first}");
    assert_eq!(first["flows"][0]["stages"][0], "m.login.password");
    let auth = |password: &str| {
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": password,
            "session": first["session"],
        })
    };
    body["auth"] = auth("wrong-password");
    let (status, res) = s.post(path, alice.t(), &body).await;
    assert_eq!(status, 401, "{res}");
    assert_eq!(res["errcode"], "M_FORBIDDEN");
    body["auth"] = auth("alice-password");
    let (status, res) = s.post(path, alice.t(), &body).await;
    assert_eq!(status, 200, "{res}");

    // Alice signs her device with her self-signing key.
    let mut signed = device_keys(&alice);
    signed["signatures"] =
        json!({alice.user_id.clone(): {format!("ed25519:{SELF_SIGNING}"): "c2lnbmF0dXJl"}});
    let (status, res) = s
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            alice.t(),
            &json!({alice.user_id.clone(): {alice.device_id.clone(): signed}}),
        )
        .await;
    assert_eq!(status, 200, "{res}");

    let query = json!({"device_keys": {alice.user_id.clone(): []}});
    let (_, theirs) = s
        .post("/_matrix/client/v3/keys/query", bob.t(), &query)
        .await;
    assert_eq!(
        theirs["master_keys"][&alice.user_id]["keys"][format!("ed25519:{MASTER}")],
        MASTER
    );
    assert!(theirs["self_signing_keys"][&alice.user_id].is_object());
    assert!(
        theirs["user_signing_keys"][&alice.user_id].is_null(),
        "only the owner sees the user-signing key: {theirs}"
    );
    let sigs =
        &theirs["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert_eq!(sigs[format!("ed25519:{SELF_SIGNING}")], "c2lnbmF0dXJl");
    assert!(
        sigs[format!("ed25519:{}", alice.device_id)].is_string(),
        "{sigs}"
    );
    let (_, mine) = s
        .post("/_matrix/client/v3/keys/query", alice.t(), &query)
        .await;
    assert!(mine["user_signing_keys"][&alice.user_id].is_object());

    // A key for someone else is refused (Bob has none yet, so no password is asked first).
    let res = s
        .post(
            path,
            bob.t(),
            &json!({"master_key": cross_key(&alice, "master", MASTER)}),
        )
        .await;
    assert_error(&res, 400, "M_INVALID_PARAM");
    s.shutdown().await;
}

fn backup_algorithm(key: &str) -> Value {
    json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": key, "signatures": {}}
    })
}

fn session(first_index: u64, verified: bool) -> Value {
    json!({
        "first_message_index": first_index,
        "forwarded_count": 0,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": format!("c{first_index}"), "mac": "m"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_key_backup_versions_and_keys() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = "!room:trellis.test";
    let base = "/_matrix/client/v3/room_keys";

    assert_error(
        &s.get(&format!("{base}/version"), alice.t()).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, res) = s
        .post(
            &format!("{base}/version"),
            alice.t(),
            &backup_algorithm("pk1"),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let v1 = res["version"].as_str().unwrap().to_owned();

    let (status, res) = s
        .put(
            &format!("{base}/keys/{}/sess1?version={v1}", enc(room)),
            alice.t(),
            &session(5, false),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["count"], 1);
    let etag1 = res["etag"].as_str().unwrap().to_owned();

    // A worse key does not replace a better one; a better one does.
    let put_all = |data: Value| json!({"rooms": {room: {"sessions": {"sess1": data, "sess2": session(0, true)}}}});
    let (status, res) = s
        .put(
            &format!("{base}/keys?version={v1}"),
            alice.t(),
            &put_all(session(9, false)),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["count"], 2);
    assert_ne!(res["etag"], etag1.as_str());
    let (_, key) = s
        .get(
            &format!("{base}/keys/{}/sess1?version={v1}", enc(room)),
            alice.t(),
        )
        .await;
    assert_eq!(key["first_message_index"], 5);
    s.put(
        &format!("{base}/keys/{}?version={v1}", enc(room)),
        alice.t(),
        &json!({"sessions": {"sess1": session(1, false)}}),
    )
    .await;
    let (_, all) = s.get(&format!("{base}/keys?version={v1}"), alice.t()).await;
    assert_eq!(
        all["rooms"][room]["sessions"]["sess1"]["first_message_index"],
        1
    );
    assert_eq!(
        all["rooms"][room]["sessions"]["sess2"]["session_data"]["ciphertext"],
        "c0"
    );

    let (status, info) = s.get(&format!("{base}/version"), alice.t()).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], v1.as_str());
    assert_eq!(info["count"], 2);
    assert_eq!(info["auth_data"]["public_key"], "pk1");

    // Update keeps the algorithm; changing it is refused.
    let (status, _) = s
        .put(
            &format!("{base}/version/{v1}"),
            alice.t(),
            &backup_algorithm("pk1renewed"),
        )
        .await;
    assert_eq!(status, 200);
    let (_, info) = s.get(&format!("{base}/version/{v1}"), alice.t()).await;
    assert_eq!(info["auth_data"]["public_key"], "pk1renewed");
    assert_error(
        &s.put(
            &format!("{base}/version/{v1}"),
            alice.t(),
            &json!({"algorithm": "org.example.other", "auth_data": {}}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // A new version makes the old one stale for writes.
    let (_, res) = s
        .post(
            &format!("{base}/version"),
            alice.t(),
            &backup_algorithm("pk2"),
        )
        .await;
    let v2 = res["version"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    let res = s
        .put(
            &format!("{base}/keys/{}/sess3?version={v1}", enc(room)),
            alice.t(),
            &session(0, false),
        )
        .await;
    assert_eq!(res.0, 403, "{}", res.1);
    assert_eq!(res.1["errcode"], "M_WRONG_ROOM_KEYS_VERSION", "{}", res.1);
    assert_eq!(res.1["current_version"], v2.as_str());

    // Deleting keys answers the new count; unknown versions are 404.
    let (status, res) = s
        .delete(
            &format!("{base}/keys/{}/sess2?version={v1}", enc(room)),
            alice.t(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["count"], 1);
    let (_, res) = s
        .delete(&format!("{base}/keys?version={v1}"), alice.t(), None)
        .await;
    assert_eq!(res["count"], 0);
    assert_error(
        &s.get(&format!("{base}/keys?version=999"), alice.t()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{base}/version/nonsense"), alice.t()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        s.delete(&format!("{base}/version/{v2}"), alice.t(), None)
            .await
            .0,
        200
    );
    let (_, info) = s.get(&format!("{base}/version"), alice.t()).await;
    assert_eq!(info["version"], v1.as_str());
    assert_error(
        &s.delete(&format!("{base}/version/{v2}"), alice.t(), None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_a_device_is_a_device_list_change() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let (_, body) = s.login("bob", "bob-password").await;
    assert_eq!(body["errcode"], "M_FORBIDDEN", "no bob yet");
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let (_, second) = s.login("bob", "bob-password").await;
    let second = User::from_response(&second);
    let from = s.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(
        s.post("/_matrix/client/v3/logout", second.t(), &json!({}))
            .await
            .0,
        200
    );
    let res = s.sync(&alice, &format!("?since={from}")).await;
    let changed: Vec<&str> = res["device_lists"]["changed"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(changed.contains(&bob.user_id.as_str()), "{res}");
    s.shutdown().await;
}

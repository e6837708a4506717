//! What clients and the ecosystem's suite expect of device lists, push rules and
//! third-party identifiers: device-list changes reaching `/sync` and `/keys/changes` at once
//! and exactly, push rules of every kind (server defaults too) and the mention rules, and the
//! answers of every third-party identifier endpoint on a server with neither an identity
//! server nor an email sender.

mod common;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

fn device_keys(u: &User, curve: &str) -> Value {
    json!({
        "user_id": u.user_id,
        "device_id": u.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", u.device_id): curve,
            format!("ed25519:{}", u.device_id): "lEuiRJBit0IG6nUf5pUzWTUEsRVVe/HJkoKuEww9ULI",
        },
        "signatures": {}
    })
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// The user IDs in `device_lists.<list>` of a sync answer (none when absent).
fn device_list(body: &Value, list: &str) -> Vec<String> {
    body["device_lists"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `/keys/changes` between two sync tokens as `u`: (changed, left).
async fn key_changes(s: &TestServer, u: &User, from: &str, to: &str) -> (Vec<String>, Vec<String>) {
    let (status, body) = s
        .get(
            &format!(
                "/_matrix/client/v3/keys/changes?from={}&to={}",
                enc(from),
                enc(to)
            ),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let list = |k: &str| {
        body[k]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    (list("changed"), list("left"))
}

/// An incremental sync of `u` from `since` that waits up to thirty seconds for news.
async fn wait_sync(s: &TestServer, u: &User, since: &str) -> Value {
    s.sync(u, &format!("?since={}&timeout=30000", enc(since)))
        .await
}

// ---- device lists ----

/// A second login (a new device), a device's new name, new cross-signing keys and a deleted
/// device each reach a co-member's long-polling sync at once, and the user's own; each is in
/// `/keys/changes` over the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_device_change_wakes_co_members_and_the_user() {
    let s = TestServer::start().await;
    let (alice, bob, _room) = s.alice_and_bob_in_a_room().await;
    let outsider = s.register("carol", "carol-password").await;

    // Everyone's first sync (and so their presence) before alice's token.
    let mut bob_since = next_batch(&s.sync(&bob, "").await);
    let carol_since = next_batch(&s.sync(&outsider, "").await);
    let mut alice_since = next_batch(&s.sync(&alice, "").await);

    // A change made while alice long-polls reaches her within the request.
    async fn change_while_waiting<F, Fut>(
        s: &TestServer,
        alice: &User,
        since: &str,
        change: F,
    ) -> Value
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let sync = wait_sync(s, alice, since);
        // The change is made once the sync waits: an answer that has it was woken by it (a
        // sync that is not woken answers at its timeout with nothing).
        let change = async {
            s.until_syncs_wait(1).await;
            change().await;
        };
        let (body, ()) = tokio::join!(sync, change);
        body
    }

    // 1. A new device (a second login).
    let body = change_while_waiting(&s, &alice, &alice_since, || async {
        let (status, body) = s.login("bob", "bob-password").await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    assert_eq!(
        device_list(&body, "changed"),
        vec![bob.user_id.clone()],
        "{body}"
    );
    let from = std::mem::replace(&mut alice_since, next_batch(&body));
    assert_eq!(
        key_changes(&s, &alice, &from, &alice_since).await.0,
        vec![bob.user_id.clone()]
    );
    // Bob hears of his own new device too.
    let own = s.sync(&bob, &format!("?since={}", enc(&bob_since))).await;
    assert!(device_list(&own, "changed").contains(&bob.user_id), "{own}");
    bob_since = next_batch(&own);

    // 2. A device's new display name.
    let body = change_while_waiting(&s, &alice, &alice_since, || async {
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/devices/{}", enc(&bob.device_id)),
                bob.t(),
                &json!({"display_name": "Bob's phone"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    assert_eq!(
        device_list(&body, "changed"),
        vec![bob.user_id.clone()],
        "{body}"
    );
    alice_since = next_batch(&body);

    // 3. Identity keys.
    let body = change_while_waiting(&s, &alice, &alice_since, || async {
        let (status, body) = s
            .post(
                "/_matrix/client/v3/keys/upload",
                bob.t(),
                &json!({"device_keys": device_keys(&bob, "curve-1")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    assert_eq!(
        device_list(&body, "changed"),
        vec![bob.user_id.clone()],
        "{body}"
    );
    alice_since = next_batch(&body);

    // 4. Cross-signing keys (the first upload needs no password).
    let body = change_while_waiting(&s, &alice, &alice_since, || async {
        let master = "nqOvzeuGWT/sRx3h7+MHoInYj3Uk2LD/unI9kDYcHwk";
        let (status, body) = s
            .post(
                "/_matrix/client/v3/keys/device_signing/upload",
                bob.t(),
                &json!({"master_key": {"user_id": bob.user_id, "usage": ["master"],
                                       "keys": {format!("ed25519:{master}"): master}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    assert_eq!(
        device_list(&body, "changed"),
        vec![bob.user_id.clone()],
        "{body}"
    );
    alice_since = next_batch(&body);

    // 5. A deleted device.
    let (status, second) = s.login("bob", "bob-password").await;
    assert_eq!(status, 200);
    let second = User::from_response(&second);
    alice_since = next_batch(
        &s.sync(&alice, &format!("?since={}", enc(&alice_since)))
            .await,
    );
    let body = change_while_waiting(&s, &alice, &alice_since, || async {
        let path = format!("/_matrix/client/v3/devices/{}", enc(&second.device_id));
        let (status, first) = s.delete(&path, bob.t(), None).await;
        assert_eq!(status, 401, "{first}");
        let auth = json!({"auth": {
            "type": "m.login.password", "session": first["session"],
            "identifier": {"type": "m.id.user", "user": bob.user_id},
            "password": "bob-password"}});
        let (status, body) = s.delete(&path, bob.t(), Some(&auth)).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    assert_eq!(
        device_list(&body, "changed"),
        vec![bob.user_id.clone()],
        "{body}"
    );

    // Nothing of it is the business of a user who shares no room with bob.
    let body = s
        .sync(&outsider, &format!("?since={}", enc(&carol_since)))
        .await;
    assert!(device_list(&body, "changed").is_empty(), "{body}");
    let to = next_batch(&body);
    assert!(
        key_changes(&s, &outsider, &carol_since, &to)
            .await
            .0
            .is_empty()
    );
    let _ = bob_since;
    s.shutdown().await;
}

/// A user who comes to share a room is in `changed` of the very next incremental sync (and
/// of `/keys/changes`); one who no longer shares any room is in `left`, whoever left, and
/// not while another room is still shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_a_room_first_and_sharing_none_any_more() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let other = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let start = next_batch(&s.sync(&alice, "").await);

    // Bob joins: alice's next sync lists him, and it is woken by the join.
    let body = {
        let sync = wait_sync(&s, &alice, &start);
        let join = async {
            s.until_syncs_wait(1).await;
            s.join(&bob, &room).await;
        };
        tokio::join!(sync, join).0
    };
    let mut changed = device_list(&body, "changed");
    let mut since = next_batch(&body);
    if changed.is_empty() {
        // Woken by something else of the join first (the member event itself is read
        // with it, so this is only a second chance, not a delay).
        let body = s.sync(&alice, &format!("?since={}", enc(&since))).await;
        changed = device_list(&body, "changed");
        since = next_batch(&body);
    }
    assert_eq!(changed, vec![bob.user_id.clone()]);
    let (changed, left) = key_changes(&s, &alice, &start, &since).await;
    assert_eq!((changed, left), (vec![bob.user_id.clone()], vec![]));
    // And bob, joining, learns of alice.
    let bob_first = s.sync(&bob, "").await;
    let bob_since = next_batch(&bob_first);

    // Sharing a second room is no news; leaving one of two is no `left`.
    s.join(&bob, &other).await;
    let body = s.sync(&alice, &format!("?since={}", enc(&since))).await;
    assert!(device_list(&body, "left").is_empty(), "{body}");
    since = next_batch(&body);
    s.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&other)),
        bob.t(),
        &json!({}),
    )
    .await;
    let body = s.sync(&alice, &format!("?since={}", enc(&since))).await;
    assert!(device_list(&body, "left").is_empty(), "{body}");
    assert!(device_list(&body, "changed").is_empty(), "{body}");
    since = next_batch(&body);

    // Bob leaves the last room they share: he is in alice's `left`, and alice in his.
    let before_leave = since.clone();
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let body = s.sync(&alice, &format!("?since={}", enc(&since))).await;
    assert_eq!(
        device_list(&body, "left"),
        vec![bob.user_id.clone()],
        "{body}"
    );
    assert!(device_list(&body, "changed").is_empty(), "{body}");
    let after_leave = next_batch(&body);
    let (changed, left) = key_changes(&s, &alice, &before_leave, &after_leave).await;
    assert_eq!((changed, left), (vec![], vec![bob.user_id.clone()]));
    let body = s.sync(&bob, &format!("?since={}", enc(&bob_since))).await;
    assert!(
        device_list(&body, "left").contains(&alice.user_id),
        "{body}"
    );
    // The sync after that has nothing more to say of him.
    let body = s
        .sync(&alice, &format!("?since={}&timeout=0", enc(&after_leave)))
        .await;
    assert!(device_list(&body, "left").is_empty(), "{body}");

    // His keys change while no room is shared: not alice's business.
    s.post(
        "/_matrix/client/v3/keys/upload",
        bob.t(),
        &json!({"device_keys": device_keys(&bob, "curve-2")}),
    )
    .await;
    let body = s
        .sync(&alice, &format!("?since={}&timeout=0", enc(&after_leave)))
        .await;
    assert!(device_list(&body, "changed").is_empty(), "{body}");

    // Carol, who never shared a room with alice, is in neither list at any point.
    let _ = carol;
    s.shutdown().await;
}

/// `/keys/query` answers every local user asked about: an empty map of devices for one
/// without keys (and for one who does not exist), their devices for one with keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_query_answers_users_without_keys_with_an_empty_map() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/keys/upload",
            alice.t(),
            &json!({"device_keys": device_keys(&alice, "curve-a")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let nobody = format!("@nobody:{}", s.server_name());
    let (status, body) = s
        .post(
            "/_matrix/client/v3/keys/query",
            bob.t(),
            &json!({"device_keys": {alice.user_id.clone(): [], bob.user_id.clone(): [],
                                    nobody.clone(): []}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_keys"][&bob.user_id], json!({}), "{body}");
    assert_eq!(body["device_keys"][&nobody], json!({}), "{body}");
    assert_eq!(
        body["device_keys"][&alice.user_id][&alice.device_id]["keys"]
            [format!("curve25519:{}", alice.device_id)],
        "curve-a",
        "{body}"
    );
    s.shutdown().await;
}

// ---- third-party identifiers, with no identity server and no email sender ----

/// Every third-party identifier endpoint answers what Synapse answers with neither an email
/// sender nor an identity server: the request checked as Synapse checks it, then "not
/// supported here" with Synapse's status and errcode; never a 404 or a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_identifier_endpoints_answer_as_without_email_or_identity_server() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let email = json!({"client_secret": "secret-1", "email": "alice@example.org",
                       "send_attempt": 1});
    let phone = json!({"client_secret": "secret-1", "country": "GB",
                       "phone_number": "07700900001", "send_attempt": 1});

    // Email: refused before the body is read, with or without a token.
    for token in [None, alice.t()] {
        for body in [&email, &json!({})] {
            assert_error(
                &s.post(
                    "/_matrix/client/v3/account/3pid/email/requestToken",
                    token,
                    body,
                )
                .await,
                400,
                "M_THREEPID_MEDIUM_NOT_SUPPORTED",
            );
            assert_error(
                &s.post(
                    "/_matrix/client/v3/register/email/requestToken",
                    token,
                    body,
                )
                .await,
                400,
                "M_UNKNOWN",
            );
            assert_error(
                &s.post(
                    "/_matrix/client/v3/account/password/email/requestToken",
                    token,
                    body,
                )
                .await,
                400,
                "M_UNKNOWN",
            );
        }
    }
    // Phone numbers: a well-formed request is told it is not supported; a malformed one
    // that it is malformed.
    assert_error(
        &s.post(
            "/_matrix/client/v3/account/3pid/msisdn/requestToken",
            None,
            &phone,
        )
        .await,
        400,
        "M_THREEPID_MEDIUM_NOT_SUPPORTED",
    );
    assert_error(
        &s.post(
            "/_matrix/client/v3/register/msisdn/requestToken",
            None,
            &phone,
        )
        .await,
        400,
        "M_UNKNOWN",
    );
    let mut no_number = phone.clone();
    no_number.as_object_mut().unwrap().remove("phone_number");
    let mut bad_secret = phone.clone();
    bad_secret["client_secret"] = json!("not a secret!");
    for body in [&no_number, &bad_secret] {
        for path in [
            "/_matrix/client/v3/account/3pid/msisdn/requestToken",
            "/_matrix/client/v3/register/msisdn/requestToken",
        ] {
            let (status, res) = s.post(path, None, body).await;
            assert_eq!(status, 400, "{path}: {res}");
            assert!(
                [
                    "M_BAD_JSON",
                    "M_MISSING_PARAM",
                    "M_INVALID_PARAM",
                    "M_NOT_JSON"
                ]
                .contains(&res["errcode"].as_str().unwrap_or("")),
                "{path}: {res}"
            );
        }
    }

    // Adding: the password first, then no validated session can exist.
    let add = json!({"client_secret": "secret-1", "sid": "session-1"});
    assert_error(
        &s.post("/_matrix/client/v3/account/3pid/add", None, &add)
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    let (status, first) = s
        .post("/_matrix/client/v3/account/3pid/add", alice.t(), &add)
        .await;
    assert_eq!(status, 401, "{first}");
    assert!(first["flows"].is_array(), "{first}");
    let mut with_auth = add.clone();
    with_auth["auth"] = json!({"type": "m.login.password", "session": first["session"],
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "alice-password"});
    assert_error(
        &s.post("/_matrix/client/v3/account/3pid/add", alice.t(), &with_auth)
            .await,
        400,
        "M_THREEPID_AUTH_FAILED",
    );

    // Binding at an identity server is not done here; unbinding and deleting find nothing
    // bound and answer as Synapse does for that.
    let bind = json!({"client_secret": "secret-1", "sid": "session-1",
                      "id_server": "id.example.org", "id_access_token": "tok"});
    assert_error(
        &s.post("/_matrix/client/v3/account/3pid/bind", alice.t(), &bind)
            .await,
        400,
        "M_UNKNOWN",
    );
    for path in [
        "/_matrix/client/v3/account/3pid/unbind",
        "/_matrix/client/v3/account/3pid/delete",
    ] {
        for body in [
            json!({"medium": "email", "address": "alice@example.org"}),
            json!({"medium": "msisdn", "address": "447700900001", "id_server": "id.example.org"}),
        ] {
            let (status, res) = s.post(path, alice.t(), &body).await;
            assert_eq!(status, 200, "{path}: {res}");
            assert_eq!(
                res,
                json!({"id_server_unbind_result": "no-support"}),
                "{path}"
            );
        }
        let (status, res) = s
            .post(
                path,
                alice.t(),
                &json!({"medium": "pigeon", "address": "x"}),
            )
            .await;
        assert_eq!(status, 400, "{path}: {res}");
        assert_error(
            &s.post(path, None, &json!({"medium": "email", "address": "a@b.c"}))
                .await,
            401,
            "M_MISSING_TOKEN",
        );
    }
    let (status, res) = s.get("/_matrix/client/v3/account/3pid", alice.t()).await;
    assert_eq!((status, res), (200, json!({"threepids": []})));
    s.shutdown().await;
}

/// With no application services, every third-party lookup is an empty list, and a named
/// protocol is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_lookups_are_empty_without_bridges() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    for path in [
        format!(
            "/_matrix/client/v3/thirdparty/location?alias={}",
            enc("#a:example.org")
        ),
        format!(
            "/_matrix/client/v3/thirdparty/user?userid={}",
            enc("@a:example.org")
        ),
        "/_matrix/client/v3/thirdparty/location/irc?server=irc.example.org".to_owned(),
        "/_matrix/client/v3/thirdparty/user/irc?nick=alice".to_owned(),
    ] {
        let (status, body) = s.get(&path, alice.t()).await;
        assert_eq!((status, body), (200, json!([])), "{path}");
        assert_error(&s.get(&path, None).await, 401, "M_MISSING_TOKEN");
    }
    let (status, body) = s
        .get("/_matrix/client/v3/thirdparty/protocols", alice.t())
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_error(
        &s.get("/_matrix/client/v3/thirdparty/protocol/irc", alice.t())
            .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

// ---- push rules ----

/// The event IDs of `u`'s notifications (`only=highlight` with `highlights`), newest first.
async fn notified(s: &TestServer, u: &User, highlights: bool) -> Vec<String> {
    let query = if highlights { "?only=highlight" } else { "" };
    let (status, body) = s
        .get(&format!("/_matrix/client/v3/notifications{query}"), u.t())
        .await;
    assert_eq!(status, 200, "{body}");
    body["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str().map(str::to_owned))
        .collect()
}

async fn send(s: &TestServer, u: &User, room: &str, txn: &str, content: Value) -> String {
    let (status, res) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                enc(room)
            ),
            u.t(),
            &content,
        )
        .await;
    assert_eq!(status, 200, "{res}");
    res["event_id"].as_str().expect("event_id").to_owned()
}

/// A `room` rule named by the room's ID governs that room's messages, and no more once
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_rules_named_by_the_room_id() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let rule = |id: &str| format!("/_matrix/client/v3/pushrules/global/room/{}", enc(id));

    let before = send(
        &s,
        &alice,
        &room,
        "t1",
        json!({"msgtype": "m.text", "body": "one"}),
    )
    .await;
    assert_eq!(notified(&s, &bob, false).await, vec![before.clone()]);
    // Bob silences the room.
    let (status, body) = s.put(&rule(&room), bob.t(), &json!({"actions": []})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get(&rule(&room), bob.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rule_id"], room.as_str());
    assert_eq!(body["default"], false);
    assert_eq!(body["enabled"], true);
    send(
        &s,
        &alice,
        &room,
        "t2",
        json!({"msgtype": "m.text", "body": "two"}),
    )
    .await;
    assert_eq!(notified(&s, &bob, false).await, vec![before.clone()]);

    // Removed, the room notifies again.
    let (status, _) = s.delete(&rule(&room), bob.t(), None).await;
    assert_eq!(status, 200);
    assert_error(&s.get(&rule(&room), bob.t()).await, 404, "M_NOT_FOUND");
    let after = send(
        &s,
        &alice,
        &room,
        "t3",
        json!({"msgtype": "m.text", "body": "three"}),
    )
    .await;
    assert_eq!(notified(&s, &bob, false).await, [after, before]);
    s.shutdown().await;
}

/// The server-default rules can be switched on and off and given other actions, and read
/// back so; they cannot be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_default_rules_take_enabled_and_actions() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let base = "/_matrix/client/v3/pushrules/global";

    let (status, body) = s
        .get(&format!("{base}/override/.m.rule.master/enabled"), bob.t())
        .await;
    assert_eq!((status, body), (200, json!({"enabled": false})));
    // The master rule on: nothing notifies.
    let (status, body) = s
        .put(
            &format!("{base}/override/.m.rule.master/enabled"),
            bob.t(),
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = s
        .get(&format!("{base}/override/.m.rule.master"), bob.t())
        .await;
    assert_eq!(body["enabled"], true, "{body}");
    assert_eq!(body["default"], true, "{body}");
    send(
        &s,
        &alice,
        &room,
        "m1",
        json!({"msgtype": "m.text", "body": "hush"}),
    )
    .await;
    assert!(notified(&s, &bob, false).await.is_empty());
    s.put(
        &format!("{base}/override/.m.rule.master/enabled"),
        bob.t(),
        &json!({"enabled": false}),
    )
    .await;

    // Messages of a room of two highlight once the default one-to-one rule says so.
    let actions = json!(["notify", {"set_tweak": "highlight"}]);
    let (status, body) = s
        .put(
            &format!("{base}/underride/.m.rule.room_one_to_one/actions"),
            bob.t(),
            &json!({"actions": actions}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .get(
            &format!("{base}/underride/.m.rule.room_one_to_one/actions"),
            bob.t(),
        )
        .await;
    assert_eq!((status, body), (200, json!({"actions": actions})));
    let loud = send(
        &s,
        &alice,
        &room,
        "m2",
        json!({"msgtype": "m.text", "body": "loud"}),
    )
    .await;
    assert_eq!(notified(&s, &bob, true).await, [loud]);

    assert_error(
        &s.delete(&format!("{base}/underride/.m.rule.message"), bob.t(), None)
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &s.put(
            &format!("{base}/override/.m.rule.nonesuch/enabled"),
            bob.t(),
            &json!({"enabled": true}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

/// The mention rules: `m.mentions` naming the user, or the room when sent by a user with
/// the power to notify it (a creator of a version 12 room, who is in no `users` map),
/// highlights; the display name in the body alone does not (the current default rules have
/// no legacy display-name rule), and every one of them still notifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mention_rules_highlight_as_the_spec_says() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let (status, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&bob.user_id)
            ),
            bob.t(),
            &json!({"displayname": "Roberto"}),
        )
        .await;
    assert_eq!(status, 200);

    let by_id = send(
        &s,
        &alice,
        &room,
        "u1",
        json!({"msgtype": "m.text", "body": "hi you",
        "m.mentions": {"user_ids": [bob.user_id]}}),
    )
    .await;
    let by_name = send(
        &s,
        &alice,
        &room,
        "u2",
        json!({"msgtype": "m.text", "body": "hello Roberto!"}),
    )
    .await;
    let name_but_mentions = send(
        &s,
        &alice,
        &room,
        "u3",
        json!({"msgtype": "m.text",
        "body": "hello Roberto!", "m.mentions": {}}),
    )
    .await;
    let room_mention = send(
        &s,
        &alice,
        &room,
        "u4",
        json!({"msgtype": "m.text",
        "body": "everyone", "m.mentions": {"room": true}}),
    )
    .await;
    // Bob may not mention the room (notifications.room is 50); alice is not highlighted.
    let bob_room = send(
        &s,
        &bob,
        &room,
        "u5",
        json!({"msgtype": "m.text",
        "body": "everyone", "m.mentions": {"room": true}}),
    )
    .await;

    let highlights = notified(&s, &bob, true).await;
    assert_eq!(
        highlights,
        [room_mention.clone(), by_id.clone()],
        "newest first"
    );
    assert_eq!(
        notified(&s, &bob, false).await,
        [room_mention, name_but_mentions, by_name, by_id]
    );
    assert!(!notified(&s, &alice, true).await.contains(&bob_room));
    assert!(notified(&s, &alice, false).await.contains(&bob_room));
    s.shutdown().await;
}

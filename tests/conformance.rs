//! Behaviours the ecosystem's own suite (SyTest) expects of a homeserver, as the spec and
//! Synapse have them: small things clients trip over.

mod common;

use common::server::{TestServer, enc};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_name_what_accounts_may_change() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let (status, body) = s.get("/_matrix/client/v3/capabilities", alice.t()).await;
    assert_eq!(status, 200, "{body}");
    let caps = &body["capabilities"];
    assert_eq!(caps["m.change_password"]["enabled"], true, "{body}");
    assert_eq!(caps["m.set_displayname"]["enabled"], true, "{body}");
    assert_eq!(caps["m.set_avatar_url"]["enabled"], true, "{body}");
    assert_eq!(caps["m.3pid_changes"]["enabled"], false, "{body}");
    assert_eq!(caps["m.room_versions"]["default"], "12", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_utf8_is_not_json() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let res = s
        .http
        .post(s.url("/_matrix/client/v3/createRoom"))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_user_without_any_and_the_first_cross_signing_upload() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    // A user without device keys is answered, with no devices.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/keys/query",
            alice.t(),
            &json!({"device_keys": {bob.user_id.clone(): []}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_keys"][&bob.user_id], json!({}), "{body}");

    // The first cross-signing keys need no user-interactive auth (MSC3967); the same keys
    // again neither; other keys do.
    let key = |usage: &str, k: &str| json!({"user_id": bob.user_id, "usage": [usage], "keys": {format!("ed25519:{k}"): k}});
    let first = json!({"master_key": key("master", "masterA")});
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    let (status, body) = s.post(upload, bob.t(), &first).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post(upload, bob.t(), &first).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post(
            upload,
            bob.t(),
            &json!({"master_key": key("master", "masterB")}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["flows"].is_array(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_tags_are_kept_and_synced() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s.create_room(&alice, json!({})).await;
    let tags = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags",
        enc(&alice.user_id),
        enc(&room)
    );
    let (status, body) = s
        .put(
            &format!("{tags}/m.favourite"),
            alice.t(),
            &json!({"order": 0.25}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .put(&format!("{tags}/u.work"), alice.t(), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get(&tags, alice.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["tags"],
        json!({"m.favourite": {"order": 0.25}, "u.work": {}}),
        "{body}"
    );
    // /sync carries them as the room's m.tag account data.
    let sync = s.sync(&alice, "").await;
    let data = &sync["rooms"]["join"][&room]["account_data"]["events"];
    let tag_event = data
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "m.tag"))
        .unwrap_or_else(|| panic!("no m.tag in {data}"));
    assert_eq!(tag_event["content"]["tags"]["m.favourite"]["order"], 0.25);

    let (status, _) = s
        .request(
            reqwest::Method::DELETE,
            &format!("{tags}/u.work"),
            alice.t(),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = s.get(&tags, alice.t()).await;
    assert_eq!(
        body["tags"],
        json!({"m.favourite": {"order": 0.25}}),
        "{body}"
    );

    // Bad input and other users' tags.
    let (status, body) = s
        .put(&format!("{tags}/bad"), alice.t(), &json!({"order": 7}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.get(&tags, bob.t()).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_lists_are_empty_not_missing() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let (status, body) = s.get("/_matrix/client/v3/account/3pid", alice.t()).await;
    assert_eq!((status, &body), (200, &json!({"threepids": []})));
    let (status, body) = s
        .get("/_matrix/client/v3/thirdparty/protocols", alice.t())
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, _) = s.get("/_matrix/client/v3/account/3pid", None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_state_again_is_the_same_event() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let topic = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&room)
    );
    let put = |u: &common::server::User, t: &'static str| {
        let (s, topic, token) = (&s, topic.clone(), u.token.clone());
        async move {
            let (status, body) = s.put(&topic, Some(&token), &json!({"topic": t})).await;
            assert_eq!(status, 200, "{body}");
            body["event_id"].as_str().expect("event_id").to_owned()
        }
    };
    let first = put(&alice, "one").await;
    assert_eq!(
        put(&alice, "one").await,
        first,
        "a repeat is the same event"
    );
    let second = put(&alice, "two").await;
    assert_ne!(second, first);
    // Another sender's identical content is a change of its own (public rooms let anyone
    // at power 50 set the topic; Bob is raised first).
    let power = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        enc(&room)
    );
    let (_, mut levels) = s.get(&power, alice.t()).await;
    levels["users"][&bob.user_id] = json!(100);
    let (status, body) = s.put(&power, alice.t(), &levels).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(put(&bob, "two").await, second);
}

/// The `m.push_rules` event of a sync's global account data, if there is one.
fn push_rules_in(account_data: &Value) -> Option<Value> {
    account_data
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .map(|e| e["content"].clone())
}

fn rule<'a>(rules: &'a Value, kind: &str, id: &str) -> Option<&'a Value> {
    rules["global"][kind]
        .as_array()?
        .iter()
        .find(|r| r["rule_id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_push_rules_come_with_the_first_sync_and_again_only_when_changed() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;

    // A user who never touched a rule gets the server defaults with an initial sync.
    let first = s.sync(&alice, "").await;
    let rules = push_rules_in(&first["account_data"]["events"]).expect("m.push_rules");
    let master = rule(&rules, "override", ".m.rule.master").expect("master rule");
    assert_eq!(master["enabled"], false, "{rules}");
    assert!(
        rule(&rules, "underride", ".m.rule.message").is_some(),
        "{rules}"
    );
    assert!(
        rule(&rules, "content", ".m.rule.contains_user_name").is_some()
            || rule(&rules, "override", ".m.rule.is_user_mention").is_some(),
        "{rules}"
    );
    let (status, served) = s.get("/_matrix/client/v3/pushrules/", alice.t()).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(
        served["global"], rules["global"],
        "the same rules as /pushrules"
    );
    // A full-state sync starts from nothing too.
    let full = s.sync(&alice, "?full_state=true").await;
    assert!(
        push_rules_in(&full["account_data"]["events"]).is_some(),
        "{full}"
    );

    // An incremental sync does not send them again while they are unchanged ...
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    let next = s
        .sync(&alice, &format!("?since={}&timeout=0", enc(&since)))
        .await;
    assert!(
        push_rules_in(&next["account_data"]["events"]).is_none(),
        "{next}"
    );
    let since = next["next_batch"].as_str().expect("next_batch").to_owned();

    // ... and does once a rule changed.
    let (status, body) = s
        .put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            alice.t(),
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = s
        .sync(&alice, &format!("?since={}&timeout=0", enc(&since)))
        .await;
    let rules = push_rules_in(&changed["account_data"]["events"]).expect("changed rules");
    assert_eq!(
        rule(&rules, "override", ".m.rule.master").expect("master")["enabled"],
        true,
        "{rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_sync_account_data_starts_with_the_default_push_rules() {
    let s = TestServer::start().await;
    let bob = s.register("bob", "bob-password").await;
    let path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0";
    let body = json!({"conn_id": "ad", "lists": {},
        "extensions": {"account_data": {"enabled": true}}});
    let (status, first) = s.post(path, bob.t(), &body).await;
    assert_eq!(status, 200, "{first}");
    let rules = push_rules_in(&first["extensions"]["account_data"]["global"])
        .expect("m.push_rules in a new connection");
    assert!(
        rule(&rules, "override", ".m.rule.master").is_some(),
        "{rules}"
    );

    // The connection has them: the next answer does not repeat them.
    let pos = first["pos"].as_str().expect("pos");
    let (status, next) = s
        .post(&format!("{path}&pos={}", enc(pos)), bob.t(), &body)
        .await;
    assert_eq!(status, 200, "{next}");
    assert!(
        push_rules_in(&next["extensions"]["account_data"]["global"]).is_none(),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_without_a_timeout_lasts_the_default_and_bad_bodies_are_refused() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(&room),
        enc(&alice.user_id)
    );
    let since = s.sync(&bob, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let (status, body) = s.put(&path, alice.t(), &json!({"typing": true})).await;
    assert_eq!(status, 200, "{body}");
    let next = s
        .sync(&bob, &format!("?since={}&timeout=10000", enc(&since)))
        .await;
    let typing = next["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "m.typing"))
        .unwrap_or_else(|| panic!("m.typing: {next}"));
    assert_eq!(
        typing["content"]["user_ids"],
        json!([alice.user_id]),
        "{next}"
    );
    // Stopping needs no timeout either.
    let (status, body) = s.put(&path, alice.t(), &json!({"typing": false})).await;
    assert_eq!(status, 200, "{body}");

    // What is there is still checked.
    for bad in [
        json!({"timeout": 1000}),
        json!({"typing": "yes"}),
        json!({"typing": true, "timeout": "soon"}),
        json!({"typing": true, "timeout": -5}),
    ] {
        let (status, body) = s.put(&path, alice.t(), &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["errcode"] == "M_BAD_JSON" || body["errcode"] == "M_INVALID_PARAM",
            "{bad}: {body}"
        );
    }
    // Another user's typing is not for Alice to set.
    let theirs = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(&room),
        enc(&bob.user_id)
    );
    let (status, body) = s.put(&theirs, alice.t(), &json!({"typing": true})).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_event_whole_with_format_event() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let topic = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&room)
    );
    let (status, body) = s.put(&topic, alice.t(), &json!({"topic": "cake"})).await;
    assert_eq!(status, 200, "{body}");
    let event_id = body["event_id"].clone();

    let (status, content) = s.get(&topic, bob.t()).await;
    assert_eq!(status, 200, "{content}");
    assert_eq!(content, json!({"topic": "cake"}));
    let (status, same) = s.get(&format!("{topic}?format=content"), bob.t()).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same, content);

    let (status, event) = s.get(&format!("{topic}?format=event"), bob.t()).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["type"], "m.room.topic", "{event}");
    assert_eq!(event["state_key"], "", "{event}");
    assert_eq!(event["content"], content, "{event}");
    assert_eq!(event["event_id"], event_id, "{event}");
    assert_eq!(event["sender"], alice.user_id.as_str(), "{event}");
    assert_eq!(event["room_id"], room.as_str(), "{event}");
    assert!(event["origin_server_ts"].is_u64(), "{event}");
    // A member event by its state key, in the same form.
    let member = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}?format=event",
        enc(&room),
        enc(&bob.user_id)
    );
    let (status, event) = s.get(&member, alice.t()).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"]["membership"], "join", "{event}");
    assert_eq!(event["state_key"], bob.user_id.as_str(), "{event}");

    let (status, body) = s.get(&format!("{topic}?format=pdu"), bob.t()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
    let missing = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.name/?format=event",
        enc(&room)
    );
    let (status, body) = s.get(&missing, bob.t()).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_redact_by_post_without_a_transaction_id() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let message = json!({"msgtype": "m.text", "body": "posted"});
    let mut ids = Vec::new();
    for version in ["r0", "v3", "v3"] {
        let path = format!(
            "/_matrix/client/{version}/rooms/{}/send/m.room.message",
            enc(&room)
        );
        let (status, body) = s.post(&path, alice.t(), &message).await;
        assert_eq!(status, 200, "{version}: {body}");
        ids.push(body["event_id"].as_str().expect("event_id").to_owned());
    }
    // The same content twice is two events: there is no transaction to repeat.
    assert_ne!(ids[1], ids[2]);
    let messages = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
        enc(&room)
    );
    let (_, page) = s.get(&messages, bob.t()).await;
    let posted: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["content"]["body"] == "posted")
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(posted.len(), 3, "{page}");

    // Checked as the PUT form is.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message",
        enc(&room)
    );
    let (status, body) = s
        .request(reqwest::Method::POST, &path, alice.t(), Some(&json!(["x"])))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post(&path, bob.t(), &message).await;
    assert_eq!(status, 200, "{body}");
    let stranger = s.register("carol", "carol-password").await;
    let (status, body) = s.post(&path, stranger.t(), &message).await;
    assert_eq!(status, 403, "{body}");

    // A redaction by POST, with a reason.
    let path = format!(
        "/_matrix/client/r0/rooms/{}/redact/{}",
        enc(&room),
        enc(&ids[0])
    );
    let (status, body) = s.post(&path, alice.t(), &json!({"reason": "oops"})).await;
    assert_eq!(status, 200, "{body}");
    let redaction = body["event_id"].as_str().expect("event_id").to_owned();
    let event = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&ids[0])
    );
    let (status, redacted) = s.get(&event, bob.t()).await;
    assert_eq!(status, 200, "{redacted}");
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    assert_eq!(
        redacted["unsigned"]["redacted_because"]["event_id"], redaction,
        "{redacted}"
    );
    // Bob may not redact Alice's message (the same check as the PUT form).
    let path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}",
        enc(&room),
        enc(&ids[1])
    );
    let (status, body) = s.post(&path, bob.t(), &json!({})).await;
    assert_eq!(status, 403, "{body}");
}

/// A join request's other keys go into the member event, as Synapse keeps them (a display
/// name there is a per-room one); the keys only the server sets are not taken from the
/// client, locally and over federation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_content_in_a_join_is_kept_in_the_member_event() {
    use common::federation::eventually;
    use common::rooms::public_room;

    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "pw-alice-1").await;
    let bob = a.register("bob", "pw-bob-1").await;
    let carol = b.register("carol", "pw-carol-1").await;
    let (room, alias) = public_room(&a, &alice, "custom").await;
    let body = json!({
        "reason": "saying hello",
        "org.example.custom": {"kept": true},
        "displayname": "Bob in here",
        "membership": "leave",
        "join_authorised_via_users_server": alice.user_id,
    });
    let member = |who: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(who)
        )
    };

    // A local join by room ID.
    let (st, res) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            bob.t(),
            &body,
        )
        .await;
    assert_eq!(st, 200, "{res}");
    let (_, content) = a.get(&member(&bob.user_id), bob.t()).await;
    assert_eq!(content["membership"], "join", "{content}");
    assert_eq!(content["reason"], "saying hello");
    assert_eq!(content["org.example.custom"], json!({"kept": true}));
    assert_eq!(content["displayname"], "Bob in here");
    assert!(
        content.get("join_authorised_via_users_server").is_none(),
        "{content}"
    );

    // A remote join by alias: the keys travel in the event B signs.
    let (st, res) = b
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            carol.t(),
            &body,
        )
        .await;
    assert_eq!(st, 200, "{res}");
    let carol_member = member(&carol.user_id);
    eventually("A has carol's join with her keys", || async {
        let (st, content) = a.get(&carol_member, alice.t()).await;
        st == 200
            && content["membership"] == "join"
            && content["org.example.custom"] == json!({"kept": true})
            && content["displayname"] == "Bob in here"
            && content.get("join_authorised_via_users_server").is_none()
    })
    .await;
}

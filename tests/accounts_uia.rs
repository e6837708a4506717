//! User-interactive auth sessions, guest accounts and ignored users, over real HTTP against a
//! real server and Postgres.

mod common;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";

/// Begin a registration with `body`; returns the 401's session.
async fn begin(s: &TestServer, body: &Value) -> String {
    let (status, first) = s.post(REGISTER, None, body).await;
    assert_eq!(status, 401, "{first}");
    first["session"].as_str().expect("session").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_remembers_the_first_requests_parameters() {
    let s = TestServer::start().await;
    let session = begin(
        &s,
        &json!({"username": "Rememberme", "password": "first-request-pw",
                "device_id": "FIRSTDEV", "initial_device_display_name": "Phone"}),
    )
    .await;
    // The second request carries only auth: username, password and device come from the first.
    let (status, body) = s
        .post(
            REGISTER,
            None,
            &json!({"auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@rememberme:trellis.test");
    assert_eq!(body["device_id"], "FIRSTDEV");
    let user = User::from_response(&body);
    let (_, device) = s.get("/_matrix/client/v3/devices/FIRSTDEV", user.t()).await;
    assert_eq!(device["display_name"], "Phone");
    let (status, body) = s.login("rememberme", "first-request-pw").await;
    assert_eq!(
        status, 200,
        "the first request's password is the account's: {body}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_registration_session_answers_idempotently() {
    let s = TestServer::start().await;
    // Without a username: the second completion must not make a second random account.
    let body = json!({"password": "sUp3rs3kr1t"});
    let session = begin(&s, &body).await;
    let mut done = body.clone();
    done["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, first) = s.post(REGISTER, None, &done).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = s.post(REGISTER, None, &done).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user_id"], first["user_id"]);
    assert!(again["access_token"].is_string());
    assert_ne!(again["access_token"], first["access_token"], "a new login");

    // With a username: the same account, not M_USER_IN_USE.
    let body = json!({"username": "idem", "password": "sUp3rs3kr1t"});
    let session = begin(&s, &body).await;
    let mut done = body.clone();
    done["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, first) = s.post(REGISTER, None, &done).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = s.post(REGISTER, None, &done).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user_id"], "@idem:trellis.test");
    // Another session still cannot take the name.
    let r = s.post(REGISTER, None, &body).await;
    assert_error(&r, 400, "M_USER_IN_USE");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_uia_401_carries_params() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            REGISTER,
            None,
            &json!({"username": "p", "password": "pw-pw-pw"}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["params"], json!({}), "{body}");
    // A failed stage too.
    let (status, body) = s
        .post(
            REGISTER,
            None,
            &json!({"username": "p", "password": "pw-pw-pw",
                    "auth": {"type": "m.login.password", "session": body["session"],
                             "identifier": {"type": "m.id.user", "user": "p"},
                             "password": "pw-pw-pw"}}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["params"], json!({}), "{body}");
    // And on the password-guarded endpoints.
    let alice = s.register("alice", "alice-password").await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["params"], json!({}), "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inhibit_login_registers_without_a_device() {
    let s = TestServer::start().await;
    let body = json!({"username": "quiet", "password": "quiet-pass", "inhibit_login": true});
    let session = begin(&s, &body).await;
    let mut done = body.clone();
    done["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, res) = s.post(REGISTER, None, &done).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["user_id"], "@quiet:trellis.test");
    assert!(res["access_token"].is_null(), "{res}");
    assert!(res["device_id"].is_null(), "{res}");
    let (status, login) = s.login("quiet", "quiet-pass").await;
    assert_eq!(status, 200, "{login}");
    let me = User::from_response(&login);
    let (_, devices) = s.get("/_matrix/client/v3/devices", me.t()).await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "{devices}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_passwords_register_and_log_in() {
    let s = TestServer::start().await;
    let password = "Grüße-🔑-パスワード";
    s.register("umlaut", password).await;
    let (status, body) = s.login("umlaut", password).await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &s.login("umlaut", "Grusse-🔑-パスワード").await,
        403,
        "M_FORBIDDEN",
    );
    s.shutdown().await;
}

/// A guest account on `s` (guests enabled).
async fn guest(s: &TestServer) -> User {
    let (status, body) = s
        .post("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    User::from_response(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_reach_only_the_endpoints_the_spec_allows_them() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let g = guest(&s).await;
    let (status, me) = s.get("/_matrix/client/v3/account/whoami", g.t()).await;
    assert_eq!((status, me["is_guest"].clone()), (200, json!(true)));
    let (status, body) = s.get("/_matrix/client/v3/sync?timeout=0", g.t()).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = s.get("/_matrix/client/v3/devices", g.t()).await;
    assert_eq!(status, 200);
    // Not for guests: creating rooms, account data, filters, push rules.
    let r = s
        .post("/_matrix/client/v3/createRoom", g.t(), &json!({}))
        .await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/m.x",
        enc(&g.user_id)
    );
    assert_error(
        &s.put(&path, g.t(), &json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&g.user_id));
    assert_error(
        &s.post(&path, g.t(), &json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    assert_error(
        &s.get("/_matrix/client/v3/pushrules/", g.t()).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_join_only_rooms_open_to_guests() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = s.register("alice", "alice-password").await;
    let g = guest(&s).await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let join = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    assert_error(
        &s.post(&join, g.t(), &json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    s.put_state(
        &alice,
        &room,
        "m.room.guest_access",
        "",
        &json!({"guest_access": "can_join"}),
    )
    .await;
    let (status, body) = s.post(&join, g.t(), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Joined guests send messages.
    s.send_text(&g, &room, "hello-from-a-guest").await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_leave_when_guest_access_is_revoked() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let g = guest(&s).await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.put_state(
        &alice,
        &room,
        "m.room.guest_access",
        "",
        &json!({"guest_access": "can_join"}),
    )
    .await;
    s.join(&g, &room).await;
    s.join(&bob, &room).await;
    s.put_state(
        &alice,
        &room,
        "m.room.guest_access",
        "",
        &json!({"guest_access": "forbidden"}),
    )
    .await;
    let member = |who: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(who)
        )
    };
    // The guests leave in the background, right after the change.
    common::federation::eventually("the guest left", || async {
        let (_, content) = s.get(&member(&g.user_id), alice.t()).await;
        content["membership"] == "leave"
    })
    .await;
    // Full members stay.
    let (_, content) = s.get(&member(&bob.user_id), alice.t()).await;
    assert_eq!(content["membership"], "join");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_upgrades_to_a_full_account_keeping_its_user_id() {
    let s = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let g = guest(&s).await;
    let other = guest(&s).await;
    let localpart = g.user_id[1..].split(':').next().unwrap().to_owned();
    // Another guest's token cannot upgrade this account.
    let r = s
        .post(
            REGISTER,
            None,
            &json!({"username": localpart, "password": "upgraded-pw",
                    "guest_access_token": other.token}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let body = json!({"username": localpart, "password": "upgraded-pw",
                      "guest_access_token": g.token});
    let session = begin(&s, &body).await;
    let mut done = body.clone();
    done["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, res) = s.post(REGISTER, None, &done).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["user_id"], g.user_id.as_str());
    let full = User::from_response(&res);
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", full.t()).await;
    assert_eq!(me["user_id"], g.user_id.as_str());
    assert_ne!(me["is_guest"], true, "{me}");
    // The guest's own token now belongs to a full account too.
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", g.t()).await;
    assert_ne!(me["is_guest"], true, "{me}");
    let (status, _) = s
        .post("/_matrix/client/v3/createRoom", full.t(), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.login(&localpart, "upgraded-pw").await;
    assert_eq!(status, 200, "{body}");
    s.shutdown().await;
}

/// Ignore `who` as `u` (their `m.ignored_user_list`).
async fn ignore(s: &TestServer, u: &User, who: &[&str]) {
    let ignored: serde_json::Map<String, Value> =
        who.iter().map(|w| (w.to_string(), json!({}))).collect();
    s.put_account_data(u, "m.ignored_user_list", &json!({"ignored_users": ignored}))
        .await;
}

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_ignored_users_are_left_out_but_their_state_is_not() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    ignore(&s, &alice, &[&bob.user_id]).await;
    s.send_text(&bob, &room, "from-bob").await;
    s.put_state(
        &bob,
        &room,
        "m.room.member",
        &bob.user_id,
        &json!({"membership": "join", "displayname": "Bobby"}),
    )
    .await;
    s.send_text(&alice, &room, "from-alice").await;

    let sync = s.sync(&alice, "").await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(bodies(timeline), vec!["from-alice"], "{timeline}");
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["displayname"] == "Bobby"),
        "state events of ignored users are still sent: {timeline}"
    );
    // Incremental sync too.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    s.send_text(&bob, &room, "bob-again").await;
    s.send_text(&alice, &room, "alice-again").await;
    let next = s.sync(&alice, &format!("?since={since}&timeout=0")).await;
    let timeline = &next["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(bodies(timeline), vec!["alice-again"], "{timeline}");

    // /messages and /context leave them out as well.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        enc(&room)
    );
    let (status, page) = s.get(&path, alice.t()).await;
    assert_eq!(status, 200);
    assert_eq!(
        bodies(&page["chunk"]),
        vec!["alice-again", "from-alice"],
        "{page}"
    );
    let last = s.send_text(&alice, &room, "anchor").await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/context/{}?limit=20",
        enc(&room),
        enc(&last)
    );
    let (status, ctx) = s.get(&path, alice.t()).await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(
        bodies(&ctx["events_before"]),
        vec!["alice-again", "from-alice"]
    );

    // Bob still sees everything; once alice stops ignoring him, so does she (from then on).
    let sync = s.sync(&bob, "").await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert!(bodies(timeline).contains(&"from-bob".to_owned()));
    ignore(&s, &alice, &[]).await;
    let (_, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room)
            ),
            alice.t(),
        )
        .await;
    assert!(
        bodies(&page["chunk"]).contains(&"from-bob".to_owned()),
        "{page}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_from_ignored_users_are_not_shown() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    ignore(&s, &alice, &[&bob.user_id]).await;
    let from_bob = s
        .create_room(&bob, json!({"invite": [alice.user_id]}))
        .await;
    let from_carol = s
        .create_room(&carol, json!({"invite": [alice.user_id]}))
        .await;
    let sync = s.sync(&alice, "").await;
    let invites = &sync["rooms"]["invite"];
    assert!(invites.get(&from_bob).is_none(), "{invites}");
    assert!(invites.get(&from_carol).is_some(), "{invites}");
    s.shutdown().await;
}

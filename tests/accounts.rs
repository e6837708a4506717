//! Registration, login, sessions, passwords, deactivation and devices, over real HTTP against
//! a real server and Postgres.

mod common;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_whoami_logout() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "wonderland-123").await;
    assert_eq!(alice.user_id, "@alice:trellis.test");
    assert!(alice.token.len() >= 40);

    let (status, me) = s.get("/_matrix/client/v3/account/whoami", alice.t()).await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], "@alice:trellis.test");
    assert_eq!(me["device_id"], alice.device_id.as_str());

    // Login by localpart, by full ID, and with the legacy `user` field.
    let (status, body) = s.login("alice", "wonderland-123").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:trellis.test");
    assert_eq!(body["home_server"], "trellis.test");
    let second = User::from_response(&body);
    assert_ne!(second.device_id, alice.device_id);
    let (status, _) = s.login("@alice:trellis.test", "wonderland-123").await;
    assert_eq!(status, 200);
    let (status, _) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "user": "alice", "password": "wonderland-123"}),
        )
        .await;
    assert_eq!(status, 200);

    // Logout revokes that token only.
    let (status, _) = s
        .post("/_matrix/client/v3/logout", second.t(), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", second.t()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let (status, _) = s.get("/_matrix/client/v3/account/whoami", alice.t()).await;
    assert_eq!(status, 200);

    // Logout/all revokes every token.
    let (status, _) = s
        .post("/_matrix/client/v3/logout/all", alice.t(), &json!({}))
        .await;
    assert_eq!(status, 200);
    let r = s.get("/_matrix/client/v3/account/whoami", alice.t()).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.1["soft_logout"], false);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_survives_restart() {
    let mut s = TestServer::start().await;
    let bob = s.register("bob", "builder-builder").await;
    s.restart().await;
    let (status, _) = s.get("/_matrix/client/v3/account/whoami", bob.t()).await;
    assert_eq!(status, 200, "tokens persist across restarts");
    let (status, body) = s.login("bob", "builder-builder").await;
    assert_eq!(status, 200, "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors() {
    let s = TestServer::start().await;
    s.register("carol", "password-one").await;

    // Taken, also case-insensitively.
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "carol", "password": "x"}),
        )
        .await;
    assert_error(&r, 400, "M_USER_IN_USE");
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "CAROL", "password": "x"}),
        )
        .await;
    assert_error(&r, 400, "M_USER_IN_USE");
    // Invalid characters.
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "café", "password": "x"}),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_USERNAME");
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "a b", "password": "x"}),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_USERNAME");
    // Too long.
    let long = "a".repeat(260);
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": long, "password": "x"}),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_USERNAME");

    // The 401 lists the dummy flow.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "dave", "password": "x"}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["flows"][0]["stages"][0], "m.login.dummy");
    // A stage not offered fails the stage, keeps the session.
    let session = body["session"].as_str().unwrap();
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "dave", "password": "x",
                    "auth": {"type": "m.login.registration_token", "token": "nope", "session": session}}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{body}");
    // An unknown session is refused.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "dave", "password": "x", "auth": {"type": "m.login.dummy", "session": "bogus"}}),
        )
        .await;
    assert!(status >= 400);
    // Missing password after auth.
    let (_, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "erin"}),
        )
        .await;
    let session = body["session"].as_str().unwrap();
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "erin", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_error(&r, 400, "M_MISSING_PARAM");

    // Availability.
    let (status, body) = s
        .get("/_matrix/client/v3/register/available?username=frank", None)
        .await;
    assert_eq!((status, body["available"].clone()), (200, json!(true)));
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=carol", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &s.get(
            "/_matrix/client/v3/register/available?username=Bad%20Name",
            None,
        )
        .await,
        400,
        "M_INVALID_USERNAME",
    );

    // inhibit_login: an account but no token.
    let (_, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "gina", "password": "pw-gina-1"}),
        )
        .await;
    let session = body["session"].as_str().unwrap();
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "gina", "password": "pw-gina-1", "inhibit_login": true,
                    "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("access_token").is_none());
    assert_eq!(s.login("gina", "pw-gina-1").await.0, 200);

    // Guests are refused unless enabled.
    let r = s
        .post("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    assert_error(&r, 403, "M_GUEST_ACCESS_FORBIDDEN");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_disabled_tokens_and_guests() {
    let s = TestServer::start_with(|c| c.registration.enabled = false).await;
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "x", "password": "y"}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    s.shutdown().await;

    let s = TestServer::start_with(|c| {
        c.registration.open_without_verification = false;
        c.registration.tokens = vec!["let-me-in".to_owned()];
        c.registration.allow_guests = true;
    })
    .await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "tina", "password": "pw"}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["flows"],
        json!([{"stages": ["m.login.registration_token"]}])
    );
    let session = body["session"].as_str().unwrap().to_owned();
    // Dummy is not enough here.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "tina", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    // A wrong token fails the stage.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "tina", "password": "pw",
                    "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "tina", "password": "pw",
                    "auth": {"type": "m.login.registration_token", "token": "let-me-in", "session": session}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Token validity endpoint.
    let (status, body) = s
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=let-me-in",
            None,
        )
        .await;
    assert_eq!((status, body["valid"].clone()), (200, json!(true)));
    let (_, body) = s
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=no",
            None,
        )
        .await;
    assert_eq!(body["valid"], false);
    // Guests get an account with a token and no password.
    let (status, body) = s
        .post("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let guest = User::from_response(&body);
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", guest.t()).await;
    assert_eq!(me["is_guest"], true);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_and_flows() {
    let s = TestServer::start().await;
    s.register("henry", "correct-pass").await;
    let (status, body) = s.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["flows"][0]["type"], "m.login.password");

    assert_error(&s.login("henry", "wrong-pass").await, 403, "M_FORBIDDEN");
    assert_error(&s.login("nobody", "whatever").await, 403, "M_FORBIDDEN");
    assert_error(
        &s.login("@henry:elsewhere.test", "correct-pass").await,
        403,
        "M_FORBIDDEN",
    );
    let r = s
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.token", "token": "x"}),
        )
        .await;
    assert!(r.0 == 400, "{:?}", r);
    let r = s
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "password": "x"}),
        )
        .await;
    assert_error(&r, 400, "M_MISSING_PARAM");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let r = s
        .get(
            "/_matrix/client/v3/account/whoami",
            Some("trl_not_a_real_token"),
        )
        .await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.1["soft_logout"], false);
    // The deprecated query parameter works too.
    let u = s.register("ivy", "ivy-password").await;
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/account/whoami?access_token={}", u.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.login_per_user = trellis::config::RateLimit {
            per_second: 0.01,
            burst: 2,
        };
    })
    .await;
    s.register("jack", "jack-password").await;
    assert_eq!(s.login("jack", "bad").await.0, 403);
    assert_eq!(s.login("jack", "bad").await.0, 403);
    let r = s.login("jack", "jack-password").await;
    assert_error(&r, 429, "M_LIMIT_EXCEEDED");
    assert!(r.1["retry_after_ms"].as_u64().unwrap() > 0, "{}", r.1);
    s.shutdown().await;

    let s = TestServer::start_with(|c| {
        c.rate_limits.register_per_ip = trellis::config::RateLimit {
            per_second: 0.01,
            burst: 1,
        };
    })
    .await;
    let (status, _) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "k1", "password": "p"}),
        )
        .await;
    assert_eq!(status, 401);
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "k2", "password": "p"}),
        )
        .await;
    assert_error(&r, 429, "M_LIMIT_EXCEEDED");
    s.shutdown().await;
}

/// Complete a password UIAA stage for `user` on `path`, returning the final response.
async fn with_password_uiaa(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    user: &User,
    mut body: serde_json::Value,
    password: &str,
) -> (u16, serde_json::Value) {
    let (status, first) = s.request(method.clone(), path, user.t(), Some(&body)).await;
    assert_eq!(status, 401, "{first}");
    assert_eq!(first["flows"][0]["stages"][0], "m.login.password");
    body["auth"] = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": password,
        "session": first["session"],
    });
    s.request(method, path, user.t(), Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_and_deactivate() {
    let s = TestServer::start().await;
    let kim = s.register("kim", "old-password").await;
    let (_, other) = s.login("kim", "old-password").await;
    let other = User::from_response(&other);

    // Wrong password in the stage: 401 with M_FORBIDDEN, nothing changed.
    let (status, first) = s
        .post(
            "/_matrix/client/v3/account/password",
            kim.t(),
            &json!({"new_password": "new-password"}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/password",
            kim.t(),
            &json!({"new_password": "new-password", "auth": {
                "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "kim"},
                "password": "not-it", "session": first["session"]}}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::POST,
        "/_matrix/client/v3/account/password",
        &kim,
        json!({"new_password": "new-password", "logout_devices": true}),
        "old-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_error(&s.login("kim", "old-password").await, 403, "M_FORBIDDEN");
    assert_eq!(s.login("kim", "new-password").await.0, 200);
    // Other devices were logged out, the caller's was kept.
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", other.t())
            .await
            .0,
        401
    );
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", kim.t()).await.0,
        200
    );

    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::POST,
        "/_matrix/client/v3/account/deactivate",
        &kim,
        json!({}),
        "new-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", kim.t()).await.0,
        401
    );
    assert_error(&s.login("kim", "new-password").await, 403, "M_FORBIDDEN");
    // The user ID is never handed out again.
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "kim", "password": "p"}),
        )
        .await;
    assert_error(&r, 400, "M_USER_IN_USE");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_list_get_update_delete() {
    let s = TestServer::start().await;
    let lee = s.register("lee", "lee-password").await;
    let (_, b) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "lee"},
                    "password": "lee-password", "device_id": "PHONE", "initial_device_display_name": "Lee's phone"}),
        )
        .await;
    let phone = User::from_response(&b);
    assert_eq!(phone.device_id, "PHONE");

    let (status, body) = s.get("/_matrix/client/v3/devices", lee.t()).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"PHONE") && ids.contains(&lee.device_id.as_str()),
        "{body}"
    );

    let (status, body) = s.get("/_matrix/client/v3/devices/PHONE", lee.t()).await;
    assert_eq!(status, 200);
    assert_eq!(body["display_name"], "Lee's phone");
    assert!(body["last_seen_ts"].is_u64());
    assert_error(
        &s.get("/_matrix/client/v3/devices/NOPE", lee.t()).await,
        404,
        "M_NOT_FOUND",
    );

    let (status, _) = s
        .put(
            "/_matrix/client/v3/devices/PHONE",
            lee.t(),
            &json!({"display_name": "Old phone"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = s.get("/_matrix/client/v3/devices/PHONE", lee.t()).await;
    assert_eq!(body["display_name"], "Old phone");
    assert_error(
        &s.put(
            "/_matrix/client/v3/devices/NOPE",
            lee.t(),
            &json!({"display_name": "x"}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    // Deleting needs the password; afterwards the device's token is dead. A device that is
    // not there counts as deleted already (the spec's 200), after the password too.
    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::DELETE,
        "/_matrix/client/v3/devices/NOPE",
        &lee,
        json!({}),
        "lee-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::DELETE,
        "/_matrix/client/v3/devices/PHONE",
        &lee,
        json!({}),
        "lee-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", phone.t())
            .await
            .0,
        401
    );

    // Bulk delete.
    let (_, b) = s.login("lee", "lee-password").await;
    let tablet = User::from_response(&b);
    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::POST,
        "/_matrix/client/v3/delete_devices",
        &lee,
        json!({"devices": [tablet.device_id]}),
        "lee-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.get("/_matrix/client/v3/account/whoami", tablet.t())
            .await
            .0,
        401
    );
    let (_, body) = s.get("/_matrix/client/v3/devices", lee.t()).await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uiaa_session_is_bound_to_its_user() {
    let s = TestServer::start().await;
    let a = s.register("mia", "mia-password").await;
    let b = s.register("ned", "ned-password").await;
    let (_, first) = s
        .post(
            "/_matrix/client/v3/delete_devices",
            a.t(),
            &json!({"devices": []}),
        )
        .await;
    // Ned tries to finish Mia's session with his own password.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/delete_devices",
            b.t(),
            &json!({"devices": [], "auth": {"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "ned"}, "password": "ned-password",
                "session": first["session"]}}),
        )
        .await;
    assert_eq!(status, 403);
    // Mia cannot use Ned's password either: refused outright (as Synapse does), where a
    // wrong password is a stage to try again.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/delete_devices",
            a.t(),
            &json!({"devices": [], "auth": {"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "ned"}, "password": "ned-password",
                "session": first["session"]}}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (status, body) = s
        .post(
            "/_matrix/client/v3/delete_devices",
            a.t(),
            &json!({"devices": [], "auth": {"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "ned"}, "password": "not-neds",
                "session": first["session"]}}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_registration() {
    use hmac::{Hmac, Mac};
    let s = TestServer::start_with(|c| {
        c.registration.enabled = false;
        c.registration.shared_secret = Some("s3cret".to_owned());
    })
    .await;
    let mac = |nonce: &str, user: &str, pw: &str, admin: bool| {
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        m.update(
            format!(
                "{nonce}\0{user}\0{pw}\0{}",
                if admin { "admin" } else { "notadmin" }
            )
            .as_bytes(),
        );
        hex::encode(m.finalize().into_bytes())
    };
    let (status, body) = s.get("/_synapse/admin/v1/register", None).await;
    assert_eq!(status, 200);
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    let (status, body) = s
        .post(
            "/_synapse/admin/v1/register",
            None,
            &json!({"nonce": nonce, "username": "root", "password": "rootpw", "admin": true,
                    "mac": mac(&nonce, "root", "rootpw", true)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@root:trellis.test");
    assert_eq!(body["home_server"], "trellis.test");
    let (status, _) = s
        .get(
            "/_matrix/client/v3/account/whoami",
            body["access_token"].as_str(),
        )
        .await;
    assert_eq!(status, 200);
    // The nonce is single-use.
    let r = s
        .post(
            "/_synapse/admin/v1/register",
            None,
            &json!({"nonce": nonce, "username": "root2", "password": "p", "mac": mac(&nonce, "root2", "p", false)}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    // A wrong MAC is refused.
    let (_, body) = s.get("/_synapse/admin/v1/register", None).await;
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    let r = s
        .post(
            "/_synapse/admin/v1/register",
            None,
            &json!({"nonce": nonce, "username": "eve", "password": "p", "mac": mac(&nonce, "eve", "p", true)}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    // Malformed bodies.
    let r = s
        .request(
            reqwest::Method::POST,
            "/_synapse/admin/v1/register",
            None,
            None,
        )
        .await;
    assert_error(&r, 400, "M_NOT_JSON");
    let r = s
        .post("/_synapse/admin/v1/register", None, &json!({"nonce": 1}))
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    s.shutdown().await;

    // Without a secret the endpoint is off.
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_synapse/admin/v1/register", None).await,
        400,
        "M_BAD_JSON",
    );
    s.shutdown().await;
}

/// Bad login bodies are Matrix errors, never a dropped connection: the parser must not be
/// able to panic on network input.
#[tokio::test]
async fn malformed_login_bodies_get_matrix_errors() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = s.url("/_matrix/client/v3/login");
    for body in [
        "{}",
        "",
        "[]",
        "null",
        "{\"type\":\"m.login.password\"}",
        "{\"type\":5}",
        "{",
    ] {
        let res = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{body:?}: the connection failed: {e}"));
        let status = res.status().as_u16();
        let answer: serde_json::Value = res.json().await.unwrap_or_default();
        assert!(
            status == 400 || status == 401 || status == 403,
            "{body:?}: {status} {answer}"
        );
        assert!(answer["errcode"].is_string(), "{body:?}: {answer}");
    }
    let res = http.post(&url).send().await.expect("no body at all");
    assert_eq!(res.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_only_when_asked_and_each_used_once() {
    let s = TestServer::start().await;
    s.register("alice", "alice-password").await;
    let login = |refresh: bool| {
        let s = &s;
        async move {
            let (status, body) = s
                .post(
                    "/_matrix/client/v3/login",
                    None,
                    &json!({"type": "m.login.password",
                            "identifier": {"type": "m.id.user", "user": "alice"},
                            "password": "alice-password", "refresh_token": refresh}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    // Not asked: a token that lasts, and no refresh token.
    let plain = login(false).await;
    assert!(plain.get("refresh_token").is_none(), "{plain}");
    assert!(plain.get("expires_in_ms").is_none(), "{plain}");

    let asked = login(true).await;
    assert_eq!(asked["expires_in_ms"], 300_000, "{asked}");
    let refresh = asked["refresh_token"].as_str().unwrap().to_owned();
    let access = asked["access_token"].as_str().unwrap().to_owned();
    // Once expired (here: made so in the database, before first use), the access token
    // answers with a soft logout, which tells the client to refresh.
    let db = common::media::db(&s).await;
    let hash = trellis::account::tokens::hash_token(&access);
    sqlx::query("UPDATE access_tokens SET expires_ts = 0 WHERE token_hash = $1")
        .bind(&hash[..])
        .execute(&db)
        .await
        .unwrap();
    let (status, body) = s
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
    assert_eq!(body["soft_logout"], true);

    let (status, renewed) = s
        .post(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["expires_in_ms"], 300_000);
    let new_access = renewed["access_token"].as_str().unwrap();
    let (status, me) = s
        .get("/_matrix/client/v3/account/whoami", Some(new_access))
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["device_id"], asked["device_id"]);
    // A refresh token works once; the new one works.
    assert_error(
        &s.post(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": refresh}),
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let (status, _) = s
        .post(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": renewed["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200);
    // Logging out ends the refresh tokens with the device.
    let other = login(true).await;
    let (status, _) = s
        .post(
            "/_matrix/client/v3/logout",
            other["access_token"].as_str(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_error(
        &s.post(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": other["refresh_token"]}),
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_device_is_never_deleted() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let eve = s.register("eve", "eve-password").await;
    let (_, b) = s.login("alice", "alice-password").await;
    let phone = User::from_response(&b);
    let alive = |u: &User| {
        let (s, t) = (&s, u.token.clone());
        async move { s.get("/_matrix/client/v3/account/whoami", Some(&t)).await.0 }
    };

    // Eve with Alice's stolen token and her own password: 403, the phone stays.
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let (status, first) = s
        .request(reqwest::Method::DELETE, &path, alice.t(), Some(&json!({})))
        .await;
    assert_eq!(status, 401, "{first}");
    let (status, body) = s
        .request(
            reqwest::Method::DELETE,
            &path,
            alice.t(),
            Some(&json!({"auth": {"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": eve.user_id},
                "password": "eve-password", "session": first["session"]}})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(alive(&phone).await, 200);

    // Eve naming Alice's device with her own token and password: answered as a device she
    // does not have (the spec's 200 for one gone already), and Alice's device stays.
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::DELETE,
        &path,
        &eve,
        json!({}),
        "eve-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = with_password_uiaa(
        &s,
        reqwest::Method::POST,
        "/_matrix/client/v3/delete_devices",
        &eve,
        json!({"devices": [phone.device_id, alice.device_id]}),
        "eve-password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alive(&phone).await, 200);
    assert_eq!(alive(&alice).await, 200);
    assert_eq!(
        alive(&eve).await,
        200,
        "Eve's own device is not among those named"
    );
    let (_, devices) = s.get("/_matrix/client/v3/devices", alice.t()).await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(2),
        "{devices}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whois_for_oneself_and_for_a_server_admin() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let (_, b) = s.login("alice", "alice-password").await;
    let phone = User::from_response(&b);
    let whois = |u: &str| format!("/_matrix/client/v3/admin/whois/{}", enc(u));

    // Alice on herself: both devices, each a session with its recorded connection.
    let (status, body) = s.get(&whois(&alice.user_id), alice.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], alice.user_id.as_str(), "{body}");
    let devices = body["devices"].as_object().expect("devices");
    assert_eq!(devices.len(), 2, "{body}");
    for device in [&alice.device_id, &phone.device_id] {
        let sessions = devices[device.as_str()]["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("sessions of {device}: {body}"));
        assert_eq!(sessions.len(), 1, "{body}");
        let connections = sessions[0]["connections"].as_array().expect("connections");
        assert_eq!(connections.len(), 1, "{body}");
        assert_eq!(connections[0]["ip"], "127.0.0.1", "{body}");
        assert!(connections[0]["last_seen"].is_u64(), "{body}");
    }
    let (status, r0) = s
        .get(
            &format!("/_matrix/client/r0/admin/whois/{}", enc(&alice.user_id)),
            phone.t(),
        )
        .await;
    assert_eq!(status, 200, "{r0}");

    // Bob is no admin: not on Alice.
    let (status, body) = s.get(&whois(&alice.user_id), bob.t()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");

    // Made one, he may; not for users of other servers.
    let pool = common::media::db(&s).await;
    sqlx::query("UPDATE users SET is_admin = true WHERE user_id = $1")
        .bind(&bob.user_id)
        .execute(&pool)
        .await
        .expect("make bob admin");
    let (status, body) = s.get(&whois(&alice.user_id), bob.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["devices"].as_object().map(|d| d.len()),
        Some(2),
        "{body}"
    );
    let (status, body) = s.get(&whois("@someone:elsewhere.test"), bob.t()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.get(&whois("not-a-user-id"), bob.t()).await;
    assert_eq!(status, 400, "{body}");
}

/// A device's last-seen time follows its requests, not only its login: written in the
/// background at the device's first request and then at most every few minutes.
#[tokio::test]
async fn a_devices_last_seen_time_follows_its_requests() {
    let s = TestServer::start().await;
    // Registration writes the device's row; no authenticated request is made before the
    // row is aged below, so no background write can race with it.
    let alice = s.register("alice", "pw-alice-1").await;
    let device = alice.device_id.clone();
    let url = s.config.database.url.clone().expect("database url");
    let db = sqlx::PgPool::connect(&url).await.expect("database");
    sqlx::query("UPDATE devices SET last_seen_ts = 1, last_seen_ip = NULL WHERE device_id = $1")
        .bind(&device)
        .execute(&db)
        .await
        .expect("age the device");

    let (st, _) = s.get("/_matrix/client/v3/account/whoami", alice.t()).await;
    assert_eq!(st, 200);
    common::federation::eventually("the request shows as the device's last", || async {
        let (_, d) = s
            .get(&format!("/_matrix/client/v3/devices/{device}"), alice.t())
            .await;
        d["last_seen_ts"].as_i64().is_some_and(|t| t > 1) && d["last_seen_ip"] == "127.0.0.1"
    })
    .await;

    // Within the interval, further requests write nothing.
    sqlx::query("UPDATE devices SET last_seen_ts = 2 WHERE device_id = $1")
        .bind(&device)
        .execute(&db)
        .await
        .expect("age the device again");
    for _ in 0..3 {
        let (st, _) = s.get("/_matrix/client/v3/account/whoami", alice.t()).await;
        assert_eq!(st, 200);
    }
    let (_, d) = s
        .get(&format!("/_matrix/client/v3/devices/{device}"), alice.t())
        .await;
    assert_eq!(d["last_seen_ts"], 2, "{d}");
}

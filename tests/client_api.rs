//! Discovery, profiles, account data, push rules, filters and the generic error and CORS
//! behaviour of the HTTP layer.

mod common;

use common::server::{TestServer, assert_error};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_endpoints() {
    let s = TestServer::start_with(|c| {
        c.well_known.client = Some("https://matrix.trellis.test".to_owned());
        c.well_known.server = Some("matrix.trellis.test:443".to_owned());
    })
    .await;
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert!(
        body["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.11")),
        "{body}"
    );

    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["m.homeserver"]["base_url"],
        "https://matrix.trellis.test"
    );
    let (status, body) = s.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["m.server"], "matrix.trellis.test:443");

    let u = s.register("olga", "olga-password").await;
    let (status, body) = s.get("/_matrix/client/v3/capabilities", u.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capabilities"]["m.room_versions"]["default"], "12");
    for v in ["10", "11", "12"] {
        assert_eq!(
            body["capabilities"]["m.room_versions"]["available"][v],
            "stable"
        );
    }
    assert_error(
        &s.get("/_matrix/client/v3/capabilities", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    s.shutdown().await;

    // Unconfigured, the client well-known names the client listener as the client reached
    // it; a Host that could bend the URL is not echoed.
    let s = TestServer::start().await;
    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["m.homeserver"]["base_url"], s.url("").as_str());
    let (status, _) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    let bent = reqwest::Client::new()
        .get(s.url("/.well-known/matrix/client"))
        .header("host", "evil.example/path?")
        .send()
        .await
        .unwrap();
    assert_eq!(bent.status().as_u16(), 404);
    assert_error(
        &s.get("/.well-known/matrix/server", None).await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_errors_and_cors() {
    let s = TestServer::start_with(|c| {
        c.limits.max_request_body = 4096;
        c.limits.max_event_size = 2048;
    })
    .await;
    let u = s.register("pia", "pia-password").await;

    assert_error(
        &s.get("/_matrix/client/v3/no/such/endpoint", None).await,
        404,
        "M_UNRECOGNIZED",
    );
    // A known path with the wrong method.
    let r = s
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/account/whoami",
            u.t(),
            None,
        )
        .await;
    assert_error(&r, 405, "M_UNRECOGNIZED");

    // Invalid JSON vs. wrong shape.
    let res = s
        .http
        .post(s.url("/_matrix/client/v3/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");
    let r = s
        .post("/_matrix/client/v3/login", None, &json!({"type": 5}))
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", u.user_id),
            u.t(),
            &json!({"displayname": 7}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");

    // Too large.
    let big = "x".repeat(10_000);
    let r = s
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "password": big}),
        )
        .await;
    assert_error(&r, 413, "M_TOO_LARGE");

    // CORS on ordinary responses and pre-flight.
    let res = s
        .http
        .get(s.url("/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let res = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/_matrix/client/v3/login"))
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(
        res.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        res.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles() {
    let s = TestServer::start().await;
    let u = s.register("quinn", "quinn-password").await;
    let other = s.register("rosa", "rosa-password").await;
    let base = format!("/_matrix/client/v3/profile/{}", u.user_id);

    // Registration sets the display name to the localpart, as Synapse does.
    let (status, body) = s.get(&format!("{base}/displayname"), None).await;
    assert_eq!((status, body["displayname"].clone()), (200, json!("quinn")));

    assert_eq!(
        s.put(
            &format!("{base}/displayname"),
            u.t(),
            &json!({"displayname": "Quinn Q"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.put(
            &format!("{base}/avatar_url"),
            u.t(),
            &json!({"avatar_url": "mxc://trellis.test/abc"})
        )
        .await
        .0,
        200
    );
    let (status, body) = s.get(&base, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["displayname"], "Quinn Q");
    assert_eq!(body["avatar_url"], "mxc://trellis.test/abc");
    let (_, body) = s.get(&format!("{base}/avatar_url"), None).await;
    assert_eq!(body["avatar_url"], "mxc://trellis.test/abc");

    // Someone else cannot change it; bad values are refused.
    let r = s
        .put(
            &format!("{base}/displayname"),
            other.t(),
            &json!({"displayname": "hacked"}),
        )
        .await;
    assert_error(&r, 403, "M_FORBIDDEN");
    let r = s
        .put(
            &format!("{base}/avatar_url"),
            u.t(),
            &json!({"avatar_url": "https://x/y.png"}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .put(
            &format!("{base}/displayname"),
            u.t(),
            &json!({"displayname": "n".repeat(300)}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .put(
            &format!("{base}/displayname"),
            None,
            &json!({"displayname": "x"}),
        )
        .await;
    assert_error(&r, 401, "M_MISSING_TOKEN");

    // Unknown users.
    assert_error(
        &s.get("/_matrix/client/v3/profile/@ghost:trellis.test", None)
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(
            "/_matrix/client/v3/profile/@ghost:trellis.test/displayname",
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    let r = s
        .get("/_matrix/client/v3/profile/not-a-user-id", None)
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    // Clearing.
    assert_eq!(
        s.put(
            &format!("{base}/displayname"),
            u.t(),
            &json!({"displayname": null})
        )
        .await
        .0,
        200
    );
    let (_, body) = s.get(&base, None).await;
    assert!(body.get("displayname").is_none(), "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_data_global_and_per_room() {
    let s = TestServer::start().await;
    let u = s.register("sam", "sam-password").await;
    let other = s.register("ted", "ted-password").await;
    let global = format!(
        "/_matrix/client/v3/user/{}/account_data/org.example.settings",
        u.user_id
    );
    let room = format!(
        "/_matrix/client/v3/user/{}/rooms/!room:trellis.test/account_data/org.example.tag",
        u.user_id
    );

    assert_error(&s.get(&global, u.t()).await, 404, "M_NOT_FOUND");
    assert_eq!(
        s.put(&global, u.t(), &json!({"theme": "dark"})).await.0,
        200
    );
    let (status, body) = s.get(&global, u.t()).await;
    assert_eq!((status, body), (200, json!({"theme": "dark"})));
    assert_eq!(
        s.put(&global, u.t(), &json!({"theme": "light"})).await.0,
        200
    );
    assert_eq!(s.get(&global, u.t()).await.1, json!({"theme": "light"}));

    assert_error(&s.get(&room, u.t()).await, 404, "M_NOT_FOUND");
    assert_eq!(s.put(&room, u.t(), &json!({"order": 1})).await.0, 200);
    assert_eq!(s.get(&room, u.t()).await.1, json!({"order": 1}));
    // Room and global data are separate.
    assert_eq!(s.get(&global, u.t()).await.1, json!({"theme": "light"}));

    assert_error(&s.get(&global, other.t()).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.put(&global, other.t(), &json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let r = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.push_rules",
                u.user_id
            ),
            u.t(),
            &json!({}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/!room:trellis.test/account_data/m.fully_read",
                u.user_id
            ),
            u.t(),
            &json!({"event_id": "$x"}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s.put(&global, u.t(), &json!([1, 2])).await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/not-a-room/account_data/x",
                u.user_id
            ),
            u.t(),
            &json!({}),
        )
        .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules() {
    let s = TestServer::start().await;
    let u = s.register("uma", "uma-password").await;
    let (status, body) = s.get("/_matrix/client/v3/pushrules/", u.t()).await;
    assert_eq!(status, 200);
    let overrides = body["global"]["override"].as_array().unwrap();
    assert!(
        overrides.iter().any(|r| r["rule_id"] == ".m.rule.master"),
        "server defaults present"
    );
    let (status, body) = s.get("/_matrix/client/v3/pushrules/global/", u.t()).await;
    assert_eq!(status, 200);
    assert!(body["override"].is_array(), "{body}");

    // Add a keyword rule, read it back, change it, delete it.
    let rule = "/_matrix/client/v3/pushrules/global/content/cake";
    let (status, body) = s
        .put(
            rule,
            u.t(),
            &json!({"pattern": "cake", "actions": ["notify"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get(rule, u.t()).await;
    assert_eq!(status, 200);
    assert_eq!(body["pattern"], "cake");
    assert_eq!(body["enabled"], true);
    assert_eq!(
        s.put(
            &format!("{rule}/enabled"),
            u.t(),
            &json!({"enabled": false})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.get(&format!("{rule}/enabled"), u.t()).await.1["enabled"],
        false
    );
    assert_eq!(
        s.put(&format!("{rule}/actions"), u.t(), &json!({"actions": []}))
            .await
            .0,
        200
    );
    assert_eq!(
        s.get(&format!("{rule}/actions"), u.t()).await.1["actions"],
        json!([])
    );
    assert_eq!(s.delete(rule, u.t(), None).await.0, 200);
    assert_error(&s.get(rule, u.t()).await, 404, "M_NOT_FOUND");

    // Server-default rules can be toggled but not deleted.
    let master = "/_matrix/client/v3/pushrules/global/override/.m.rule.master";
    assert_eq!(
        s.put(
            &format!("{master}/enabled"),
            u.t(),
            &json!({"enabled": true})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.get(&format!("{master}/enabled"), u.t()).await.1["enabled"],
        true
    );
    assert_error(&s.delete(master, u.t(), None).await, 400, "M_BAD_JSON");
    // Other errors.
    assert_error(
        &s.get("/_matrix/client/v3/pushrules/global/override/nope", u.t())
            .await,
        404,
        "M_NOT_FOUND",
    );
    let r = s
        .put(
            "/_matrix/client/v3/pushrules/global/override/.custom",
            u.t(),
            &json!({"actions": [], "conditions": []}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .put(
            "/_matrix/client/v3/pushrules/global/override/mine?before=nope",
            u.t(),
            &json!({"actions": [], "conditions": []}),
        )
        .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    assert_error(
        &s.get("/_matrix/client/v3/pushrules/", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters() {
    let s = TestServer::start().await;
    let u = s.register("vic", "vic-password").await;
    let other = s.register("wes", "wes-password").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", u.user_id);
    let filter = json!({
        "room": {"timeline": {"limit": 10, "types": ["m.room.message"]}, "state": {"lazy_load_members": true}},
        "event_fields": ["type", "content.body"],
        "presence": {"not_types": ["m.presence"]}
    });
    let (status, body) = s.post(&path, u.t(), &filter).await;
    assert_eq!(status, 200, "{body}");
    let id = body["filter_id"].as_str().unwrap().to_owned();
    let (status, body) = s.get(&format!("{path}/{id}"), u.t()).await;
    assert_eq!(status, 200);
    assert_eq!(body["room"]["timeline"]["limit"], 10);
    assert_eq!(body["room"]["timeline"]["types"], json!(["m.room.message"]));
    assert_eq!(body["event_fields"], json!(["type", "content.body"]));

    assert_error(
        &s.get(&format!("{path}/999999"), u.t()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{path}/abc"), u.t()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{path}/{id}"), other.t()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&s.post(&path, other.t(), &filter).await, 403, "M_FORBIDDEN");
    let r = s
        .post(
            &path,
            u.t(),
            &json!({"room": {"timeline": {"limit": "ten"}}}),
        )
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s
        .post(&path, u.t(), &json!({"room": {"timeline": {"limit": 0}}}))
        .await;
    assert_error(&r, 400, "M_BAD_JSON");
    let r = s.post(&path, u.t(), &json!({"event_format": "xml"})).await;
    assert_error(&r, 400, "M_BAD_JSON");
    s.shutdown().await;
}

/// A profile change reaches every room the user is joined to as a new member event, as the
/// spec asks (matrix-nio shows members by it); a change that alters nothing sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_changes_reach_the_users_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let shared = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let own = s.create_room(&alice, json!({})).await;
    let left = s.create_room(&bob, json!({"preset": "public_chat"})).await;
    s.join(&bob, &shared).await;
    s.join(&alice, &left).await;
    let r = s
        .post(
            &format!("/_matrix/client/v3/rooms/{left}/leave"),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let since = s.sync(&bob, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    let base = format!("/_matrix/client/v3/profile/{}", alice.user_id);
    let r = s
        .put(
            &format!("{base}/displayname"),
            alice.t(),
            &json!({"displayname": "Alice L"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = s
        .put(
            &format!("{base}/avatar_url"),
            alice.t(),
            &json!({"avatar_url": "mxc://trellis.test/a"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let member = |room: String, reader: &common::server::User| {
        let s = &s;
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
            alice.user_id
        );
        let token = reader.token.clone();
        async move { s.get(&path, Some(&token)).await }
    };
    for room in [&shared, &own] {
        let (status, content) = member(room.clone(), &alice).await;
        assert_eq!(status, 200, "{content}");
        assert_eq!(content["membership"], "join");
        assert_eq!(content["displayname"], "Alice L");
        assert_eq!(content["avatar_url"], "mxc://trellis.test/a");
    }
    let (_, content) = member(left.clone(), &bob).await;
    assert_eq!(content["membership"], "leave", "a left room is not touched");

    // Bob sees both changes in the room they share, as member events from alice.
    let next = s.sync(&bob, &format!("?since={since}")).await;
    let changes: Vec<&serde_json::Value> = next["rooms"]["join"][&shared]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
        .collect();
    assert_eq!(changes.len(), 2, "{next}");
    assert_eq!(changes[1]["content"]["displayname"], "Alice L");
    assert_eq!(changes[1]["content"]["avatar_url"], "mxc://trellis.test/a");

    // The same name again changes nothing, so no new event.
    let since = next["next_batch"].as_str().expect("next_batch").to_owned();
    let r = s
        .put(
            &format!("{base}/displayname"),
            alice.t(),
            &json!({"displayname": "Alice L"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let after = s.sync(&bob, &format!("?since={since}&timeout=0")).await;
    assert!(after["rooms"]["join"][&shared].is_null(), "{after}");
}

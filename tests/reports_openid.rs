//! Reports of events and rooms, and OpenID tokens checked by a third party through the
//! federation listener.

mod common;

use common::federation::insecure_client;
use common::server::{TestServer, assert_error, enc};
use serde_json::{Value, json};

async fn stored_reports(s: &TestServer) -> Vec<(String, String, Option<String>, String)> {
    let db = common::media::db(s).await;
    sqlx::query_as("SELECT user_id, room_id, event_id, reason FROM reports ORDER BY report_id")
        .fetch_all(&db)
        .await
        .unwrap()
}

#[tokio::test]
async fn reports_reach_the_administrators_only_for_what_the_reporter_sees() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let spam = s.send_text(&alice, &room, "buy now").await;

    let report = format!("/_matrix/client/v3/rooms/{room}/report/{}", enc(&spam));
    let (status, body) = s
        .post(&report, bob.t(), &json!({"reason": "spam", "score": -100}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            bob.t(),
            &json!({"reason": "whole room is spam"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        stored_reports(&s).await,
        vec![
            (
                bob.user_id.clone(),
                room.clone(),
                Some(spam.clone()),
                "spam".to_owned()
            ),
            (
                bob.user_id.clone(),
                room.clone(),
                None,
                "whole room is spam".to_owned()
            ),
        ]
    );

    // An event the reporter may not see answers as an unknown one; nothing is stored.
    let carol = s.register("carol", "carol-password").await;
    let private = s.create_room(&alice, json!({})).await;
    let hidden = s.send_text(&alice, &private, "hidden").await;
    let hidden_report = format!("/_matrix/client/v3/rooms/{private}/report/{}", enc(&hidden));
    assert_error(
        &s.post(&hidden_report, carol.t(), &json!({"reason": "x"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{}", enc("$unknown")),
            bob.t(),
            &json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(
            &format!(
                "/_matrix/client/v3/rooms/!nowhere:{}/report",
                s.server_name()
            ),
            bob.t(),
            &json!({"reason": "x"}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.post(&report, bob.t(), &json!({"reason": "x".repeat(5000)}))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.post(&report, None, &json!({})).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_eq!(stored_reports(&s).await.len(), 2);
}

async fn userinfo(s: &TestServer, token: &str) -> (u16, Value) {
    let url = s.federation_url(&format!(
        "/_matrix/federation/v1/openid/userinfo?access_token={}",
        enc(token)
    ));
    let response = insecure_client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn openid_tokens_prove_who_a_user_is_to_a_third_party() {
    let s = TestServer::start_federating().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let path = format!(
        "/_matrix/client/v3/user/{}/openid/request_token",
        enc(&alice.user_id)
    );
    let (status, body) = s.post(&path, alice.t(), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["matrix_server_name"], s.server_name());
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    // Not an access token: it opens nothing on the client API.
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(token))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        userinfo(&s, token).await,
        (200, json!({"sub": alice.user_id}))
    );
    let (status, body) = userinfo(&s, "made-up").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
    // Expired tokens are refused.
    let db = common::media::db(&s).await;
    sqlx::query("UPDATE openid_tokens SET expires_ts = 0")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(userinfo(&s, token).await.0, 401);
    // Only for oneself.
    assert_error(
        &s.post(&path, bob.t(), &json!({})).await,
        403,
        "M_FORBIDDEN",
    );
}

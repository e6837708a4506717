//! Two Trellis servers federating over TLS on loopback: keys, signed requests, queries.

mod common;

use common::server::{TestServer, assert_error};
use serde_json::json;

fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_profile_over_signed_federation() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let bob = b.register("bob", "bob-password").await;
    let r = b
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            bob.t(),
            &json!({"displayname": "Bob B"}),
        )
        .await;
    assert_eq!(r.0, 200);

    // Alice's server asks Bob's with a signed request; Bob's server fetches Alice's server's
    // key over TLS to check the signature.
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v3/profile/{}", bob.user_id),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "Bob B");
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            alice.t(),
        )
        .await;
    assert_eq!((status, body["displayname"].clone()), (200, json!("Bob B")));
    // An unknown remote user is a 404, not an error of ours.
    let ghost = format!("@ghost:{}", b.server_name());
    assert_error(
        &a.get(&format!("/_matrix/client/v3/profile/{ghost}"), alice.t())
            .await,
        404,
        "M_NOT_FOUND",
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_forged_requests_get_401() {
    let b = TestServer::start_federating().await;
    let bob = b.register("bob", "bob-password").await;
    let http = insecure_client();
    let url = b.federation_url(&format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        bob.user_id
    ));

    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    // A well-formed header from a server that does not exist cannot be verified.
    let forged = format!(
        "X-Matrix origin=\"127.0.0.1:1\",destination=\"{}\",key=\"ed25519:a_bcd\",sig=\"dGVzdA\"",
        b.server_name()
    );
    let res = http
        .get(&url)
        .header("authorization", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Keys and version need no signature.
    let res = http
        .get(b.federation_url("/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_federation_refuses_private_addresses_by_default() {
    let b = TestServer::start_federating().await;
    let a = TestServer::start().await; // no allow-list: loopback is off limits
    let alice = a.register("alice", "alice-password").await;
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v3/profile/@bob:{}", b.server_name()),
            alice.t(),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_resolve_across_servers() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let bob = b.register("bob", "bob-password").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "lobby"}),
        )
        .await;

    let alias = format!("#lobby:{}", a.server_name());
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        common::server::enc(&alias)
    );
    let (status, body) = b.get(&path, bob.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["servers"][0], a.server_name());

    let missing = format!("#nothing:{}", a.server_name());
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        common::server::enc(&missing)
    );
    assert_error(&b.get(&path, bob.t()).await, 404, "M_NOT_FOUND");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notary_serves_keys_countersigned() {
    use ruma::serde::Base64;
    use ruma::signatures::{PublicKeyMap, PublicKeySet, verify_json};
    let a = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let http = insecure_client();
    let own_keys = |v: &serde_json::Value| -> PublicKeySet {
        let mut set = PublicKeySet::new();
        for (id, k) in v["verify_keys"].as_object().unwrap() {
            set.insert(
                id.clone(),
                Base64::parse(k["key"].as_str().unwrap()).unwrap(),
            );
        }
        set
    };
    let a_keys: serde_json::Value = http
        .get(a.federation_url("/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // A vouches for C's keys: C's self-signature and A's countersignature both verify.
    let url = a.federation_url(&format!("/_matrix/key/v2/query/{}", c.server_name()));
    let body: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let keys = &body["server_keys"][0];
    assert_eq!(keys["server_name"], c.server_name());
    let object: ruma::CanonicalJsonObject = serde_json::from_value(keys.clone()).unwrap();
    let mut map = PublicKeyMap::new();
    map.insert(c.server_name().to_owned(), own_keys(keys));
    map.insert(a.server_name().to_owned(), own_keys(&a_keys));
    verify_json(&map, &object).expect("both signatures verify");
    assert!(keys["signatures"][a.server_name()].is_object());

    // Batch form, including an unreachable server (left out) and the notary itself.
    let res = http
        .post(a.federation_url("/_matrix/key/v2/query"))
        .json(
            &json!({"server_keys": {c.server_name(): {}, "127.0.0.1:1": {}, a.server_name(): {}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let names: Vec<&str> = body["server_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["server_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&c.server_name()) && names.contains(&a.server_name()));

    // The older forms naming a key ID (removed from the spec, still asked for): the same
    // keys, whichever ID is named.
    let key_id = a_keys["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    for id in [key_id.as_str(), "ed25519:unknown"] {
        let own: serde_json::Value = http
            .get(a.federation_url(&format!("/_matrix/key/v2/server/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(own["server_name"], a.server_name(), "{own}");
        assert_eq!(own["verify_keys"], a_keys["verify_keys"], "{own}");
        let url = a.federation_url(&format!(
            "/_matrix/key/v2/query/{}/{id}?minimum_valid_until_ts=0",
            c.server_name()
        ));
        let body: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            body["server_keys"][0]["server_name"],
            c.server_name(),
            "{body}"
        );
        assert!(
            body["server_keys"][0]["signatures"][a.server_name()].is_object(),
            "{body}"
        );
    }
    let res = http
        .get(a.federation_url("/_matrix/key/v2/query/bad%20name/ed25519:x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_an_unreachable_server_come_from_a_trusted_notary() {
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let http = insecure_client();
    // B learns C's keys while C is up.
    let url = b.federation_url(&format!("/_matrix/key/v2/query/{}", c.server_name()));
    let body: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["server_keys"][0]["server_name"], c.server_name());
    let c_name = c.server_name().to_owned();
    c.shutdown().await;

    // A trusts B as a notary; with C down, A gets C's keys through B.
    let b_name = b.server_name().to_owned();
    let a = TestServer::start_with(move |cfg| {
        common::server::make_federating(cfg);
        cfg.federation.trusted_key_servers = vec![b_name];
    })
    .await;
    let url = a.federation_url(&format!("/_matrix/key/v2/query/{c_name}"));
    let body: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let keys = &body["server_keys"][0];
    assert_eq!(keys["server_name"], c_name.as_str(), "{body}");
    assert!(
        keys["signatures"][b.server_name()].is_object(),
        "B vouched for them"
    );
    assert!(
        keys["signatures"][a.server_name()].is_object(),
        "A countersigned"
    );

    // Without a notary, C's keys cannot be had.
    let d = TestServer::start_federating().await;
    let url = d.federation_url(&format!("/_matrix/key/v2/query/{c_name}"));
    let body: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["server_keys"], json!([]));
    a.shutdown().await;
    b.shutdown().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_of_another_server() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let bob = b.register("bob", "bob-password").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "visibility": "public", "name": "Town square"}),
        )
        .await;
    a.create_room(&alice, json!({"preset": "private_chat"}))
        .await;

    let server = common::server::enc(a.server_name());
    let (status, body) = b
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={server}"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let chunk = body["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1, "{body}");
    assert_eq!(chunk[0]["room_id"], room.as_str());
    assert_eq!(chunk[0]["name"], "Town square");

    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={server}"),
            bob.t(),
            &json!({"filter": {"generic_search_term": "nothing like it"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"], json!([]));
    a.shutdown().await;
    b.shutdown().await;
}

/// A signing key on the deny-list is never trusted: requests signed with it are refused as
/// if unsigned, though its server publishes it properly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_signing_key_is_refused() {
    let b = TestServer::start_federating().await;
    let bob = b.register("bob", "bob-password").await;
    let b_key = trellis::keys::ServerKeys::load_or_generate(
        &b.config.signing_key_path(),
        ruma::OwnedServerName::try_from(b.server_name()).unwrap(),
    )
    .unwrap()
    .public_key()
    .encode();
    let a = TestServer::start_with(|c| {
        common::server::make_federating(c);
        c.federation.denied_signing_keys = vec![b_key];
    })
    .await;
    let c = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        alice.user_id
    );
    let (status, body) = common::federation::signed(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
    // Another server's key is trusted as ever; and the list is about what `a` verifies: `b`
    // still takes `a`'s requests.
    let (status, body) = common::federation::signed(&c, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        bob.user_id
    );
    let (status, body) = common::federation::signed(&a, &b, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
}

/// A server key is trusted only until its `valid_until_ts`: past it, and with its server
/// unreachable to fetch it again, requests signed with it are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_past_their_validity_verify_nothing() {
    let a = TestServer::start_federating().await;
    let mut b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        alice.user_id
    );
    let (status, body) = common::federation::signed(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");

    // A has B's key now; let it lapse, and take B away so it cannot be fetched again.
    let db = common::media::db(&a).await;
    let lapsed = sqlx::query("UPDATE server_keys SET valid_until_ts = 1 WHERE server_name = $1")
        .bind(b.server_name())
        .execute(&db)
        .await
        .unwrap();
    assert!(lapsed.rows_affected() > 0);
    sqlx::query("DELETE FROM server_key_responses WHERE server_name = $1")
        .bind(b.server_name())
        .execute(&db)
        .await
        .unwrap();
    b.stop().await;
    let (status, body) = common::federation::signed(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
}

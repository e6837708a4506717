//! The server's signing key as peers see it.

mod common;

use common::server::TestServer;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, PublicKeySet, verify_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keys_are_self_signed_and_stable() {
    let mut s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server_name"], "trellis.test");
    assert!(body["old_verify_keys"].is_object());
    let valid_until = body["valid_until_ts"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(valid_until > now && valid_until <= now + 7 * 24 * 3600 * 1000);

    let verify_keys = body["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1);
    let (key_id, key) = verify_keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"));

    // Verify the self-signature with ruma's verifier.
    let mut keyset = PublicKeySet::new();
    keyset.insert(
        key_id.clone(),
        Base64::parse(key["key"].as_str().unwrap()).unwrap(),
    );
    let mut map = PublicKeyMap::new();
    map.insert("trellis.test".to_owned(), keyset);
    let object: ruma::CanonicalJsonObject = serde_json::from_value(body.clone()).unwrap();
    verify_json(&map, &object).expect("self-signature verifies");

    // Tampering breaks it.
    let mut tampered = object.clone();
    tampered.insert(
        "server_name".to_owned(),
        ruma::CanonicalJsonValue::String("evil.test".into()),
    );
    let mut evil = PublicKeyMap::new();
    evil.insert("evil.test".to_owned(), map["trellis.test"].clone());
    assert!(verify_json(&evil, &tampered).is_err());

    // Same key after a restart.
    s.restart().await;
    let (_, again) = s.get("/_matrix/key/v2/server", None).await;
    assert_eq!(again["verify_keys"], body["verify_keys"]);
    let key_file = s.config.data_dir.join("signing.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_version() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["server"]["name"], "Trellis");
    assert_eq!(body["server"]["version"], env!("CARGO_PKG_VERSION"));
    s.shutdown().await;
}

//! End-to-end encryption across servers: keys queried and claimed through the user's own
//! server from another server's users, the federation key endpoints called directly with
//! signed requests, and the device-list and to-device EDU handlers run against a real
//! server's database.

mod common;

use std::sync::Arc;

use common::server::{TestServer, User};
use ruma::api::federation::device::get_devices;
use ruma::api::federation::keys::{claim_keys, get_keys};
use ruma::api::federation::transactions::edu::{
    DeviceListUpdateContent, DirectDeviceContent, SigningKeyUpdateContent,
};
use ruma::events::ToDeviceEventType;
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId};
use serde_json::{Value, json};
use trellis::account::AuthedUser;
use trellis::e2e::E2e;
use trellis::e2e::federation::EduOutcome;
use trellis::federation::client::FederationClient;
use trellis::keys::ServerKeys;
use trellis::notify::SyncNotifier;

const MASTER: &str = "nqOvzeuGWT/sRx3h7+MHoInYj3Uk2LD/unI9kDYcHwk";
const SELF_SIGNING: &str = "Ikyn1eGy/E0EZd0JIjJPIGUDOGD8jOHh1ifmSThwJFo";
const USER_SIGNING: &str = "BkgXJAJTPxq+mLu1EoG/hUfwmIXjtwmiDz3K45i7tkI";
/// A loopback port nothing listens on: a server there cannot be reached.
const UNREACHABLE: &str = "127.0.0.1:1";

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

fn cross_key(u: &User, usage: &str, key: &str) -> Value {
    json!({"user_id": u.user_id, "usage": [usage], "keys": {format!("ed25519:{key}"): key}})
}

/// Device keys, two one-time keys, a fallback key, a device name and cross-signing keys.
async fn upload_everything(s: &TestServer, u: &User) {
    let (status, res) = s
        .post(
            "/_matrix/client/v3/keys/upload",
            u.t(),
            &json!({
                "device_keys": device_keys(u),
                "one_time_keys": {
                    "signed_curve25519:AAAAAQ": {"key": "otk-1", "signatures": {}},
                    "signed_curve25519:AAAAAg": {"key": "otk-2", "signatures": {}},
                },
                "fallback_keys": {
                    "signed_curve25519:AAAAAw": {"key": "fallback", "fallback": true, "signatures": {}}
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/devices/{}", u.device_id),
            u.t(),
            &json!({"display_name": "Phone"}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    // A user's first cross-signing keys need no password (MSC3967).
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let body = json!({
        "master_key": cross_key(u, "master", MASTER),
        "self_signing_key": cross_key(u, "self_signing", SELF_SIGNING),
        "user_signing_key": cross_key(u, "user_signing", USER_SIGNING),
    });
    let (status, res) = s.post(path, u.t(), &body).await;
    assert_eq!(status, 200, "{res}");
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
    body
}

fn key_ids(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// A federation client that signs as `s` (with the key `s` serves), for calling another
/// server's federation endpoints directly.
fn signing_as(s: &TestServer) -> FederationClient {
    let keys = ServerKeys::load_or_generate(&s.config.signing_key_path(), s.config.server_name())
        .expect("server key");
    FederationClient::new(&s.config.federation, Arc::new(keys)).expect("federation client")
}

fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
}

/// The e2e domain over `s`'s own database, for calling what the transaction code will call.
/// Its notifier is not the server's: /sync sees the changes when it reads, not by wake-up.
async fn e2e_of(s: &TestServer) -> (E2e, sqlx::PgPool) {
    let url = s.config.database.url.as_deref().expect("database URL");
    let db = trellis::db::connect(url, 2).await.expect("database");
    (
        E2e::new(db.clone(), s.config.server_name(), SyncNotifier::new()),
        db,
    )
}

/// Stand-in for a remote join, which the server cannot do yet: `remote` becomes a joined
/// member of every room `local` is joined to (reusing `local`'s membership event).
async fn fake_remote_join(db: &sqlx::PgPool, local: &User, remote: &str) {
    let rows = sqlx::query(
        "INSERT INTO room_members (room_nid, user_id, membership, event_nid)
         SELECT room_nid, $2, 'join', event_nid FROM room_members
         WHERE user_id = $1 AND membership = 'join'",
    )
    .bind(&local.user_id)
    .bind(remote)
    .execute(db)
    .await
    .expect("insert membership");
    assert!(rows.rows_affected() > 0, "{} is in no room", local.user_id);
}

fn user_id(s: &str) -> OwnedUserId {
    OwnedUserId::try_from(s).expect("user ID")
}

fn device_id(s: &str) -> OwnedDeviceId {
    OwnedDeviceId::from(s)
}

fn server(s: &TestServer) -> OwnedServerName {
    s.config.server_name()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_queried_and_claimed_through_the_users_own_server() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let bob = b.register("bob", "bob-password").await;
    upload_everything(&a, &alice).await;
    let (status, res) = b
        .post(
            "/_matrix/client/v3/keys/upload",
            bob.t(),
            &json!({"device_keys": device_keys(&bob)}),
        )
        .await;
    assert_eq!(status, 200, "{res}");

    // One query: Bob's own keys from B, Alice's from A, and a server that cannot be reached.
    let ghost = format!("@ghost:{UNREACHABLE}");
    let (status, res) = b
        .post(
            "/_matrix/client/v3/keys/query",
            bob.t(),
            &json!({
                "timeout": 5000,
                "device_keys": {alice.user_id.clone(): [], bob.user_id.clone(): [], ghost: []}
            }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let dk = &res["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(dk["user_id"], alice.user_id.as_str(), "{res}");
    assert_eq!(
        dk["keys"][format!("curve25519:{}", alice.device_id)],
        "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI"
    );
    assert_eq!(dk["unsigned"]["device_display_name"], "Phone", "{dk}");
    assert!(
        res["device_keys"][&bob.user_id][&bob.device_id].is_object(),
        "{res}"
    );
    assert_eq!(
        res["master_keys"][&alice.user_id]["keys"][format!("ed25519:{MASTER}")],
        MASTER
    );
    assert_eq!(
        res["self_signing_keys"][&alice.user_id]["usage"],
        json!(["self_signing"])
    );
    // Alice's user-signing key is hers alone: it never crosses to another server.
    assert!(res["user_signing_keys"][&alice.user_id].is_null(), "{res}");
    assert_eq!(res["failures"][UNREACHABLE]["status"], 503, "{res}");
    assert!(
        res["failures"][a.server_name()].is_null(),
        "A answered: {res}"
    );

    // Asking for one device of Alice's that does not exist answers nothing for it.
    let (status, res) = b
        .post(
            "/_matrix/client/v3/keys/query",
            bob.t(),
            &json!({"device_keys": {alice.user_id.clone(): ["NOPE"]}}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(
        res["device_keys"][&alice.user_id]["NOPE"].is_null(),
        "{res}"
    );
    assert!(
        res.get("failures")
            .is_none_or(|f| f.as_object().is_some_and(|o| o.is_empty()))
    );

    // Claims through B take Alice's two one-time keys from A, each once, then her fallback key.
    let first = claim(&b, &bob, &alice).await;
    let first = key_ids(&first["one_time_keys"][&alice.user_id][&alice.device_id]);
    let second = claim(&b, &bob, &alice).await;
    let second = key_ids(&second["one_time_keys"][&alice.user_id][&alice.device_id]);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    let third = claim(&b, &bob, &alice).await;
    assert_eq!(
        key_ids(&third["one_time_keys"][&alice.user_id][&alice.device_id]),
        vec!["signed_curve25519:AAAAAw"]
    );
    // Alice's server counts her keys as claimed.
    let sync = a.sync(&alice, "").await;
    assert!(
        sync["device_one_time_keys_count"]["signed_curve25519"]
            .as_u64()
            .is_none_or(|n| n == 0),
        "{sync}"
    );

    // A claim naming an unreachable server lists it in failures and still answers the rest.
    let (status, res) = b
        .post(
            "/_matrix/client/v3/keys/claim",
            bob.t(),
            &json!({"timeout": 5000, "one_time_keys": {
                format!("@ghost:{UNREACHABLE}"): {"DEV": "signed_curve25519"},
                alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"},
            }}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["failures"][UNREACHABLE]["status"], 503, "{res}");
    assert!(
        res["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAAAw"]
            .is_object(),
        "{res}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_key_endpoints_answer_signed_requests_for_local_users_only() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let bob = b.register("bob", "bob-password").await;
    upload_everything(&b, &bob).await;
    let bob_id = user_id(&bob.user_id);
    let bob_device = device_id(&bob.device_id);

    // Without a signature: 401.
    let res = insecure_client()
        .get(b.federation_url(&format!(
            "/_matrix/federation/v1/user/devices/{}",
            bob.user_id
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);

    // Signed as A.
    let fed = signing_as(&a);
    let devices = fed
        .send(&server(&b), get_devices::v1::Request::new(bob_id.clone()))
        .await
        .expect("user devices");
    assert_eq!(devices.user_id, bob_id);
    assert_eq!(u64::from(devices.stream_id), 0, "no update was made yet");
    assert_eq!(devices.devices.len(), 1);
    let device = &devices.devices[0];
    assert_eq!(device.device_id, bob_device);
    assert_eq!(device.device_display_name.as_deref(), Some("Phone"));
    let keys: Value = device.keys.deserialize_as_unchecked().expect("keys");
    assert_eq!(keys["device_id"], bob.device_id.as_str());
    let master: Value = devices
        .master_key
        .as_ref()
        .expect("master key")
        .deserialize_as_unchecked()
        .expect("master");
    assert_eq!(master["usage"], json!(["master"]));
    assert!(devices.self_signing_key.is_some());

    // Devices of a user of another server are not B's to tell.
    let err = fed
        .send(
            &server(&b),
            get_devices::v1::Request::new(user_id(&format!("@alice:{}", a.server_name()))),
        )
        .await
        .expect_err("not B's user");
    assert!(
        matches!(
            err,
            trellis::federation::client::FederationError::Remote { status: 400, .. }
        ),
        "{err}"
    );

    // After a device-list update is made, the list's version is that update's stream_id.
    let (e2e, _db) = e2e_of(&b).await;
    let edu = e2e
        .device_list_update_edu(&bob_id, &bob_device, false)
        .await
        .expect("edu");
    let devices = fed
        .send(&server(&b), get_devices::v1::Request::new(bob_id.clone()))
        .await
        .expect("user devices");
    assert_eq!(devices.stream_id, edu.stream_id);

    // Key query: B's user answered, a user of another server left out.
    let other = user_id(&format!("@carol:{}", a.server_name()));
    let keys = fed
        .send(
            &server(&b),
            get_keys::v1::Request::new([(bob_id.clone(), vec![]), (other.clone(), vec![])].into()),
        )
        .await
        .expect("key query");
    assert!(keys.device_keys[&bob_id].contains_key(&bob_device));
    assert!(!keys.device_keys.contains_key(&other));
    assert!(keys.master_keys.contains_key(&bob_id));
    assert!(keys.self_signing_keys.contains_key(&bob_id));

    // Claim: one of Bob's one-time keys; the user of another server is ignored.
    let claims = [
        (
            bob_id.clone(),
            [(bob_device.clone(), OneTimeKeyAlgorithm::SignedCurve25519)].into(),
        ),
        (
            other.clone(),
            [(device_id("DEV"), OneTimeKeyAlgorithm::SignedCurve25519)].into(),
        ),
    ]
    .into();
    let claimed = fed
        .send(&server(&b), claim_keys::v1::Request::new(claims))
        .await
        .expect("claim");
    let got = &claimed.one_time_keys[&bob_id][&bob_device];
    assert_eq!(got.len(), 1);
    assert!(
        got.keys()
            .all(|k| k.as_str().starts_with("signed_curve25519:AAAA")),
        "{got:?}"
    );
    assert!(!claimed.one_time_keys.contains_key(&other));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_device_list_updates_chain_their_stream_ids() {
    let b = TestServer::start().await;
    let bob = b.register("bob", "bob-password").await;
    let (status, _) = b
        .post(
            "/_matrix/client/v3/keys/upload",
            bob.t(),
            &json!({"device_keys": device_keys(&bob)}),
        )
        .await;
    assert_eq!(status, 200);
    let (e2e, db) = e2e_of(&b).await;
    let bob_id = user_id(&bob.user_id);
    let bob_device = device_id(&bob.device_id);

    let first = e2e
        .device_list_update_edu(&bob_id, &bob_device, false)
        .await
        .expect("first");
    assert!(first.prev_id.is_empty());
    assert_eq!(first.deleted, None);
    let keys: Value = first
        .keys
        .as_ref()
        .expect("keys")
        .deserialize_as_unchecked()
        .expect("keys JSON");
    assert_eq!(keys["device_id"], bob.device_id.as_str());

    let second = e2e
        .device_list_update_edu(&bob_id, &bob_device, true)
        .await
        .expect("second");
    assert!(second.stream_id > first.stream_id);
    assert_eq!(second.prev_id, vec![first.stream_id]);
    assert_eq!(second.deleted, Some(true));
    assert!(second.keys.is_none());

    // A user's chain is their own.
    let other = b.register("other", "other-password").await;
    let theirs = e2e
        .device_list_update_edu(
            &user_id(&other.user_id),
            &device_id(&other.device_id),
            false,
        )
        .await
        .expect("other");
    assert!(theirs.prev_id.is_empty());
    assert!(theirs.keys.is_none(), "no keys uploaded");

    // Cross-signing keys go out as m.signing_key_update, without the user-signing key.
    let sk = e2e.signing_key_update_edu(&bob_id).await.expect("signing");
    assert!(sk.master_key.is_none(), "none uploaded yet");

    // Destinations: the servers of everyone in Bob's rooms, never our own.
    let room = b.create_room(&bob, json!({})).await;
    assert!(room.starts_with('!'));
    fake_remote_join(&db, &bob, "@zed:remote.test").await;
    let dest = e2e.device_list_destinations(&bob_id).await.expect("dest");
    assert_eq!(
        dest,
        vec![OwnedServerName::try_from("remote.test").expect("name")]
    );
    // Renaming a device changes the list other servers keep: they are told.
    let (status, _) = b
        .put(
            &format!("/_matrix/client/v3/devices/{}", bob.device_id),
            bob.t(),
            &json!({"display_name": "Renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    let queued: Vec<(String, String)> = sqlx::query_as(
        "SELECT destination, edu::text FROM federation_outbox WHERE edu IS NOT NULL",
    )
    .fetch_all(&db)
    .await
    .expect("outbox");
    assert!(
        queued.iter().any(|(d, edu)| d == "remote.test"
            && edu.contains("m.device_list_update")
            && edu.contains("Renamed")),
        "{queued:?}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_device_list_and_signing_key_updates_reach_sync() {
    let b = TestServer::start().await;
    let bob = b.register("bob", "bob-password").await;
    let _room = b.create_room(&bob, json!({})).await;
    let (e2e, db) = e2e_of(&b).await;
    let remote: OwnedServerName = "remote.test".try_into().expect("name");
    let alice = user_id("@alice:remote.test");
    fake_remote_join(&db, &bob, alice.as_str()).await;
    let since = b.sync(&bob, "").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    let update =
        |stream: u32| DeviceListUpdateContent::new(alice.clone(), device_id("ADEV"), stream.into());
    assert_eq!(
        e2e.receive_device_list_update(&remote, &update(5))
            .await
            .expect("edu"),
        EduOutcome::Applied
    );
    // The same update again (a retried transaction), or an older one: nothing new.
    assert_eq!(
        e2e.receive_device_list_update(&remote, &update(5))
            .await
            .expect("edu"),
        EduOutcome::Repeat
    );
    assert_eq!(
        e2e.receive_device_list_update(&remote, &update(4))
            .await
            .expect("edu"),
        EduOutcome::Repeat
    );
    // Another server cannot speak for Alice.
    let elsewhere: OwnedServerName = "elsewhere.test".try_into().expect("name");
    assert_eq!(
        e2e.receive_device_list_update(&elsewhere, &update(6))
            .await
            .expect("edu"),
        EduOutcome::Ignored
    );
    // A user who shares no room with anyone here is of no interest.
    let stranger = DeviceListUpdateContent::new(
        user_id("@stranger:remote.test"),
        device_id("S"),
        1u32.into(),
    );
    assert_eq!(
        e2e.receive_device_list_update(&remote, &stranger)
            .await
            .expect("edu"),
        EduOutcome::Ignored
    );

    let res = b.sync(&bob, &format!("?since={since}")).await;
    assert_eq!(
        res["device_lists"]["changed"],
        json!([alice.as_str()]),
        "{res}"
    );
    let since = res["next_batch"].as_str().expect("next_batch").to_owned();
    let (status, changes) = b
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={since}&to={since}"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["changed"], json!([]));

    // A signing-key update has the same effect.
    let mut sk = SigningKeyUpdateContent::new(alice.clone());
    sk.master_key = Some(Raw::from_json(
        serde_json::value::to_raw_value(&json!({
            "user_id": alice, "usage": ["master"], "keys": {format!("ed25519:{MASTER}"): MASTER}
        }))
        .expect("raw"),
    ));
    assert_eq!(
        e2e.receive_signing_key_update(&remote, &sk)
            .await
            .expect("edu"),
        EduOutcome::Applied
    );
    let res = b.sync(&bob, &format!("?since={since}")).await;
    assert_eq!(
        res["device_lists"]["changed"],
        json!([alice.as_str()]),
        "{res}"
    );
    // Keys of someone else under Alice's name are refused.
    let mut forged = SigningKeyUpdateContent::new(alice.clone());
    forged.self_signing_key = Some(Raw::from_json(
        serde_json::value::to_raw_value(&json!({
            "user_id": "@mallory:remote.test", "usage": ["self_signing"], "keys": {}
        }))
        .expect("raw"),
    ));
    assert_eq!(
        e2e.receive_signing_key_update(&remote, &forged)
            .await
            .expect("edu"),
        EduOutcome::Ignored
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_messages_cross_servers_once() {
    let b = TestServer::start().await;
    let bob = b.register("bob", "bob-password").await;
    let (status, laptop) = b.login("bob", "bob-password").await;
    assert_eq!(status, 200, "{laptop}");
    let laptop = User::from_response(&laptop);
    let (e2e, _db) = e2e_of(&b).await;
    let remote: OwnedServerName = "remote.test".try_into().expect("name");
    let alice = user_id("@alice:remote.test");
    let bob_id = user_id(&bob.user_id);

    let content = |message_id: &str, body: &str| {
        let mut c = DirectDeviceContent::new(
            alice.clone(),
            ToDeviceEventType::from("m.room_key_request"),
            message_id.into(),
        );
        let message =
            Raw::from_json(serde_json::value::to_raw_value(&json!({"body": body})).expect("raw"));
        c.messages.insert(
            bob_id.clone(),
            [(DeviceIdOrAllDevices::AllDevices, message)].into(),
        );
        c
    };
    assert_eq!(
        e2e.receive_direct_to_device(&remote, &content("m1", "hello"))
            .await
            .expect("edu"),
        EduOutcome::Applied
    );
    assert_eq!(
        e2e.receive_direct_to_device(&remote, &content("m1", "hello"))
            .await
            .expect("edu"),
        EduOutcome::Repeat
    );
    // The same message_id from another origin is another message, but this one names a
    // sender the origin does not host.
    let elsewhere: OwnedServerName = "elsewhere.test".try_into().expect("name");
    assert_eq!(
        e2e.receive_direct_to_device(&elsewhere, &content("m1", "forged"))
            .await
            .expect("edu"),
        EduOutcome::Ignored
    );
    // Every one of Bob's devices gets the message, once.
    let mut laptop_since = String::new();
    for device in [&bob, &laptop] {
        let res = b.sync(device, "").await;
        laptop_since = res["next_batch"].as_str().expect("next_batch").to_owned();
        let events = res["to_device"]["events"]
            .as_array()
            .expect("events")
            .clone();
        assert_eq!(events.len(), 1, "{res}");
        assert_eq!(events[0]["sender"], alice.as_str());
        assert_eq!(events[0]["type"], "m.room_key_request");
        assert_eq!(events[0]["content"]["body"], "hello");
    }

    // Outbound: a /sendToDevice naming a remote user yields one m.direct_to_device per
    // destination with a fresh message_id, and a retry of the transaction yields none.
    let sender = AuthedUser {
        user_id: bob_id.clone(),
        device_id: device_id(&bob.device_id),
        is_guest: false,
    };
    let message =
        Raw::from_json(serde_json::value::to_raw_value(&json!({"body": "hi"})).expect("raw"));
    let messages = [
        (
            alice.clone(),
            [(
                DeviceIdOrAllDevices::DeviceId(device_id("ADEV")),
                message.clone(),
            )]
            .into(),
        ),
        (
            user_id(&laptop.user_id),
            [(
                DeviceIdOrAllDevices::DeviceId(device_id(&laptop.device_id)),
                message.clone(),
            )]
            .into(),
        ),
    ]
    .into();
    let event_type = ToDeviceEventType::from("m.custom");
    let out = e2e
        .send_to_device(&sender, &event_type, "txn-1", &messages)
        .await
        .expect("send");
    assert_eq!(out.len(), 1);
    let edu = &out[&remote];
    assert_eq!(edu.sender, bob_id);
    assert_eq!(edu.ev_type, event_type);
    assert!(!edu.message_id.as_str().is_empty());
    assert_eq!(edu.messages.keys().collect::<Vec<_>>(), vec![&alice]);
    let again = e2e
        .send_to_device(&sender, &event_type, "txn-1", &messages)
        .await
        .expect("retry");
    assert!(again.is_empty());
    let other = e2e
        .send_to_device(&sender, &event_type, "txn-2", &messages)
        .await
        .expect("send");
    assert_ne!(other[&remote].message_id, edu.message_id);
    // The local recipient got each transaction once.
    let res = b.sync(&laptop, &format!("?since={laptop_since}")).await;
    let custom: Vec<&Value> = res["to_device"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "m.custom")
        .collect();
    assert_eq!(custom.len(), 2, "{res}");
    assert!(
        custom
            .iter()
            .all(|e| e["content"]["body"] == "hi" && e["sender"] == bob.user_id.as_str())
    );
    b.shutdown().await;
}

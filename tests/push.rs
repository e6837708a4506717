//! Push notifications: pushers (`/pushers`, `/pushers/set`), `/notifications`, and delivery
//! to a push gateway of the test's own on loopback that speaks the Push Gateway API: fields
//! and counts, `event_id_only`, retries after failures, rejected pushkeys, the user's own
//! events, and a restart of Trellis.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::server::{TestServer, User, assert_error, enc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use ruma::api::push_gateway::send_event_notification::v1::Notification;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const APP_ID: &str = "org.example.app";
const NOTIFY: &str = "/_matrix/push/v1/notify";

/// What the gateway was sent and what it is told to do with the next requests.
#[derive(Default)]
struct GatewayState {
    /// The bodies of the notifications it accepted, in order.
    received: Vec<Value>,
    /// Requests that reached the handler, answered or not.
    attempts: usize,
    /// Connections closed on arrival.
    dropped: usize,
    /// Close the next N connections without reading them (a connection error).
    drop_next: usize,
    /// Hold the next N requests unanswered (past the pusher's timeout).
    hang_next: usize,
    /// Answer the next N requests 503.
    fail_next: usize,
    /// While set, every request is answered 503: the gateway is down.
    down: bool,
    /// Pushkeys answered in `rejected`.
    reject: HashSet<String>,
    /// Requests that did not follow the Push Gateway API, and why (answered 400).
    invalid: Vec<String>,
}

/// A push gateway on 127.0.0.1 (its listener bound before its URL is handed out).
struct Gateway {
    url: String,
    state: Arc<Mutex<GatewayState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    async fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let url = format!("http://{}{NOTIFY}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                {
                    let mut s = shared.lock();
                    if s.drop_next > 0 {
                        s.drop_next -= 1;
                        s.dropped += 1;
                        continue;
                    }
                }
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| notify(req, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Gateway { url, state, task }
    }

    fn with<T>(&self, f: impl FnOnce(&mut GatewayState) -> T) -> T {
        f(&mut self.state.lock())
    }

    fn received(&self) -> Vec<Value> {
        self.with(|s| s.received.clone())
    }

    /// The event IDs of the notifications received, in order.
    fn event_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|n| {
                n["notification"]["event_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    /// Wait until `n` notifications have been accepted.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        poll(&format!("{n} notifications at the gateway"), || async {
            let (got, invalid) = self.with(|s| (s.received.clone(), s.invalid.clone()));
            assert!(
                invalid.is_empty(),
                "the gateway was sent invalid requests: {invalid:?}"
            );
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `POST /_matrix/push/v1/notify`, as the Push Gateway API has it: the body must be a
/// `notification` ruma reads; the answer lists the rejected pushkeys.
async fn notify(
    req: Request<Incoming>,
    state: Arc<Mutex<GatewayState>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST || req.uri().path() != NOTIFY {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        ));
    }
    let json_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, json!({}))),
    };
    enum Then {
        Hang,
        Fail,
        Invalid,
        Answer(Vec<String>),
    }
    let then = {
        let mut s = state.lock();
        s.attempts += 1;
        if s.hang_next > 0 {
            s.hang_next -= 1;
            Then::Hang
        } else if s.down || s.fail_next > 0 {
            s.fail_next = s.fail_next.saturating_sub(1);
            Then::Fail
        } else if let Err(why) = check_body(json_type, &body) {
            s.invalid.push(why);
            Then::Invalid
        } else {
            let value: Value = serde_json::from_slice(&body).unwrap_or_default();
            let rejected = value["notification"]["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["pushkey"].as_str())
                .filter(|k| s.reject.contains(*k))
                .map(str::to_owned)
                .collect();
            s.received.push(value);
            Then::Answer(rejected)
        }
    };
    match then {
        Then::Hang => {
            tokio::time::sleep(Duration::from_secs(300)).await;
            Ok(answer(StatusCode::OK, json!({"rejected": []})))
        }
        Then::Fail => Ok(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "down"}),
        )),
        Then::Invalid => Ok(answer(StatusCode::BAD_REQUEST, json!({"error": "invalid"}))),
        Then::Answer(rejected) => Ok(answer(StatusCode::OK, json!({ "rejected": rejected }))),
    }
}

/// A notify body as the Push Gateway API has it: JSON, sent as such, whose `notification`
/// ruma's push gateway types read.
fn check_body(json_type: bool, body: &[u8]) -> Result<(), String> {
    if !json_type {
        return Err("not sent as application/json".to_owned());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    serde_json::from_value::<Notification>(value["notification"].clone())
        .map_err(|e| format!("not a notification ({e}): {value}"))?;
    Ok(())
}

/// Poll `check` until it yields a value, failing after a generous deadline (never a fixed
/// wait: each step is as fast as the server).
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server whose outbound requests may reach loopback (the gateway), retrying a failed
/// gateway within a second and giving up on a request after two.
async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.federation.ip_range_allowlist = vec!["127.0.0.0/8".to_owned()];
        c.push.max_retry_interval_secs = 1;
        c.push.request_timeout_secs = 2;
    })
    .await
}

/// A pusher body for `/pushers/set`, with `data` extra fields beside the URL.
fn pusher(url: &str, pushkey: &str, extra: Value) -> Value {
    let mut data = json!({ "url": url });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    json!({
        "app_id": APP_ID, "pushkey": pushkey, "kind": "http", "app_display_name": "Example",
        "device_display_name": "Phone", "lang": "en", "data": data
    })
}

async fn set_pusher(s: &TestServer, u: &User, body: &Value) -> (u16, Value) {
    s.post("/_matrix/client/v3/pushers/set", u.t(), body).await
}

async fn add_pusher(s: &TestServer, u: &User, body: Value) {
    let r = set_pusher(s, u, &body).await;
    assert_eq!(r.0, 200, "pushers/set: {}", r.1);
}

async fn pushkeys(s: &TestServer, u: &User) -> Vec<String> {
    let (status, body) = s.get("/_matrix/client/v3/pushers", u.t()).await;
    assert_eq!(status, 200, "pushers: {body}");
    body["pushers"]
        .as_array()
        .expect("pushers")
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// alice and bob in a room alice made, named and with an alias.
async fn room_of_two(s: &TestServer) -> (User, User, String) {
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            bob.t(),
            &json!({"displayname": "Bob Builder"}),
        )
        .await;
    assert_eq!(status, 200, "displayname: {body}");
    let room = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "name": "The Garden", "room_alias_name": "garden"}),
        )
        .await;
    s.join(&bob, &room).await;
    (alice, bob, room)
}

/// A server, a gateway, and alice (with a pusher to the gateway, `extra` in its data) and
/// bob in a room of two.
async fn with_pusher(pushkey: &str, extra: Value) -> (TestServer, Gateway, User, User, String) {
    let s = server().await;
    let gw = Gateway::start().await;
    let (alice, bob, room) = room_of_two(&s).await;
    add_pusher(&s, &alice, pusher(&gw.url, pushkey, extra)).await;
    (s, gw, alice, bob, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_the_gateway_with_its_fields_and_counts() {
    let (s, gw, alice, bob, room) = with_pusher("key-a", json!({"extra": "kept"})).await;

    let first = s.send_text(&bob, &room, "hello").await;
    let got = gw.wait_for(1).await;
    let n = &got[0]["notification"];
    assert_eq!(n["event_id"], first.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], bob.user_id.as_str());
    assert_eq!(n["sender_display_name"], "Bob Builder");
    assert_eq!(n["room_name"], "The Garden");
    assert_eq!(n["room_alias"], "#garden:trellis.test");
    assert_eq!(n["content"], json!({"msgtype": "m.text", "body": "hello"}));
    assert_eq!(n["counts"]["unread"], 1, "{n}");
    assert!(n.get("user_is_target").is_none(), "{n}");
    // A message in a room of two plays a sound (the one-to-one rule): high priority, the
    // spec's default, which is left out.
    assert!(n["prio"].is_null() || n["prio"] == "high", "{n}");
    let devices = n["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(d["app_id"], APP_ID);
    assert_eq!(d["pushkey"], "key-a");
    assert!(
        d["pushkey_ts"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{d}"
    );
    assert_eq!(d["data"], json!({"extra": "kept"}), "data without its url");
    assert_eq!(d["tweaks"]["sound"], "default", "{d}");

    // Counts are what /sync would show: two unread now.
    let second = s.send_text(&bob, &room, "still there?").await;
    let got = gw.wait_for(2).await;
    assert_eq!(got[1]["notification"]["event_id"], second.as_str());
    assert_eq!(got[1]["notification"]["counts"]["unread"], 2);
    let sync = s.sync(&alice, "").await;
    assert_eq!(
        sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"],
        2
    );
    // Once alice has read the first, the count drops to what is left.
    let (status, body) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                enc(&first)
            ),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "receipt: {body}");
    s.send_text(&bob, &room, "third").await;
    let got = gw.wait_for(3).await;
    assert_eq!(got[2]["notification"]["counts"]["unread"], 2);
    assert_eq!(got.len(), 3);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_id_only_pushers_are_sent_ids_counts_and_devices() {
    let (s, gw, _alice, bob, room) =
        with_pusher("key-ids", json!({"format": "event_id_only"})).await;
    let sent = s.send_text(&bob, &room, "secret words").await;
    let got = gw.wait_for(1).await;
    let n = got[0]["notification"].as_object().expect("notification");
    let mut keys: Vec<&str> = n.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["counts", "devices", "event_id", "room_id"], "{n:?}");
    assert_eq!(n["event_id"], sent.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["devices"][0]["pushkey"], "key-ids");
    assert_eq!(n["devices"][0]["data"], json!({"format": "event_id_only"}));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_and_the_notification_delivered_once() {
    let (s, gw, _alice, bob, room) = with_pusher("key-r", json!({})).await;
    // A connection closed on arrival, a request left unanswered past the timeout, then two
    // 503s: each is retried, with backoff, until the gateway takes it.
    gw.with(|g| {
        g.drop_next = 1;
        g.hang_next = 1;
        g.fail_next = 2;
    });
    let first = s.send_text(&bob, &room, "are you there").await;
    gw.wait_for(1).await;
    let (dropped, attempts) = gw.with(|g| (g.dropped, g.attempts));
    assert_eq!(dropped, 1);
    assert_eq!(attempts, 4, "one hung, two failed, one accepted");
    // The next message comes after it, and nothing came twice.
    let second = s.send_text(&bob, &room, "hello?").await;
    gw.wait_for(2).await;
    assert_eq!(gw.event_ids(), [first, second]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_pushkey_loses_its_pusher() {
    let (s, gw, alice, bob, room) = with_pusher("key-gone", json!({})).await;
    add_pusher(&s, &alice, pusher(&gw.url, "key-kept", json!({}))).await;
    let mut listed = pushkeys(&s, &alice).await;
    listed.sort();
    assert_eq!(listed, ["key-gone", "key-kept"]);
    gw.with(|g| {
        g.reject.insert("key-gone".to_owned());
    });
    s.send_text(&bob, &room, "one").await;
    poll("the rejected pusher to go", || async {
        (pushkeys(&s, &alice).await == ["key-kept"]).then_some(())
    })
    .await;
    // The pusher that stays goes on receiving; the removed one is sent nothing more.
    s.send_text(&bob, &room, "two").await;
    gw.wait_for(3).await;
    let keys: Vec<String> = gw
        .received()
        .iter()
        .map(|n| {
            n["notification"]["devices"][0]["pushkey"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        keys.iter().filter(|k| *k == "key-gone").count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| *k == "key-kept").count(),
        2,
        "{keys:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_own_messages_are_not_pushed() {
    let (s, gw, alice, bob, room) = with_pusher("key-own", json!({})).await;
    s.send_text(&alice, &room, "talking to myself").await;
    s.send_text(&alice, &room, "still me").await;
    // bob's message comes after alice's: once it is at the gateway, hers would be too.
    let bobs = s.send_text(&bob, &room, "bob here").await;
    gw.wait_for(1).await;
    assert_eq!(gw.event_ids(), [bobs]);
    let (status, body) = s.get("/_matrix/client/v3/notifications", alice.t()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["notifications"].as_array().map(Vec::len), Some(1));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushers_set_checks_its_input_and_lists_updates_and_deletes() {
    let s = server().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    let good = pusher(url, "key-1", json!({}));
    let without = |key: &str| {
        let mut p = good.clone();
        p.as_object_mut().unwrap().remove(key);
        p
    };
    let with = |key: &str, value: Value| {
        let mut p = good.clone();
        p[key] = value;
        p
    };

    // Missing keys are named.
    let r = set_pusher(&s, &alice, &without("lang")).await;
    assert_error(&r, 400, "M_MISSING_PARAM");
    assert!(r.1["error"].as_str().unwrap().contains("lang"), "{}", r.1);
    let r = set_pusher(
        &s,
        &alice,
        &with("data", json!({"format": "event_id_only"})),
    )
    .await;
    assert_error(&r, 400, "M_MISSING_PARAM");
    assert!(r.1["error"].as_str().unwrap().contains("url"), "{}", r.1);
    assert_error(
        &set_pusher(&s, &alice, &without("app_id")).await,
        400,
        "M_MISSING_PARAM",
    );
    // Values out of bounds or unknown.
    for bad in [
        "https://push.example.org/notify",
        "/_matrix/push/v1/notify",
        "push.example.org/_matrix/push/v1/notify",
        "ftp://push.example.org/_matrix/push/v1/notify",
    ] {
        let r = set_pusher(&s, &alice, &with("data", json!({ "url": bad }))).await;
        assert_error(&r, 400, "M_INVALID_PARAM");
    }
    let r = set_pusher(&s, &alice, &with("kind", json!("email"))).await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    assert!(r.1["error"].as_str().unwrap().contains("mail"), "{}", r.1);
    let r = set_pusher(&s, &alice, &with("kind", json!("carrier_pigeon"))).await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    let r = set_pusher(&s, &alice, &with("pushkey", json!("k".repeat(513)))).await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    let r = set_pusher(&s, &alice, &with("app_id", json!("a".repeat(65)))).await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    let r = set_pusher(
        &s,
        &alice,
        &with("data", json!({"url": url, "format": "everything"})),
    )
    .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    assert_error(
        &set_pusher(&s, &alice, &with("data", json!("x"))).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &set_pusher(&s, &alice, &with("lang", json!(5))).await,
        400,
        "M_BAD_JSON",
    );
    let r = s.post("/_matrix/client/v3/pushers/set", None, &good).await;
    assert_error(&r, 401, "M_MISSING_TOKEN");
    assert!(pushkeys(&s, &alice).await.is_empty());

    // Set, listed as given; set again, updated in place.
    add_pusher(&s, &alice, with("profile_tag", json!("tag-1"))).await;
    let (_, body) = s.get("/_matrix/client/v3/pushers", alice.t()).await;
    let listed = &body["pushers"][0];
    assert_eq!(listed["app_id"], APP_ID);
    assert_eq!(listed["kind"], "http");
    assert_eq!(listed["data"], json!({ "url": url }));
    assert_eq!(listed["profile_tag"], "tag-1");
    assert_eq!(listed["lang"], "en");
    add_pusher(&s, &alice, with("device_display_name", json!("Tablet"))).await;
    let (_, body) = s.get("/_matrix/client/v3/pushers", alice.t()).await;
    assert_eq!(body["pushers"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["pushers"][0]["device_display_name"], "Tablet");

    // The same app ID and pushkey for bob: alice's goes, unless bob appends.
    add_pusher(&s, &bob, good.clone()).await;
    assert!(pushkeys(&s, &alice).await.is_empty());
    add_pusher(&s, &alice, with("append", json!(true))).await;
    assert_eq!(pushkeys(&s, &alice).await, ["key-1"]);
    assert_eq!(pushkeys(&s, &bob).await, ["key-1"]);

    // kind null deletes (one's own only); deleting what is not there is no error.
    let delete = json!({"app_id": APP_ID, "pushkey": "key-1", "kind": null});
    assert_eq!(set_pusher(&s, &alice, &delete).await.0, 200);
    assert!(pushkeys(&s, &alice).await.is_empty());
    assert_eq!(pushkeys(&s, &bob).await, ["key-1"]);
    assert_eq!(set_pusher(&s, &alice, &delete).await.0, 200);

    // A pusher goes with the device that set it.
    let (status, body) = s.login("alice", "alice-password").await;
    assert_eq!(status, 200, "{body}");
    let phone = User::from_response(&body);
    add_pusher(&s, &phone, pusher(url, "key-phone", json!({}))).await;
    assert_eq!(pushkeys(&s, &alice).await, ["key-phone"]);
    let (status, _) = s
        .post("/_matrix/client/v3/logout", phone.t(), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(pushkeys(&s, &alice).await.is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_list_pages_and_highlights() {
    let s = server().await;
    let (alice, bob, room) = room_of_two(&s).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(s.send_text(&bob, &room, &format!("message-{i}")).await);
    }
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/mention"),
            bob.t(),
            &json!({"msgtype": "m.text", "body": "hey alice",
                    "m.mentions": {"user_ids": [alice.user_id]}}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let mention = res["event_id"].as_str().unwrap().to_owned();
    sent.push(mention.clone());
    s.send_text(&alice, &room, "my own").await;
    // alice has read up to the second message.
    let (status, body) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                enc(&sent[1])
            ),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "receipt: {body}");

    // Pages of two, newest first, until no next_token.
    let mut seen: Vec<Value> = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = match &from {
            Some(f) => format!("?limit=2&from={}", enc(f)),
            None => "?limit=2".to_owned(),
        };
        let (status, body) = s
            .get(
                &format!("/_matrix/client/v3/notifications{query}"),
                alice.t(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body["notifications"].as_array().expect("notifications");
        assert!(page.len() <= 2);
        seen.extend(page.iter().cloned());
        match body["next_token"].as_str() {
            Some(t) => from = Some(t.to_owned()),
            None => break,
        }
    }
    let ids: Vec<&str> = seen
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap_or(""))
        .collect();
    let newest_first: Vec<&str> = sent.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    for n in &seen {
        assert_eq!(n["room_id"], room.as_str());
        assert_eq!(n["event"]["sender"], bob.user_id.as_str());
        assert_eq!(n["event"]["type"], "m.room.message");
        assert!(
            n["ts"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
            "{n}"
        );
        assert!(
            n["actions"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("notify"))),
            "{n}"
        );
        let id = n["event"]["event_id"].as_str().unwrap();
        let read = id == sent[0] || id == sent[1];
        assert_eq!(n["read"], read, "{n}");
    }

    // Only highlights: the mention.
    let (status, body) = s
        .get("/_matrix/client/v3/notifications?only=highlight", alice.t())
        .await;
    assert_eq!(status, 200, "{body}");
    let only = body["notifications"].as_array().expect("notifications");
    assert_eq!(only.len(), 1, "{body}");
    assert_eq!(only[0]["event"]["event_id"], mention.as_str());
    assert!(
        only[0]["actions"]
            .as_array()
            .unwrap()
            .contains(&json!({"set_tweak": "highlight"}))
            || only[0]["actions"]
                .as_array()
                .unwrap()
                .contains(&json!({"set_tweak": "highlight", "value": true})),
        "{body}"
    );
    assert!(body.get("next_token").is_none(), "{body}");

    // bob's only notification is alice's message; his own are not his.
    let (_, body) = s.get("/_matrix/client/v3/notifications", bob.t()).await;
    assert_eq!(
        body["notifications"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_eq!(
        body["notifications"][0]["event"]["sender"],
        alice.user_id.as_str()
    );

    assert_error(
        &s.get("/_matrix/client/v3/notifications?from=nonsense", alice.t())
            .await,
        400,
        "M_INVALID_PARAM",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_nothing_twice_and_catches_up() {
    let (mut s, gw, _alice, bob, room) = with_pusher("key-restart", json!({})).await;
    let mut sent = vec![s.send_text(&bob, &room, "before").await];
    gw.wait_for(1).await;

    // The gateway goes down; messages sent meanwhile wait, through a restart of Trellis.
    gw.with(|g| g.down = true);
    sent.push(s.send_text(&bob, &room, "during-1").await);
    sent.push(s.send_text(&bob, &room, "during-2").await);
    poll("a failed attempt", || async {
        (gw.with(|g| g.attempts) >= 2).then_some(())
    })
    .await;
    s.restart().await;
    assert_eq!(gw.received().len(), 1);
    gw.with(|g| g.down = false);
    gw.wait_for(3).await;
    sent.push(s.send_text(&bob, &room, "after").await);
    gw.wait_for(4).await;
    assert_eq!(gw.event_ids(), sent, "each once, in order");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_a_day_old_is_not_sent_any_more() {
    let (s, gw, alice, bob, room) = with_pusher("key-old", json!({})).await;
    gw.with(|g| g.down = true);
    let stale = s.send_text(&bob, &room, "yesterday").await;
    poll("a failed attempt", || async {
        (gw.with(|g| g.attempts) >= 1).then_some(())
    })
    .await;
    // The gateway stayed down for a day (the notification is made that old).
    let db = common::media::db(&s).await;
    let aged = sqlx::query(
        "UPDATE event_push_actions SET ts = ts - 2 * 86400000
         WHERE event_nid = (SELECT event_nid FROM event_ids WHERE event_id = $1)",
    )
    .bind(&stale)
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(aged.rows_affected(), 1);
    gw.with(|g| g.down = false);
    let fresh = s.send_text(&bob, &room, "today").await;
    gw.wait_for(1).await;
    assert_eq!(gw.event_ids(), [fresh]);
    // It is still listed among the user's notifications.
    let (_, list) = s.get("/_matrix/client/v3/notifications", alice.t()).await;
    let listed: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert!(listed.contains(&stale.as_str()), "{list}");
    s.shutdown().await;
}

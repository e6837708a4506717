//! Bad input gets a clear Matrix error with the right status and harms nothing: no 5xx, nothing
//! stored. NUL characters and lone surrogates (which Postgres cannot store as text), event
//! content that is not canonical JSON, values the spec constrains, malformed requests refused
//! by the HTTP layer, and media IDs and server names that must never reach a lookup.

mod common;

use common::federation::signed;
use common::media::db;
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

/// A request with a body sent exactly as written (serde cannot build a lone surrogate).
async fn raw(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = s
        .http
        .request(method, s.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body read");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One HTTP/1.1 request written byte for byte to the client listener (no URL normalisation,
/// no header limits), with `Connection: close`; returns the status and the body as JSON (or
/// as a string when it is not JSON).
async fn raw_http(s: &TestServer, head: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // A chunked body: keep what lies between the first size line and the last chunk.
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n").nth(1).unwrap_or("").to_owned()
    } else {
        body.to_owned()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(text)),
    )
}

/// A GET of `path` exactly as written, authenticated as `u`.
async fn raw_get(s: &TestServer, u: &User, path: &str) -> (u16, Value) {
    raw_http(
        s,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            u.token
        ),
    )
    .await
}

/// A 400 with one of the errcodes the spec names for malformed input.
#[track_caller]
fn assert_refused(result: &(u16, Value), what: &str) {
    assert_eq!(result.0, 400, "{what}: status for {}", result.1);
    let errcode = result.1["errcode"].as_str().unwrap_or("");
    assert!(
        ["M_BAD_JSON", "M_INVALID_PARAM", "M_NOT_JSON"].contains(&errcode),
        "{what}: errcode in {}",
        result.1
    );
    assert!(
        result.1["error"].is_string(),
        "{what}: message in {}",
        result.1
    );
}

async fn room_with(s: &TestServer, u: &User) -> String {
    s.create_room(u, json!({"preset": "private_chat"})).await
}

/// The event types of a room's timeline as `u` sees it, newest first.
async fn timeline_types(s: &TestServer, u: &User, room: &str) -> Vec<String> {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_everywhere_and_nothing_is_stored() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".to_owned());
    })
    .await;
    let alice = s.register("alice", "alice-password").await;
    let uid = enc(&alice.user_id);
    let room = room_with(&s, &alice).await;
    let before = timeline_types(&s, &alice, &room).await;

    // Bodies.
    let r = s
        .put(
            &format!("/_matrix/client/v3/profile/{uid}/displayname"),
            alice.t(),
            &json!({"displayname": "a\u{0}b"}),
        )
        .await;
    assert_refused(&r, "display name");
    let (_, profile) = s
        .get(&format!("/_matrix/client/v3/profile/{uid}"), alice.t())
        .await;
    assert_ne!(profile["displayname"], "a\u{0}b");

    let r = s
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.t(),
            &json!({"display_name": "phone\u{0}"}),
        )
        .await;
    assert_refused(&r, "device name");

    let data = format!("/_matrix/client/v3/user/{uid}/account_data/org.example.nul");
    let r = s.put(&data, alice.t(), &json!({"x": "\u{0}"})).await;
    assert_refused(&r, "account data content");
    let r = s.put(&data, alice.t(), &json!({"x\u{0}": 1})).await;
    assert_refused(&r, "account data key");
    assert_error(&s.get(&data, alice.t()).await, 404, "M_NOT_FOUND");

    let filter = format!("/_matrix/client/v3/user/{uid}/filter");
    let r = s
        .post(&filter, alice.t(), &json!({"event_fields": ["a\u{0}"]}))
        .await;
    assert_refused(&r, "filter");
    let r = s
        .post(
            &filter,
            alice.t(),
            &json!({"room": {"timeline": {"types": ["m.\u{0}"]}}}),
        )
        .await;
    assert_refused(&r, "filter types");

    let r = s
        .put(
            "/_matrix/client/v3/sendToDevice/org.example.nul/t1",
            alice.t(),
            &json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"x": "\u{0}"}}}}),
        )
        .await;
    assert_refused(&r, "to-device content");

    let r = s
        .post(
            "/_matrix/client/v3/publicRooms",
            alice.t(),
            &json!({"filter": {"generic_search_term": "a\u{0}"}}),
        )
        .await;
    assert_refused(&r, "public rooms search");

    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t2"),
            alice.t(),
            &json!({"msgtype": "m.text", "body": "hi\u{0}"}),
        )
        .await;
    assert_refused(&r, "message content");
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            alice.t(),
            &json!({"topic": "\u{0}"}),
        )
        .await;
    assert_refused(&r, "state content");

    // Path and query parameters.
    let r = s
        .put(
            &format!("/_matrix/client/v3/user/{uid}/account_data/a%00b"),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_refused(&r, "account data type");
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t%00x"),
            alice.t(),
            &json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_refused(&r, "txn id");
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/org.ex%00ample/t3"),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_refused(&r, "event type");
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.example/k%00"),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_refused(&r, "state key");
    let r = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.ex%00ample/k"),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_refused(&r, "state event type");
    let r = s
        .put(
            "/_matrix/client/v3/pushrules/global/override/rule%00",
            alice.t(),
            &json!({"actions": ["notify"], "conditions": []}),
        )
        .await;
    assert_refused(&r, "push rule id");
    let r = s
        .put(
            "/_matrix/client/v3/sendToDevice/org.example/t%00",
            alice.t(),
            &json!({"messages": {}}),
        )
        .await;
    assert_refused(&r, "to-device txn id");
    let r = s
        .get(
            "/_matrix/client/v3/publicRooms?server=trellis.test&since=%00",
            alice.t(),
        )
        .await;
    assert_refused(&r, "public rooms query");
    let r = s
        .get(
            &format!("/_matrix/client/v3/user/{uid}/filter/%00"),
            alice.t(),
        )
        .await;
    assert_refused(&r, "filter id");
    let upload = s
        .http
        .post(s.url("/_matrix/media/v3/upload?filename=a%00b.txt"))
        .bearer_auth(&alice.token)
        .header("content-type", "text/plain")
        .body("words")
        .send()
        .await
        .expect("upload");
    let status = upload.status().as_u16();
    let body: Value = upload.json().await.unwrap_or(Value::Null);
    assert_refused(&(status, body), "media file name");

    // Registration: the device ID, the UIA session, the admin nonce.
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "bob", "password": "bob-password", "device_id": "D\u{0}",
                    "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_refused(&r, "register device_id");
    let r = s
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "bob", "password": "bob-password",
                    "auth": {"type": "m.login.dummy", "session": "\u{0}"}}),
        )
        .await;
    assert_refused(&r, "UIA session");
    let r = s
        .post(
            "/_synapse/admin/v1/register",
            None,
            &json!({"nonce": "\u{0}", "username": "carol", "password": "p", "mac": "00"}),
        )
        .await;
    assert_refused(&r, "admin register nonce");
    let (status, _) = s.login("bob", "bob-password").await;
    assert_eq!(status, 403, "bob was never registered");

    // Nothing reached the room.
    assert_eq!(timeline_types(&s, &alice, &room).await, before);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_federation_public_rooms_search_is_refused() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let r = signed(
        &b,
        &a,
        "POST",
        "/_matrix/federation/v1/publicRooms",
        Some(&json!({"filter": {"generic_search_term": "x\u{0}"}})),
    )
    .await;
    assert_refused(&r, "federation public rooms search");
    let r = signed(
        &b,
        &a,
        "GET",
        "/_matrix/federation/v1/publicRooms?since=%00",
        None,
    )
    .await;
    assert_refused(&r, "federation public rooms since");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_surrogates_are_refused() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let uid = enc(&alice.user_id);
    let room = room_with(&s, &alice).await;
    let before = timeline_types(&s, &alice, &room).await;
    for (what, body) in [
        ("lead", r#"{"msgtype":"m.text","body":"\ud800"}"#),
        ("trail", r#"{"msgtype":"m.text","body":"\udc00x"}"#),
        ("key", r#"{"msgtype":"m.text","body":"x","\uD83D":1}"#),
        (
            "pair reversed",
            r#"{"msgtype":"m.text","body":"\udc00\ud800"}"#,
        ),
    ] {
        let r = raw(
            &s,
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{room}/send/m.room.message/{}",
                enc(what)
            ),
            alice.t(),
            body,
        )
        .await;
        assert_refused(&r, what);
    }
    // A real pair (an emoji) and an escaped backslash before "u" are fine.
    let r = raw(
        &s,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/ok"),
        alice.t(),
        r#"{"msgtype":"m.text","body":"\ud83d\ude00 \\ud800 \\u0000"}"#,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let data = format!("/_matrix/client/v3/user/{uid}/account_data/org.example.s");
    let r = raw(&s, "PUT", &data, alice.t(), r#"{"x":"\ud800"}"#).await;
    assert_refused(&r, "account data");
    assert_error(&s.get(&data, alice.t()).await, 404, "M_NOT_FOUND");
    let r = raw(
        &s,
        "PUT",
        &format!("/_matrix/client/v3/profile/{uid}/displayname"),
        alice.t(),
        r#"{"displayname":"\udfff"}"#,
    )
    .await;
    assert_refused(&r, "display name");

    let mut after = before.clone();
    after.insert(0, "m.room.message".to_owned());
    assert_eq!(timeline_types(&s, &alice, &room).await, after);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_content_must_be_canonical_json() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = room_with(&s, &alice).await;
    let before = timeline_types(&s, &alice, &room).await;
    let deep = format!("{{\"x\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let cases = [
        ("float", r#"{"x":1.5}"#.to_owned()),
        ("negative zero", r#"{"x":-0.0}"#.to_owned()),
        ("exponent", r#"{"x":1e3}"#.to_owned()),
        ("too big", r#"{"x":9007199254740992}"#.to_owned()),
        ("too small", r#"{"x":-9007199254740992}"#.to_owned()),
        ("huge", r#"{"x":1e400}"#.to_owned()),
        ("nested float", r#"{"x":{"y":[1,2.25]}}"#.to_owned()),
        ("deep", deep),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        let r = raw(
            &s,
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/org.example.n/t{i}"),
            alice.t(),
            body,
        )
        .await;
        assert_refused(&r, what);
        let r = raw(
            &s,
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/org.example.n/k{i}"),
            alice.t(),
            body,
        )
        .await;
        assert_refused(&r, what);
        let (status, _) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/org.example.n/k{i}"),
                alice.t(),
            )
            .await;
        assert_eq!(status, 404, "{what}: no state stored");
    }
    // The largest integers canonical JSON allows are fine.
    let r = raw(
        &s,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/org.example.n/edge"),
        alice.t(),
        r#"{"max":9007199254740991,"min":-9007199254740991}"#,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let mut after = before.clone();
    after.insert(0, "org.example.n".to_owned());
    assert_eq!(timeline_types(&s, &alice, &room).await, after);

    // createRoom with such numbers in the power levels creates nothing.
    for (what, body) in [
        (
            "float",
            r#"{"power_level_content_override":{"users_default":1.5}}"#,
        ),
        (
            "too big",
            r#"{"power_level_content_override":{"ban":9007199254740992}}"#,
        ),
        (
            "huge",
            r#"{"power_level_content_override":{"events":{"m.x":1e400}}}"#,
        ),
        (
            "initial state float",
            r#"{"initial_state":[{"type":"org.x","state_key":"","content":{"x":0.5}}]}"#,
        ),
    ] {
        let r = raw(&s, "POST", "/_matrix/client/v3/createRoom", alice.t(), body).await;
        assert_refused(&r, what);
    }
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", alice.t()).await;
    assert_eq!(joined["joined_rooms"], json!([room]));
    let (rooms,): (i64,) = sqlx::query_as("SELECT count(*) FROM rooms")
        .fetch_one(&db(&s).await)
        .await
        .expect("count rooms");
    assert_eq!(rooms, 1, "no room row left behind");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_alias_must_name_an_alias_of_this_room() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s
        .create_room(&alice, json!({"room_alias_name": "home"}))
        .await;
    // A second room whose alias the first may not claim.
    let _elsewhere = s
        .create_room(&alice, json!({"room_alias_name": "elsewhere"}))
        .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias");
    let before = s.get(&path, alice.t()).await;
    assert_eq!(before.1["alias"], "#home:trellis.test");

    assert_refused(
        &s.put(&path, alice.t(), &json!({"alias": "not an alias"}))
            .await,
        "non-alias",
    );
    assert_refused(
        &s.put(&path, alice.t(), &json!({"alias": 5})).await,
        "alias not a string",
    );
    assert_refused(
        &s.put(&path, alice.t(), &json!({"alt_aliases": [5]})).await,
        "alt_aliases number",
    );
    assert_refused(
        &s.put(
            &path,
            alice.t(),
            &json!({"alt_aliases": "#home:trellis.test"}),
        )
        .await,
        "alt_aliases not a list",
    );
    assert_error(
        &s.put(&path, alice.t(), &json!({"alias": "#nowhere:trellis.test"}))
            .await,
        400,
        "M_BAD_ALIAS",
    );
    assert_error(
        &s.put(
            &path,
            alice.t(),
            &json!({"alias": "#elsewhere:trellis.test"}),
        )
        .await,
        400,
        "M_BAD_ALIAS",
    );
    assert_error(
        &s.put(
            &path,
            alice.t(),
            &json!({"alias": "#home:trellis.test", "alt_aliases": ["#elsewhere:trellis.test"]}),
        )
        .await,
        400,
        "M_BAD_ALIAS",
    );
    assert_eq!(s.get(&path, alice.t()).await, before, "nothing changed");

    // What the spec allows still works: the room's own aliases, and no alias at all.
    let (status, body) = s
        .put(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc("#second:trellis.test")
            ),
            alice.t(),
            &json!({"room_id": room}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = s
        .put(
            &path,
            alice.t(),
            &json!({"alias": "#home:trellis.test", "alt_aliases": ["#second:trellis.test"]}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = s.put(&path, alice.t(), &json!({})).await;
    assert_eq!(r.0, 200, "{}", r.1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_spec_constrains_are_validated() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let room = a.create_room(&alice, json!({})).await;

    // createRoom: an unknown visibility, a power level that is not an integer.
    for (what, body) in [
        ("visibility", json!({"visibility": "secret"})),
        (
            "string power level",
            json!({"power_level_content_override": {"users_default": "50"}}),
        ),
        (
            "string event power level",
            json!({"power_level_content_override": {"events": {"m.room.name": "0"}}}),
        ),
        (
            "string user power level",
            json!({"power_level_content_override": {"users": {"@x:trellis.test": "10"}}}),
        ),
    ] {
        let r = a
            .post("/_matrix/client/v3/createRoom", alice.t(), &body)
            .await;
        assert_refused(&r, what);
    }
    let (_, joined) = a.get("/_matrix/client/v3/joined_rooms", alice.t()).await;
    assert_eq!(joined["joined_rooms"], json!([room]));

    // Tokens and enumerations in query strings.
    for query in [
        "from=t-1_-1",
        "from=t1_x",
        "from=bogus",
        "dir=b&to=bogus",
        "dir=b&to=t-5_3",
    ] {
        let r = a
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&{query}"),
                alice.t(),
            )
            .await;
        assert_refused(&r, query);
    }
    assert_refused(
        &a.get(
            "/_matrix/client/v3/sync?set_presence=bogus&timeout=0",
            alice.t(),
        )
        .await,
        "set_presence",
    );
    assert_refused(
        &a.get(
            &format!("/_matrix/client/v3/rooms/{room}/members?membership=bogus"),
            alice.t(),
        )
        .await,
        "members membership",
    );
    assert_refused(
        &a.get(
            &format!("/_matrix/client/v3/rooms/{room}/members?not_membership=bogus"),
            alice.t(),
        )
        .await,
        "members not_membership",
    );

    // Bodies of the wrong shape.
    let uid = enc(&alice.user_id);
    assert_refused(
        &a.post(
            &format!("/_matrix/client/v3/user/{uid}/filter"),
            alice.t(),
            &json!({"event_format": "bogus"}),
        )
        .await,
        "filter event_format",
    );
    assert_refused(
        &a.put(
            "/_matrix/client/v3/sendToDevice/org.example/t1",
            alice.t(),
            &json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): "str"}}}),
        )
        .await,
        "to-device content",
    );
    let event = a.send_text(&alice, &room, "hello").await;
    assert_refused(
        &a.post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                enc(&event)
            ),
            alice.t(),
            &json!([]),
        )
        .await,
        "receipt body",
    );

    // Federation profile query with a field the spec does not name.
    let r = signed(
        &b,
        &a,
        "GET",
        &format!("/_matrix/federation/v1/query/profile?user_id={uid}&field=bogus"),
        None,
    )
    .await;
    assert_refused(&r, "federation profile field");
    let r = signed(
        &b,
        &a,
        "GET",
        &format!("/_matrix/federation/v1/query/profile?user_id={uid}&field=displayname"),
        None,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_ids_and_server_names_are_checked_before_any_lookup() {
    let s = TestServer::start_with(|c| {
        // Any outbound fetch would be allowed to reach loopback: only validation stops it.
        c.federation.ip_range_allowlist = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let alice = s.register("alice", "alice-password").await;
    let mxc = common::media::upload(&s, &alice, b"words", "text/plain", None).await;
    let id = common::media::tail(&mxc)
        .rsplit('/')
        .next()
        .expect("media id")
        .to_owned();
    let prefixes = [
        "/_matrix/client/v1/media/download",
        "/_matrix/client/v1/media/thumbnail",
        "/_matrix/media/v3/download",
        "/_matrix/media/v3/thumbnail",
    ];
    for prefix in prefixes {
        let q = if prefix.ends_with("thumbnail") {
            "?width=32&height=32"
        } else {
            ""
        };
        for server in ["..", ".", "a..b", ".trellis.test", "trellis.test.", "-.x"] {
            let r = raw_get(&s, &alice, &format!("{prefix}/{server}/{id}{q}")).await;
            assert_error(&r, 400, "M_INVALID_PARAM");
        }
        for media in ["..", "a.b", "x%2Fy", "%C3%A9"] {
            let r = raw_get(&s, &alice, &format!("{prefix}/trellis.test/{media}{q}")).await;
            assert_error(&r, 400, "M_INVALID_PARAM");
        }
        // Well formed but unknown: not found, as Synapse answers.
        let r = raw_get(&s, &alice, &format!("{prefix}/trellis.test/NoSuchMedia{q}")).await;
        assert_error(&r, 404, "M_NOT_FOUND");
    }
    let r = raw_get(
        &s,
        &alice,
        &format!("/_matrix/client/v1/media/download/../{id}/name.txt"),
    )
    .await;
    assert_error(&r, 400, "M_INVALID_PARAM");
    // Asynchronous uploads name a server and an ID too.
    let r = s
        .http
        .put(s.url("/_matrix/media/v3/upload/trellis.test/..%2E"))
        .bearer_auth(&alice.token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_refused(&(status, body), "reserved upload media id");

    // Nothing was fetched or stored for any of them.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM media")
        .fetch_one(&db(&s).await)
        .await
        .expect("count media");
    assert_eq!(rows, 1, "only the upload");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_media_ids_are_checked() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    for media in ["a.b", "x~y", "%C3%A9"] {
        let r = signed(
            &b,
            &a,
            "GET",
            &format!("/_matrix/federation/v1/media/download/{media}"),
            None,
        )
        .await;
        assert_error(&r, 400, "M_INVALID_PARAM");
    }
    let r = signed(
        &b,
        &a,
        "GET",
        "/_matrix/federation/v1/media/download/NoSuchMedia",
        None,
    )
    .await;
    assert_error(&r, 404, "M_NOT_FOUND");
    b.shutdown().await;
    a.shutdown().await;
}

/// Every error answer is Matrix JSON, whichever layer refused the request.
#[track_caller]
fn assert_matrix_error(r: &(u16, Value), status: u16, what: &str) {
    assert_eq!(r.0, status, "{what}: status for {}", r.1);
    assert!(
        r.1["errcode"].as_str().is_some_and(|c| c.starts_with("M_")),
        "{what}: errcode in {}",
        r.1
    );
    assert!(r.1["error"].is_string(), "{what}: message in {}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_matrix_errors_from_every_layer() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = room_with(&s, &alice).await;
    let req = |line: &str, extra: &str| {
        format!(
            "{line} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
            alice.token
        )
    };

    // Path parameters that are not UTF-8 once decoded.
    let r = raw_http(
        &s,
        &req(
            &format!("GET /_matrix/client/v3/rooms/{room}/state/%FF/x"),
            "",
        ),
    )
    .await;
    assert_matrix_error(&r, 400, "bad path encoding");
    let r = raw_http(&s, &req("GET /_matrix/client/v3/rooms/%C3%28/members", "")).await;
    assert_matrix_error(&r, 400, "bad path encoding in room ID");
    // A query string that is not UTF-8 once decoded.
    let r = raw_http(
        &s,
        &req(
            &format!("GET /_matrix/client/v3/rooms/{room}/messages?dir=b&from=%FF"),
            "",
        ),
    )
    .await;
    assert_matrix_error(&r, 400, "bad query encoding");
    let r = raw_http(
        &s,
        &req(
            &format!("GET /_matrix/client/v1/rooms/{room}/hierarchy?limit=%FF"),
            "",
        ),
    )
    .await;
    assert_matrix_error(&r, 400, "bad query value");

    // An unknown method, and a body that is not JSON at all.
    let r = raw_http(&s, &req("BREW /_matrix/client/versions", "")).await;
    assert_matrix_error(&r, 405, "unknown method");
    let r = raw_http(
        &s,
        &format!(
            "POST /_matrix/client/v3/createRoom HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            alice.token
        ),
    )
    .await;
    assert_matrix_error(&r, 400, "not JSON");
    s.shutdown().await;
}

/// hyper answers a request it cannot parse (a URI over 65,534 bytes, more than 100 headers,
/// a header section over its buffer) itself, before any of our code runs; the connection
/// layer puts a Matrix error on that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_matrix_errors() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let req = |line: &str, extra: &str| {
        format!(
            "{line} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
            alice.token
        )
    };
    let long = format!("GET /_matrix/client/v3/sync?filter={}", "a".repeat(70_000));
    let r = raw_http(&s, &req(&long, "")).await;
    assert_matrix_error(&r, 414, "over-long URI");
    let many: String = (0..150).map(|i| format!("X-Extra-{i}: {i}\r\n")).collect();
    let r = raw_http(&s, &req("GET /_matrix/client/versions", &many)).await;
    assert_matrix_error(&r, 431, "too many headers");
    let huge = format!("X-Big: {}\r\n", "b".repeat(1 << 20));
    let r = raw_http(&s, &req("GET /_matrix/client/versions", &huge)).await;
    assert_matrix_error(&r, 431, "over-long header");
    let r = raw_http(&s, &req("GET /_matrix/client/versions", "not a header\r\n")).await;
    assert_matrix_error(&r, 400, "a header line without a colon");
    s.shutdown().await;
}

/// Request bodies are never decompressed: a gzip-encoded body (a small one could expand to
/// gigabytes) is refused as what it is on the wire, not JSON, and nothing is made of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_request_bodies_are_not_inflated() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    // A gzip member header (magic, deflate, no flags) and deflate data: what a client
    // compressing `{}` might send, never valid JSON as it stands.
    let gzip: Vec<u8> = vec![
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff, 0xab, 0xae, 0x05, 0x00, 0x43, 0xbf, 0xa6,
        0xa3, 0x02, 0x00, 0x00, 0x00,
    ];
    let res = s
        .http
        .post(s.url("/_matrix/client/v3/createRoom"))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip)
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.expect("a JSON error");
    assert_eq!(body["errcode"], "M_NOT_JSON", "{body}");
    let (_, joined) = s
        .get("/_matrix/client/v3/joined_rooms", Some(&alice.token))
        .await;
    assert_eq!(joined["joined_rooms"], serde_json::json!([]), "{joined}");
}

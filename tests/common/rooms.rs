//! Rooms across servers as a test sees them: timelines and state read over the client API,
//! and PDUs forged as a user of one server would send them to another (signed with that
//! server's own key), for tests of what a server does with what it is sent.

use serde_json::{Value, json};

use super::server::{TestServer, User};

fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
}

/// The room's timeline as the user sees it, oldest first: (event_id, type, body or membership).
pub async fn timeline(s: &TestServer, u: &User, room: &str) -> Vec<(String, String, String)> {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"),
            u.t(),
        )
        .await;
    if status != 200 {
        return Vec::new();
    }
    let mut out: Vec<(String, String, String)> = body["chunk"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|e| {
                    let detail = e["content"]["body"]
                        .as_str()
                        .or_else(|| e["content"]["membership"].as_str())
                        .unwrap_or("")
                        .to_owned();
                    (
                        e["event_id"].as_str().unwrap_or("").to_owned(),
                        e["type"].as_str().unwrap_or("").to_owned(),
                        detail,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.reverse();
    out
}

pub fn bodies(t: &[(String, String, String)]) -> Vec<String> {
    t.iter()
        .filter(|e| e.1 == "m.room.message")
        .map(|e| e.2.clone())
        .collect()
}

/// A public room on `a` with alias `#name:a`, created by a fresh user.
pub async fn public_room(a: &TestServer, creator: &User, name: &str) -> (String, String) {
    public_room_of(a, creator, name, None).await
}

/// A public room with an alias, in `version` (the default when `None`).
pub async fn public_room_of(
    a: &TestServer,
    creator: &User,
    name: &str,
    version: Option<&str>,
) -> (String, String) {
    let mut body =
        json!({"preset": "public_chat", "room_alias_name": name, "visibility": "public"});
    if let Some(v) = version {
        body["room_version"] = v.into();
    }
    let room = a.create_room(creator, body).await;
    (room, format!("#{name}:{}", a.server_name()))
}

/// The room's current state as sorted (type, state_key, event_id).
pub async fn state_of(s: &TestServer, u: &User, room: &str) -> Vec<(String, String, String)> {
    let (status, body) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/state"), u.t())
        .await;
    assert_eq!(status, 200);
    let mut ids: Vec<(String, String, String)> = body
        .as_array()
        .expect("state")
        .iter()
        .map(|e: &Value| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["state_key"].as_str().unwrap_or("").to_owned(),
                e["event_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ids.sort();
    ids
}

/// The (type, state_key) → event ID map of the room's current state as `u` on `s` sees it.
pub async fn state_ids(
    s: &TestServer,
    u: &User,
    room: &str,
) -> std::collections::HashMap<(String, String), String> {
    state_of(s, u, room)
        .await
        .into_iter()
        .map(|(t, k, id)| ((t, k), id))
        .collect()
}

/// PDUs as a user of server `from` would send them into a room on server `to`, signed with
/// `from`'s own key, and /send transactions of them.
pub struct Forger {
    keys: trellis::keys::ServerKeys,
    from: ruma::OwnedServerName,
    to: ruma::OwnedServerName,
    to_url: String,
    room_id: ruma::OwnedRoomId,
    version: ruma::RoomVersionId,
    sender: ruma::OwnedUserId,
}

impl Forger {
    pub fn new(
        to: &TestServer,
        from: &TestServer,
        room: &str,
        sender: &str,
        version: ruma::RoomVersionId,
    ) -> Forger {
        let name = ruma::OwnedServerName::try_from(from.server_name()).unwrap();
        Forger {
            keys: trellis::keys::ServerKeys::load_or_generate(
                &from.config.signing_key_path(),
                name.clone(),
            )
            .unwrap(),
            from: name,
            to: ruma::OwnedServerName::try_from(to.server_name()).unwrap(),
            to_url: to.federation_url(""),
            room_id: ruma::OwnedRoomId::try_from(room).unwrap(),
            version,
            sender: ruma::OwnedUserId::try_from(sender).unwrap(),
        }
    }

    /// An event on `prev` citing `auth`: its ID and signed JSON.
    pub fn event(
        &self,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &ruma::OwnedEventId,
        auth: &[ruma::OwnedEventId],
        depth: i64,
    ) -> (ruma::OwnedEventId, String) {
        use trellis::room::pdu::NewContent;
        self.build(
            NewContent {
                kind: ruma::events::TimelineEventType::from(kind),
                state_key: state_key.map(str::to_owned),
                content: serde_json::value::to_raw_value(&content).unwrap(),
                redacts: None,
            },
            prev,
            auth,
            depth,
        )
    }

    /// A redaction of `target` on `prev` (`redacts` in the content and at the top level,
    /// as servers send it for every room version).
    pub fn redaction(
        &self,
        target: &ruma::OwnedEventId,
        prev: &ruma::OwnedEventId,
        auth: &[ruma::OwnedEventId],
        depth: i64,
    ) -> (ruma::OwnedEventId, String) {
        use trellis::room::pdu::NewContent;
        self.build(
            NewContent {
                kind: ruma::events::TimelineEventType::RoomRedaction,
                state_key: None,
                content: serde_json::value::to_raw_value(&json!({ "redacts": target })).unwrap(),
                redacts: Some(target.clone()),
            },
            prev,
            auth,
            depth,
        )
    }

    fn build(
        &self,
        new: trellis::room::pdu::NewContent,
        prev: &ruma::OwnedEventId,
        auth: &[ruma::OwnedEventId],
        depth: i64,
    ) -> (ruma::OwnedEventId, String) {
        use trellis::room::pdu::{Placement, build};
        build(
            &self.keys,
            &new,
            &Placement {
                room_id: Some(&self.room_id),
                version: &self.version,
                rules: &self.version.rules().unwrap(),
                sender: &self.sender,
                prev_events: std::slice::from_ref(prev),
                auth_events: auth,
                depth,
            },
        )
        .unwrap()
    }

    /// A message on `prev`.
    pub fn message(
        &self,
        body: &str,
        prev: &ruma::OwnedEventId,
        auth: &[ruma::OwnedEventId],
        depth: i64,
    ) -> (ruma::OwnedEventId, String) {
        let content = json!({"msgtype": "m.text", "body": body});
        self.event("m.room.message", None, content, prev, auth, depth)
    }

    /// Send the PDUs as one transaction; the status and the answer.
    pub async fn send(
        &self,
        txn: &str,
        pdus: Vec<Box<serde_json::value::RawValue>>,
    ) -> (u16, Value) {
        self.send_with_edus(txn, pdus, Vec::new()).await
    }

    /// Send PDUs and EDUs (raw JSON, however malformed) as one transaction.
    pub async fn send_with_edus(
        &self,
        txn: &str,
        pdus: Vec<Box<serde_json::value::RawValue>>,
        edus: Vec<Box<serde_json::value::RawValue>>,
    ) -> (u16, Value) {
        use ruma::api::OutgoingRequestExt;
        use ruma::api::federation::authentication::XMatrixSigningInput;
        use ruma::api::federation::transactions::send_transaction_message;
        let mut request = send_transaction_message::v1::Request::new(
            txn.into(),
            self.from.clone(),
            ruma::MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = edus.into_iter().map(ruma::serde::Raw::from_json).collect();
        let http_request = request
            .try_into_http_request::<Vec<u8>>(
                &self.to_url,
                XMatrixSigningInput::new(self.from.clone(), self.to.clone(), self.keys.key_pair()),
                (),
            )
            .unwrap();
        let (parts, body) = http_request.into_parts();
        let response = insecure_client()
            .put(parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

pub fn raw(json: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(json.to_owned()).unwrap()
}

/// A DAG builder standing where the room on `to` is now, as `u` sees it (its current state,
/// its newest event and that event's depth), signing as server `from` with `from`'s own
/// key: the events a member server would send next, without choosing prev events, auth
/// events and depths by hand.
pub async fn live_dag(
    to: &TestServer,
    u: &User,
    from: &TestServer,
    room: &str,
    version: ruma::RoomVersionId,
) -> super::dag::Dag {
    let id = |s: &str| ruma::OwnedEventId::try_from(s).expect("event ID");
    let state = state_ids(to, u, room)
        .await
        .into_iter()
        .map(|(k, v)| (k, id(&v)))
        .collect();
    let newest = timeline(to, u, room).await.pop().expect("an event").0;
    let (status, pdu) = super::federation::signed(
        from,
        to,
        "GET",
        &format!("/_matrix/federation/v1/event/{newest}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{pdu}");
    let depth = pdu["pdus"][0]["depth"].as_i64().expect("depth");
    let name = ruma::OwnedServerName::try_from(from.server_name()).expect("server name");
    let keys = trellis::keys::ServerKeys::load_or_generate(&from.config.signing_key_path(), name)
        .expect("signing key");
    super::dag::Dag::resume(
        room,
        version,
        keys,
        state,
        vec![id(&newest)],
        trellis::room::pdu::depth_after(depth),
    )
}

//! A scripted federation peer: the smallest Matrix server that can stand on the other side
//! of the federation scenarios. It publishes a signing key, signs its requests and events
//! with it, hosts one generated room (make_join / send_join) and accepts whatever the server
//! under test sends it. It checks nothing it receives: it is there to measure the other side.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rand::RngCore;
use ruma::api::federation::membership::{create_join_event, prepare_join_event};
use ruma::api::federation::transactions::send_transaction_message;
use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId, UserId,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::watch;
use trellis::config::FederationConfig;
use trellis::federation::client::FederationClient;
use trellis::keys::ServerKeys;
use trellis::room::pdu::{self, NewContent, Placement};

use crate::client::Res;

/// The room version of everything the peer builds (the default of today's servers).
const VERSION: RoomVersionId = RoomVersionId::V10;

pub struct Peer {
    pub name: OwnedServerName,
    keys: Arc<ServerKeys>,
    client: FederationClient,
    hosted: Arc<Mutex<Option<Arc<HostedRoom>>>>,
    built: Arc<Mutex<Built>>,
    stop: watch::Sender<bool>,
    dir: PathBuf,
}

/// A room the peer hosts, with its answers prepared.
pub struct HostedRoom {
    pub room_id: OwnedRoomId,
    /// Joined users besides the creator.
    pub members: usize,
    create: OwnedEventId,
    power_levels: OwnedEventId,
    join_rules: OwnedEventId,
    latest: OwnedEventId,
    depth: i64,
    /// The send_join answer, serialised once: the whole state and its auth chain.
    send_join_body: String,
}

/// A room of another server that the peer's user has joined: what its events cite.
pub struct Joined {
    room_id: OwnedRoomId,
    user: OwnedUserId,
    auth: Vec<OwnedEventId>,
    latest: OwnedEventId,
    depth: i64,
}

/// Every event the peer has built or signed, by ID. A server that receives events out of
/// order (Synapse may take the PDUs of one transaction in any order) asks the sender for the
/// ones before them, as it would ask a real server.
#[derive(Default)]
struct Built {
    events: HashMap<OwnedEventId, (String, Vec<OwnedEventId>)>,
    /// Per room, the state every event the peer sends there sees (its own events change no
    /// state after its join) and that state's auth chain, for `/state_ids`.
    rooms: HashMap<OwnedRoomId, RoomIds>,
}

struct RoomIds {
    state: Vec<OwnedEventId>,
    auth_chain: Vec<OwnedEventId>,
}

#[derive(Clone)]
struct PeerState {
    keys: Arc<ServerKeys>,
    hosted: Arc<Mutex<Option<Arc<HostedRoom>>>>,
    built: Arc<Mutex<Built>>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Peer {
    /// Listen on a loopback port with TLS (self-signed) and a fresh signing key; the server
    /// name is `127.0.0.1:<port>`, so servers under test connect without discovery.
    pub async fn start() -> Res<Peer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(err)?;
        let port = listener.local_addr().map_err(err)?.port();
        let name = OwnedServerName::try_from(format!("127.0.0.1:{port}")).map_err(err)?;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let keys = Arc::new(ServerKeys::from_seed(name.clone(), "load", &seed).map_err(err)?);

        let dir =
            std::env::temp_dir().join(format!("trellis-load-peer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).map_err(err)?;
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert.cert.pem()).map_err(err)?;
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).map_err(err)?;

        let hosted = Arc::new(Mutex::new(None));
        let built = Arc::new(Mutex::new(Built::default()));
        let app = Router::new()
            .route("/_matrix/key/v2/server", get(server_keys))
            .route("/_matrix/federation/v1/version", get(version))
            .route("/_matrix/federation/v1/send/{txn}", put(accept_transaction))
            .route(
                "/_matrix/federation/v1/make_join/{room}/{user}",
                get(make_join),
            )
            .route(
                "/_matrix/federation/v2/send_join/{room}/{event}",
                put(send_join),
            )
            .route("/_matrix/federation/v1/event/{event}", get(event))
            .route("/_matrix/federation/v1/state_ids/{room}", get(state_ids))
            .route("/_matrix/federation/v1/state/{room}", get(room_state))
            .route(
                "/_matrix/federation/v1/get_missing_events/{room}",
                post(missing_events),
            )
            .fallback(unrecognized)
            .with_state(PeerState {
                keys: keys.clone(),
                hosted: hosted.clone(),
                built: built.clone(),
            });
        let (stop, stop_rx) = watch::channel(false);
        trellis::server::spawn_serving(listener, Some((&cert_path, &key_path)), app, stop_rx)
            .map_err(err)?;
        // Servers under test are on loopback with self-signed certificates.
        let config = FederationConfig {
            ip_range_allowlist: vec!["127.0.0.0/8".to_owned()],
            verify_tls: false,
            ..FederationConfig::default()
        };
        let client = FederationClient::new(&config, keys.clone()).map_err(err)?;
        Ok(Peer {
            name,
            keys,
            client,
            hosted,
            built,
            stop,
            dir,
        })
    }

    fn user(&self, local: &str) -> Res<OwnedUserId> {
        OwnedUserId::try_from(format!("@{local}:{}", self.name)).map_err(err)
    }

    fn build(
        &self,
        room_id: &OwnedRoomId,
        sender: &UserId,
        new: &NewContent,
        prev: &[OwnedEventId],
        auth: &[OwnedEventId],
        depth: i64,
    ) -> Res<(OwnedEventId, String)> {
        let rules = VERSION.rules().ok_or("no rules for the room version")?;
        let (id, json) = pdu::build(
            &self.keys,
            new,
            &Placement {
                room_id: Some(room_id),
                version: &VERSION,
                rules: &rules,
                sender,
                prev_events: prev,
                auth_events: auth,
                depth,
            },
        )
        .map_err(err)?;
        self.remember(&id, &json, prev.to_vec())?;
        Ok((id, json))
    }

    fn remember(&self, id: &OwnedEventId, json: &str, prev: Vec<OwnedEventId>) -> Res<()> {
        let mut built = self.built.lock().map_err(err)?;
        built.events.insert(id.clone(), (json.to_owned(), prev));
        Ok(())
    }

    /// Generate a public room with `members` joined users besides its creator, and host it:
    /// servers under test can then join it through make_join / send_join.
    pub fn host_room(&self, members: usize) -> Res<Arc<HostedRoom>> {
        let room_id =
            OwnedRoomId::try_from(format!("!load{:016x}:{}", rand::random::<u64>(), self.name))
                .map_err(err)?;
        let creator = self.user("creator")?;
        let state = |kind: &str, key: &str, content: Value| -> Res<NewContent> {
            Ok(NewContent {
                kind: TimelineEventType::from(kind),
                state_key: Some(key.to_owned()),
                content: serde_json::value::to_raw_value(&content).map_err(err)?,
                redacts: None,
            })
        };
        let mut state_json: Vec<String> = Vec::with_capacity(members + 5);
        let mut chain: Vec<String> = Vec::new();
        let mut depth = 1;
        let (create, j) = self.build(
            &room_id,
            &creator,
            &state(
                "m.room.create",
                "",
                json!({"creator": creator, "room_version": VERSION}),
            )?,
            &[],
            &[],
            depth,
        )?;
        state_json.push(j.clone());
        chain.push(j);
        depth += 1;
        let (creator_join, j) = self.build(
            &room_id,
            &creator,
            &state(
                "m.room.member",
                creator.as_str(),
                json!({"membership": "join"}),
            )?,
            std::slice::from_ref(&create),
            std::slice::from_ref(&create),
            depth,
        )?;
        state_json.push(j.clone());
        chain.push(j);
        depth += 1;
        let (power_levels, j) = self.build(
            &room_id,
            &creator,
            &state(
                "m.room.power_levels",
                "",
                json!({"users": {creator.as_str(): 100}, "users_default": 0, "events_default": 0,
                       "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}),
            )?,
            std::slice::from_ref(&creator_join),
            &[create.clone(), creator_join.clone()],
            depth,
        )?;
        state_json.push(j.clone());
        chain.push(j);
        depth += 1;
        let admin_auth = [create.clone(), creator_join.clone(), power_levels.clone()];
        let (join_rules, j) = self.build(
            &room_id,
            &creator,
            &state("m.room.join_rules", "", json!({"join_rule": "public"}))?,
            std::slice::from_ref(&power_levels),
            &admin_auth,
            depth,
        )?;
        state_json.push(j.clone());
        chain.push(j);
        depth += 1;
        let (visibility, j) = self.build(
            &room_id,
            &creator,
            &state(
                "m.room.history_visibility",
                "",
                json!({"history_visibility": "shared"}),
            )?,
            std::slice::from_ref(&join_rules),
            &admin_auth,
            depth,
        )?;
        state_json.push(j);
        depth += 1;
        let join_auth = [create.clone(), join_rules.clone(), power_levels.clone()];
        let mut latest = visibility;
        for i in 0..members {
            let user = self.user(&format!("m{i}"))?;
            let (id, j) = self.build(
                &room_id,
                &user,
                &state(
                    "m.room.member",
                    user.as_str(),
                    json!({"membership": "join", "displayname": format!("member {i}")}),
                )?,
                std::slice::from_ref(&latest),
                &join_auth,
                depth,
            )?;
            state_json.push(j);
            latest = id;
            depth += 1;
        }
        let ids = |events: &[String]| -> Res<Vec<OwnedEventId>> {
            events
                .iter()
                .map(|j| reference_id(&serde_json::from_str(j).map_err(err)?))
                .collect()
        };
        let room_ids = RoomIds {
            state: ids(&state_json)?,
            auth_chain: ids(&chain)?,
        };
        self.built
            .lock()
            .map_err(err)?
            .rooms
            .insert(room_id.clone(), room_ids);
        let send_join_body = format!(
            r#"{{"origin":"{}","members_omitted":false,"servers_in_room":["{}"],"state":[{}],"auth_chain":[{}]}}"#,
            self.name,
            self.name,
            state_json.join(","),
            chain.join(",")
        );
        let room = Arc::new(HostedRoom {
            room_id,
            members,
            create,
            power_levels,
            join_rules,
            latest,
            depth,
            send_join_body,
        });
        *self.hosted.lock().map_err(err)? = Some(room.clone());
        Ok(room)
    }

    /// Join the peer's user `local` to `room_id` on `target` (make_join, sign, send_join v2).
    pub async fn join_remote(&self, target: &str, room_id: &str, local: &str) -> Res<Joined> {
        let room_id = OwnedRoomId::try_from(room_id).map_err(err)?;
        let user = self.user(local)?;
        let target = OwnedServerName::try_from(target).map_err(err)?;
        let mut ask = prepare_join_event::v1::Request::new(room_id.clone(), user.clone());
        ask.ver = vec![VERSION];
        let template = self.client.send(&target, ask).await.map_err(err)?;
        if template.room_version.as_ref() != Some(&VERSION) {
            return Err(format!(
                "the room must be of version {VERSION}, not {:?}",
                template.room_version
            ));
        }
        let rules = VERSION.rules().ok_or("no rules")?;
        let mut event: CanonicalJsonObject =
            serde_json::from_str(template.event.get()).map_err(err)?;
        event.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()),
        );
        event.insert(
            "origin".into(),
            CanonicalJsonValue::String(self.name.to_string()),
        );
        self.keys
            .hash_and_sign_event(&mut event, &rules.redaction)
            .map_err(err)?;
        let event_id = reference_id(&event)?;
        let depth = match event.get("depth") {
            Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
            _ => return Err("join template without depth".to_owned()),
        };
        let json = serde_json::to_string(&event).map_err(err)?;
        let prev = match event.get("prev_events") {
            Some(CanonicalJsonValue::Array(ids)) => ids
                .iter()
                .filter_map(|v| match v {
                    CanonicalJsonValue::String(s) => EventId::parse(s).ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        self.remember(&event_id, &json, prev)?;
        let raw = RawValue::from_string(json).map_err(err)?;
        let answer = self
            .client
            .send(
                &target,
                create_join_event::v2::Request::new(room_id.clone(), event_id.clone(), raw),
            )
            .await
            .map_err(err)?;
        // A message cites the create event, the power levels and its sender's membership.
        let mut auth = vec![event_id.clone()];
        let mut state = vec![event_id.clone()];
        for raw in &answer.room_state.state {
            let ev: CanonicalJsonObject = serde_json::from_str(raw.get()).map_err(err)?;
            let id = reference_id(&ev)?;
            // Known, so that /state can give it back; its ancestors are not the peer's to walk.
            self.remember(&id, raw.get(), Vec::new())?;
            let is = |k: &str, v: &str| matches!(ev.get(k), Some(CanonicalJsonValue::String(s)) if s == v);
            if (is("type", "m.room.create") || is("type", "m.room.power_levels"))
                && is("state_key", "")
            {
                auth.push(id.clone());
            }
            state.push(id);
        }
        let auth_chain = answer
            .room_state
            .auth_chain
            .iter()
            .map(|raw| {
                let id = reference_id(&serde_json::from_str(raw.get()).map_err(err)?)?;
                self.remember(&id, raw.get(), Vec::new())?;
                Ok(id)
            })
            .collect::<Res<Vec<_>>>()?;
        self.built
            .lock()
            .map_err(err)?
            .rooms
            .insert(room_id.clone(), RoomIds { state, auth_chain });
        if auth.len() != 3 {
            return Err("send_join state lacks the create or power levels event".to_owned());
        }
        Ok(Joined {
            room_id,
            user,
            auth,
            latest: event_id,
            depth,
        })
    }

    /// `count` messages from the joined user, each after the one before, as signed PDUs.
    pub fn messages(&self, joined: &mut Joined, count: usize) -> Res<Vec<Box<RawValue>>> {
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let new = NewContent {
                kind: TimelineEventType::RoomMessage,
                state_key: None,
                content: serde_json::value::to_raw_value(
                    &json!({"msgtype": "m.text", "body": format!("ingest {i}")}),
                )
                .map_err(err)?,
                redacts: None,
            };
            joined.depth += 1;
            let (id, j) = self.build(
                &joined.room_id,
                &joined.user,
                &new,
                std::slice::from_ref(&joined.latest),
                &joined.auth,
                joined.depth,
            )?;
            joined.latest = id;
            out.push(RawValue::from_string(j).map_err(err)?);
        }
        Ok(out)
    }

    /// One /send transaction; the number of PDUs the target accepted.
    pub async fn send_transaction(
        &self,
        target: &str,
        txn_id: &str,
        pdus: Vec<Box<RawValue>>,
    ) -> Res<usize> {
        let mut request = send_transaction_message::v1::Request::new(
            txn_id.into(),
            self.name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        let sent = pdus.len();
        request.pdus = pdus;
        let target = OwnedServerName::try_from(target).map_err(err)?;
        let answer = self.client.send(&target, request).await.map_err(err)?;
        let refused: Vec<String> = answer
            .pdus
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
            .collect();
        if let Some(first) = refused.first() {
            return Err(format!(
                "{} of {sent} PDUs refused, e.g. {first}",
                refused.len()
            ));
        }
        Ok(sent)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn reference_id(event: &CanonicalJsonObject) -> Res<OwnedEventId> {
    let rules = VERSION.rules().ok_or("no rules")?;
    let hash = ruma::signatures::reference_hash(event, &rules).map_err(err)?;
    EventId::parse(format!("${hash}")).map_err(err)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn server_keys(State(s): State<PeerState>) -> Response {
    match s.keys.signed_server_keys() {
        Ok(raw) => json_response(StatusCode::OK, raw.json().get().to_owned()),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errcode": "M_UNKNOWN", "error": e.to_string()}).to_string(),
        ),
    }
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        json!({"server": {"name": "trellis-load peer", "version": env!("CARGO_PKG_VERSION")}})
            .to_string(),
    )
}

// Handlers that ignore the request body still take it: a connection closed with request
// bytes left unread is reset, and the reset can cut off the answer still on its way (Synapse
// lost the tail of large send_join answers that way).
async fn accept_transaction(_body: Bytes) -> Response {
    json_response(StatusCode::OK, r#"{"pdus":{}}"#.to_owned())
}

fn hosted(s: &PeerState, room: &str) -> Option<Arc<HostedRoom>> {
    let guard = s.hosted.lock().ok()?;
    guard.as_ref().filter(|h| h.room_id == room).cloned()
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"errcode": "M_NOT_FOUND", "error": "Unknown room"}).to_string(),
    )
}

async fn make_join(
    State(s): State<PeerState>,
    Path((room, user)): Path<(String, String)>,
) -> Response {
    let Some(h) = hosted(&s, &room) else {
        return not_found();
    };
    let template = json!({
        "room_id": h.room_id,
        "sender": user,
        "type": "m.room.member",
        "state_key": user,
        "content": {"membership": "join"},
        "prev_events": [h.latest],
        "auth_events": [h.create, h.join_rules, h.power_levels],
        "depth": h.depth,
        "origin": s.keys.server_name(),
        "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
    });
    json_response(
        StatusCode::OK,
        json!({"room_version": VERSION, "event": template}).to_string(),
    )
}

async fn send_join(
    State(s): State<PeerState>,
    Path((room, _event)): Path<(String, String)>,
    _body: Bytes,
) -> Response {
    match hosted(&s, &room) {
        Some(h) => json_response(StatusCode::OK, h.send_join_body.clone()),
        None => not_found(),
    }
}

/// `GET /_matrix/federation/v1/event/{eventId}`, for events the peer built.
async fn event(State(s): State<PeerState>, Path(id): Path<String>) -> Response {
    let found = s.built.lock().ok().and_then(|b| {
        let id = EventId::parse(&id).ok()?;
        b.events.get(&id).map(|(json, _)| json.clone())
    });
    match found {
        Some(json) => json_response(
            StatusCode::OK,
            format!(
                r#"{{"origin":"{}","origin_server_ts":{},"pdus":[{json}]}}"#,
                s.keys.server_name(),
                MilliSecondsSinceUnixEpoch::now().get()
            ),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({"errcode": "M_NOT_FOUND", "error": "Unknown event"}).to_string(),
        ),
    }
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}`: the room's state at any of the peer's
/// events there (they change no state after the peer's join).
async fn state_ids(State(s): State<PeerState>, Path(room): Path<String>) -> Response {
    let answer = s.built.lock().ok().and_then(|b| {
        let ids = b.rooms.get(&OwnedRoomId::try_from(room.as_str()).ok()?)?;
        Some(json!({"pdu_ids": ids.state, "auth_chain_ids": ids.auth_chain}).to_string())
    });
    match answer {
        Some(body) => json_response(StatusCode::OK, body),
        None => not_found(),
    }
}

/// `GET /_matrix/federation/v1/state/{roomId}`: the same as events.
async fn room_state(State(s): State<PeerState>, Path(room): Path<String>) -> Response {
    let answer = s.built.lock().ok().and_then(|b| {
        let ids = b.rooms.get(&OwnedRoomId::try_from(room.as_str()).ok()?)?;
        let events = |ids: &[OwnedEventId]| -> Option<String> {
            let json: Option<Vec<&str>> = ids
                .iter()
                .map(|id| b.events.get(id).map(|(j, _)| j.as_str()))
                .collect();
            Some(json?.join(","))
        };
        Some(format!(
            r#"{{"pdus":[{}],"auth_chain":[{}]}}"#,
            events(&ids.state)?,
            events(&ids.auth_chain)?
        ))
    });
    match answer {
        Some(body) => json_response(StatusCode::OK, body),
        None => not_found(),
    }
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the peer's events before
/// `latest_events`, walking back through prev_events up to `earliest_events`, oldest first.
async fn missing_events(State(s): State<PeerState>, Json(body): Json<Value>) -> Response {
    let ids = |key: &str| -> Vec<OwnedEventId> {
        body[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| EventId::parse(v.as_str()?).ok())
            .collect()
    };
    let limit = body["limit"].as_u64().unwrap_or(10).min(100) as usize;
    let latest = ids("latest_events");
    let mut seen: HashSet<OwnedEventId> = ids("earliest_events").into_iter().collect();
    seen.extend(latest.iter().cloned());
    let Ok(built) = s.built.lock() else {
        return json_response(StatusCode::INTERNAL_SERVER_ERROR, "{}".to_owned());
    };
    let mut queue: VecDeque<OwnedEventId> = latest
        .iter()
        .filter_map(|id| built.events.get(id))
        .flat_map(|(_, prev)| prev.iter().cloned())
        .collect();
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        if found.len() >= limit {
            break;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some((json, prev)) = built.events.get(&id) {
            found.push(json.as_str());
            queue.extend(prev.iter().cloned());
        }
    }
    found.reverse();
    json_response(
        StatusCode::OK,
        format!(r#"{{"events":[{}]}}"#, found.join(",")),
    )
}

async fn unrecognized(uri: Uri, _body: Bytes) -> Response {
    eprintln!("peer: not served: {}", uri.path());
    json_response(
        StatusCode::NOT_FOUND,
        json!({"errcode": "M_UNRECOGNIZED", "error": "Not served by the load peer"}).to_string(),
    )
}

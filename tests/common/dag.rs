//! A signed room DAG built in memory, for tests and benchmarks alike (the benchmarks include
//! this file by `#[path]`): events made, hashed and signed the way the append path makes
//! them, each by the server of its sender, with prev events, auth events and depth chosen
//! from where the builder stands.
//!
//! The builder stands at a [`Head`]: the events the next one cites, its depth, and the state
//! there. Each event it adds moves the head on. What a test hands to the server under test
//! is its own choice, which is how the shapes a server meets are made:
//!
//! - a linear chain: `dag.message(&u, "a"); dag.message(&u, "b");`
//! - a fork and its merge: `let at = dag.head();` build one branch, `let a = dag.head();`,
//!   `dag.fork(&at)`, build the other, `let b = dag.head();`, then `dag.merge(&[a, b])`: the
//!   next event cites both;
//! - a gap: build events and give the server only the later ones;
//! - outliers: [`Dag::state_events`] and [`Dag::auth_chain`], the events a server learns only
//!   as a room's state or an event's auth chain;
//! - several servers: [`Dag::add_server`], then users on it; every event is signed with the
//!   key of its sender's server.
//!
//! Keys are derived from the server name ([`server_keys`]), so a server under test built
//! with the same name and keys is the one the builder signs for.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId, UserId};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use trellis::keys::ServerKeys;
use trellis::room::append::auth_state_keys;
use trellis::room::pdu::{self, NewContent, Pdu, Placement};
use trellis::room::remote::Incoming;

/// A server's signing key, the same for every call with the same name: the key ID `dag`
/// and a seed hashed from the name.
pub fn server_keys(server: &str) -> ServerKeys {
    let name = OwnedServerName::try_from(server).expect("server name");
    let seed: [u8; 32] = Sha256::digest(server.as_bytes()).into();
    ServerKeys::from_seed(name, "dag", &seed).expect("key")
}

/// Where the builder stands: what the next event cites, its depth, and the state there
/// ((type, state_key) → event).
#[derive(Clone, Debug)]
pub struct Head {
    pub prev: Vec<OwnedEventId>,
    pub depth: i64,
    pub state: HashMap<(String, String), OwnedEventId>,
}

/// The events every room built by [`Dag::base`] starts with.
#[derive(Clone, Debug)]
pub struct Base {
    pub create: OwnedEventId,
    pub creator_join: OwnedEventId,
    pub power_levels: OwnedEventId,
    pub join_rules: OwnedEventId,
}

pub struct Dag {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// The first server added: users made by [`Dag::user`] are on it.
    home: OwnedServerName,
    servers: HashMap<OwnedServerName, ServerKeys>,
    /// Every event the builder recorded, in the order built.
    events: Vec<Incoming>,
    index: HashMap<OwnedEventId, usize>,
    head: Head,
}

impl Dag {
    /// An empty room of `version` on `server` (its ID `!dag:server`; from room version 12
    /// on, the create event's hash once [`Dag::create`] has run).
    pub fn new(server: &str, version: RoomVersionId) -> Dag {
        let rules = version.rules().expect("rules");
        let home = OwnedServerName::try_from(server).expect("server name");
        let mut dag = Dag {
            room_id: OwnedRoomId::try_from(format!("!dag:{server}")).expect("room ID"),
            version,
            rules,
            home: home.clone(),
            servers: HashMap::new(),
            events: Vec::new(),
            index: HashMap::new(),
            head: Head {
                prev: Vec::new(),
                depth: 1,
                state: HashMap::new(),
            },
        };
        dag.add_keys(server_keys(server));
        dag
    }

    /// Continue a room that exists elsewhere (a live server's): `state` is its state
    /// ((type, state_key) → event), `prev` and `depth` where the next event goes.
    pub fn resume(
        room_id: &str,
        version: RoomVersionId,
        keys: ServerKeys,
        state: HashMap<(String, String), OwnedEventId>,
        prev: Vec<OwnedEventId>,
        depth: i64,
    ) -> Dag {
        let home = keys.server_name().clone();
        let mut dag = Dag::new(home.as_str(), version);
        dag.servers.clear();
        dag.add_keys(keys);
        dag.room_id = OwnedRoomId::try_from(room_id).expect("room ID");
        dag.head = Head { prev, depth, state };
        dag
    }

    /// Another server taking part, with its own key ([`server_keys`]).
    pub fn add_server(&mut self, server: &str) -> OwnedServerName {
        self.add_keys(server_keys(server))
    }

    /// A server taking part with the given key (a live server's own).
    pub fn add_keys(&mut self, keys: ServerKeys) -> OwnedServerName {
        let name = keys.server_name().clone();
        self.servers.insert(name.clone(), keys);
        name
    }

    pub fn keys(&self, server: &str) -> &ServerKeys {
        self.servers
            .iter()
            .find(|(name, _)| name.as_str() == server)
            .map(|(_, keys)| keys)
            .unwrap_or_else(|| panic!("no keys for {server}: add_server it first"))
    }

    /// `@localpart:` the first server.
    pub fn user(&self, localpart: &str) -> OwnedUserId {
        self.user_on(localpart, self.home.as_str())
    }

    pub fn user_on(&self, localpart: &str, server: &str) -> OwnedUserId {
        OwnedUserId::try_from(format!("@{localpart}:{server}")).expect("user ID")
    }

    // --- where the builder stands ---

    /// Where the builder stands now (keep it to fork from or merge later).
    pub fn head(&self) -> Head {
        self.head.clone()
    }

    /// Stand at `at` again: the events built next are a branch beside what was built since.
    pub fn fork(&mut self, at: &Head) {
        self.head = at.clone();
    }

    /// Stand where `heads` meet: the next event cites all their prev events and is deeper
    /// than each. Where their states differ, the later head's entry is taken (the builder
    /// does not resolve state; a test that needs the resolved state sets it with
    /// [`Dag::set_state`]).
    pub fn merge(&mut self, heads: &[Head]) {
        let mut prev = Vec::new();
        let mut seen = HashSet::new();
        let mut state = HashMap::new();
        let mut depth = 1;
        for h in heads {
            prev.extend(h.prev.iter().filter(|p| seen.insert((*p).clone())).cloned());
            state.extend(h.state.iter().map(|(k, v)| (k.clone(), v.clone())));
            depth = depth.max(h.depth);
        }
        self.head = Head { prev, depth, state };
    }

    /// Take `event` as the state entry (type, state_key) from here on.
    pub fn set_state(&mut self, kind: &str, state_key: &str, event: &OwnedEventId) {
        self.head
            .state
            .insert((kind.to_owned(), state_key.to_owned()), event.clone());
    }

    // --- events, each placed on the head ---

    /// The create event, the creator's join, power levels (the creator at 100) and a public
    /// join rule.
    pub fn base(&mut self, creator: &UserId) -> Base {
        let create = self.create(creator);
        let creator_join = self.join(creator);
        // From room version 12 on, creators have power above every level and are not listed.
        let users = match self.rules.authorization.explicitly_privilege_room_creators {
            true => json!({}),
            false => json!({creator.as_str(): 100}),
        };
        let power_levels = self.state(
            creator,
            "m.room.power_levels",
            "",
            json!({"users": users, "users_default": 0, "events_default": 0,
                   "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}),
        );
        let join_rules = self.state(
            creator,
            "m.room.join_rules",
            "",
            json!({"join_rule": "public"}),
        );
        Base {
            create,
            creator_join,
            power_levels,
            join_rules,
        }
    }

    /// The create event; from room version 12 on, the room ID is derived from it.
    pub fn create(&mut self, creator: &UserId) -> OwnedEventId {
        let mut content = json!({"room_version": self.version.as_str()});
        if !self.rules.authorization.use_room_create_sender {
            content["creator"] = json!(creator);
        }
        let id = self.send(creator, "m.room.create", Some(""), content);
        if self.rules.authorization.room_create_event_id_as_room_id {
            self.room_id =
                OwnedRoomId::try_from(format!("!{}", id.as_str().trim_start_matches('$')))
                    .expect("room ID");
        }
        id
    }

    /// `user` joins (themselves).
    pub fn join(&mut self, user: &UserId) -> OwnedEventId {
        self.member(user, user, "join")
    }

    /// `sender` sets `target`'s membership.
    pub fn member(&mut self, sender: &UserId, target: &UserId, membership: &str) -> OwnedEventId {
        self.state(
            sender,
            "m.room.member",
            target.as_str(),
            json!({"membership": membership}),
        )
    }

    /// A text message.
    pub fn message(&mut self, sender: &UserId, body: &str) -> OwnedEventId {
        self.send(
            sender,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": body}),
        )
    }

    /// A state event.
    pub fn state(
        &mut self,
        sender: &UserId,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> OwnedEventId {
        self.send(sender, kind, Some(state_key), content)
    }

    /// Any event, on the head, citing the auth events the room version asks for from the
    /// state there; the head moves on to it.
    pub fn send(
        &mut self,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> OwnedEventId {
        let auth = self.auth_for(sender, kind, state_key, &content);
        let Head { prev, depth, .. } = self.head.clone();
        let e = self.build(sender, kind, state_key, content, &prev, &auth, depth);
        let id = e.event_id.clone();
        self.head.prev = vec![id.clone()];
        self.head.depth = pdu::depth_after(depth);
        if let Some(k) = state_key {
            self.head
                .state
                .insert((kind.to_owned(), k.to_owned()), id.clone());
        }
        self.record(e);
        id
    }

    /// Build, hash and sign one event exactly as given, without recording it or moving the
    /// head (what a benchmark of building measures; a test's deliberately odd event).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &self,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[OwnedEventId],
        auth: &[OwnedEventId],
        depth: i64,
    ) -> Incoming {
        let new = NewContent {
            kind: TimelineEventType::from(kind),
            state_key: state_key.map(str::to_owned),
            content: serde_json::value::to_raw_value(&content).expect("content"),
            redacts: None,
        };
        let v12_create =
            kind == "m.room.create" && self.rules.authorization.room_create_event_id_as_room_id;
        let (event_id, json) = pdu::build(
            self.keys(sender.server_name().as_str()),
            &new,
            &Placement {
                room_id: (!v12_create).then_some(&*self.room_id),
                version: &self.version,
                rules: &self.rules,
                sender,
                prev_events: prev,
                auth_events: auth,
                depth,
            },
        )
        .expect("build");
        let pdu = Pdu::parse(event_id.clone(), &json).expect("parse");
        Incoming {
            event_id,
            json,
            pdu,
        }
    }

    /// Keep an event built by [`Dag::build`] among the builder's (the head does not move).
    pub fn record(&mut self, e: Incoming) {
        self.index.insert(e.event_id.clone(), self.events.len());
        self.events.push(e);
    }

    /// The auth events of an event from `sender` on the head: the state entries the room
    /// version's auth rules name, less the create event where the room ID implies it.
    fn auth_for(
        &self,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: &Value,
    ) -> Vec<OwnedEventId> {
        if kind == "m.room.create" {
            return Vec::new();
        }
        let raw = serde_json::value::to_raw_value(content).expect("content");
        let keys = auth_state_keys(
            &self.rules,
            &TimelineEventType::from(kind),
            sender,
            state_key,
            &raw,
        )
        .expect("auth types");
        let implied = self.rules.authorization.room_create_event_id_as_room_id;
        let mut out: Vec<OwnedEventId> = Vec::new();
        for (t, k) in keys {
            if implied && t.to_string() == "m.room.create" {
                continue;
            }
            if let Some(id) = self.head.state.get(&(t.to_string(), k))
                && !out.contains(id)
            {
                out.push(id.clone());
            }
        }
        out
    }

    // --- what to hand to a server ---

    /// Every recorded event, in the order built.
    pub fn events(&self) -> &[Incoming] {
        &self.events
    }

    pub fn event(&self, id: &OwnedEventId) -> &Incoming {
        &self.events[*self.index.get(id).expect("an event of this DAG")]
    }

    /// The events, cloned, in the order given.
    pub fn incoming(&self, ids: &[OwnedEventId]) -> Vec<Incoming> {
        ids.iter().map(|id| self.event(id).clone()).collect()
    }

    /// The events as raw PDUs (a /send transaction's `pdus`).
    pub fn raw(&self, ids: &[OwnedEventId]) -> Vec<Box<RawValue>> {
        ids.iter()
            .map(|id| RawValue::from_string(self.event(id).json.clone()).expect("JSON"))
            .collect()
    }

    /// The state events at `head`, in the order built: what a server learns of the room's
    /// state as outliers (a send_join or /state answer).
    pub fn state_events(&self, head: &Head) -> Vec<Incoming> {
        let mut idx: Vec<usize> = head.state.values().map(|id| self.index[id]).collect();
        idx.sort_unstable();
        idx.into_iter().map(|i| self.events[i].clone()).collect()
    }

    /// The auth chains of `ids` (not the events themselves), in the order built: the events
    /// a server learns only as auth events.
    pub fn auth_chain(&self, ids: &[OwnedEventId]) -> Vec<Incoming> {
        let mut seen: HashSet<usize> = HashSet::new();
        let mut todo: Vec<usize> = ids.iter().map(|id| self.index[id]).collect();
        while let Some(i) = todo.pop() {
            for a in &self.events[i].pdu.auth_events {
                if let Some(&j) = self.index.get(a)
                    && seen.insert(j)
                {
                    todo.push(j);
                }
            }
        }
        let mut idx: Vec<usize> = seen.into_iter().collect();
        idx.sort_unstable();
        idx.into_iter().map(|i| self.events[i].clone()).collect()
    }
}

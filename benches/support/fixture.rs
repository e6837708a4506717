//! A signed room built in memory for the benchmarks: events made, hashed and signed the way
//! the append path makes them, with the prev and auth events each benchmark asks for.

#![allow(dead_code)]

use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId};
use serde_json::{Value, json};
use trellis::keys::ServerKeys;
use trellis::room::pdu::{self, NewContent, Pdu, Placement};
use trellis::room::remote::Incoming;

/// Whether criterion measures (`cargo bench`) rather than smoke-runs each benchmark once
/// (`cargo test --benches`): the fixtures are only built at full size for measuring.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

pub struct Fixture {
    pub keys: ServerKeys,
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub creator: OwnedUserId,
}

/// The events every room starts with, and their IDs.
pub struct Base {
    pub events: Vec<Incoming>,
    pub create: OwnedEventId,
    pub creator_join: OwnedEventId,
    pub power_levels: OwnedEventId,
    pub join_rules: OwnedEventId,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let server = OwnedServerName::try_from("bench.test").expect("server name");
        let keys = ServerKeys::from_seed(server, "bench", &[7; 32]).expect("key");
        let version = RoomVersionId::V10;
        Fixture {
            keys,
            room_id: OwnedRoomId::try_from("!bench:bench.test").expect("room ID"),
            rules: version.rules().expect("rules"),
            version,
            creator: OwnedUserId::try_from("@creator:bench.test").expect("user ID"),
        }
    }

    pub fn user(&self, i: usize) -> OwnedUserId {
        OwnedUserId::try_from(format!("@u{i}:bench.test")).expect("user ID")
    }

    /// Build, hash and sign one event.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &self,
        sender: &OwnedUserId,
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
        let (event_id, json) = pdu::build(
            &self.keys,
            &new,
            &Placement {
                room_id: Some(&self.room_id),
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

    /// Create, the creator's join, power levels (creator 100) and a public join rule.
    pub fn base(&self) -> Base {
        let c = &self.creator;
        let create = self.event(
            c,
            "m.room.create",
            Some(""),
            json!({"creator": c, "room_version": "10"}),
            &[],
            &[],
            1,
        );
        let join = self.event(
            c,
            "m.room.member",
            Some(c.as_str()),
            json!({"membership": "join"}),
            std::slice::from_ref(&create.event_id),
            std::slice::from_ref(&create.event_id),
            2,
        );
        let pl = self.event(
            c,
            "m.room.power_levels",
            Some(""),
            json!({"users": {c.as_str(): 100}, "users_default": 0, "events_default": 0,
                   "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}),
            std::slice::from_ref(&join.event_id),
            &[create.event_id.clone(), join.event_id.clone()],
            3,
        );
        let rules = self.event(
            c,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
            std::slice::from_ref(&pl.event_id),
            &[
                create.event_id.clone(),
                join.event_id.clone(),
                pl.event_id.clone(),
            ],
            4,
        );
        Base {
            create: create.event_id.clone(),
            creator_join: join.event_id.clone(),
            power_levels: pl.event_id.clone(),
            join_rules: rules.event_id.clone(),
            events: vec![create, join, pl, rules],
        }
    }

    /// `count` joins, one per user from `first`, each after the one before, starting after
    /// `prev` at `depth`.
    pub fn joins(
        &self,
        base: &Base,
        first: usize,
        count: usize,
        displayname: &str,
        prev: &OwnedEventId,
        depth: i64,
    ) -> Vec<Incoming> {
        let auth = [
            base.create.clone(),
            base.join_rules.clone(),
            base.power_levels.clone(),
        ];
        let mut out: Vec<Incoming> = Vec::with_capacity(count);
        let mut prev = prev.clone();
        for i in 0..count {
            let user = self.user(first + i);
            let e = self.event(
                &user,
                "m.room.member",
                Some(user.as_str()),
                json!({"membership": "join", "displayname": displayname}),
                std::slice::from_ref(&prev),
                &auth,
                depth + i as i64,
            );
            prev = e.event_id.clone();
            out.push(e);
        }
        out
    }
}

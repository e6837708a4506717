//! Stripped state: a room holding every kind of state the spec recommends showing to
//! invitees and knockers, and the types such a list holds.

use serde_json::{Value, json};

/// A knockable room with every kind of state the spec recommends showing to invitees and
/// knockers, plus state that must not be shown.
pub fn room_with_every_stripped_state() -> Value {
    json!({
        "name": "Club",
        "topic": "what the club is about",
        "room_alias_name": "club",
        "initial_state": [
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}},
            {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://trellis.test/club"}},
            {"type": "m.room.encryption", "state_key": "",
             "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
        ],
    })
}

/// The sorted event types of a stripped state list.
pub fn stripped_types(events: &Value) -> Vec<String> {
    let mut types: Vec<String> = events
        .as_array()
        .expect("stripped state")
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_owned())
        .collect();
    types.sort();
    types
}

/// What the spec recommends an invitee or a knocker see, besides their own member event.
pub const RECOMMENDED: [&str; 8] = [
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.create",
    "m.room.encryption",
    "m.room.join_rules",
    "m.room.member",
    "m.room.name",
    "m.room.topic",
];

//! What a sliding sync request asks for, in domain terms: lists with their ranges and
//! filters, room subscriptions, what each room is sent with, and the extensions.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ruma::OwnedRoomId;

use crate::error::{Error, Result};

/// Largest timeline a room is sent with, whatever the request says.
pub const MAX_TIMELINE: i64 = 200;
/// Most lists, ranges per list, subscriptions and required_state entries one request may
/// hold: what a request costs grows with them.
pub const MAX_ENTRIES: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct SlidingRequest {
    /// The client's `conn_id` ('' when it sent none).
    pub conn_id: String,
    pub pos: Option<String>,
    pub timeout: Duration,
    pub lists: BTreeMap<String, ListSpec>,
    pub subscriptions: BTreeMap<OwnedRoomId, RoomConfig>,
    pub extensions: ExtensionsSpec,
}

#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    /// Inclusive index ranges into the list as sorted.
    pub ranges: Vec<(u64, u64)>,
    pub config: RoomConfig,
    pub filters: ListFilters,
}

/// What a room is sent with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomConfig {
    pub timeline_limit: i64,
    pub required_state: RequiredState,
}

impl RoomConfig {
    /// The config of a room several lists or subscriptions name: the most of each.
    pub fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        for e in &other.required_state.entries {
            if !self.required_state.entries.contains(e) {
                self.required_state.entries.push(e.clone());
            }
        }
    }
}

/// List filters, all of which must hold (`None`: no condition).
#[derive(Debug, Clone, Default)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// Room types to keep (`None` in it: rooms without a type); empty: all.
    pub room_types: Vec<Option<String>>,
    pub not_room_types: Vec<Option<String>>,
    /// Keep only rooms a joined space of these names as its child (`m.space.child` with
    /// `via`); spaces the user is not joined to count as having no children, and subspaces
    /// are not followed, as MSC4186 says.
    pub spaces: Option<Vec<OwnedRoomId>>,
}

impl ListFilters {
    /// Whether the filters need the rooms' types or encryption (read from their state).
    pub fn needs_state(&self) -> bool {
        self.is_encrypted.is_some()
            || !self.room_types.is_empty()
            || !self.not_room_types.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExtensionsSpec {
    pub to_device: Option<ToDeviceSpec>,
    pub e2ee: bool,
    pub account_data: bool,
    pub receipts: bool,
    pub typing: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ToDeviceSpec {
    /// The `next_batch` of the last to-device response: messages up to it are acknowledged.
    pub since: Option<String>,
    pub limit: Option<i64>,
}

/// The `required_state` of a room: (event type, state key) pairs, where the type may be
/// `*` (any type) and the state key `*` (any), `$ME` (the syncing user) or, for
/// `m.room.member`, `$LAZY` (the senders of the timeline sent with it). Entries naming a
/// type exactly decide for that type; `*` entries decide for the other types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredState {
    pub entries: Vec<(String, String)>,
}

pub const WILDCARD: &str = "*";
pub const ME: &str = "$ME";
pub const LAZY: &str = "$LAZY";

impl RequiredState {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the state event (`kind`, `key`) is wanted, for `user`, with `lazy` the senders
    /// of the timeline sent with it.
    pub fn wants(&self, user: &str, lazy: &HashSet<&str>, kind: &str, key: &str) -> bool {
        let key_matches = |(t, k): &(String, String)| match k.as_str() {
            WILDCARD => true,
            ME => key == user,
            LAZY => t == "m.room.member" && (lazy.contains(key) || key == user),
            k => k == key,
        };
        let exact: Vec<&(String, String)> =
            self.entries.iter().filter(|(t, _)| t == kind).collect();
        if !exact.is_empty() {
            return exact.into_iter().any(key_matches);
        }
        self.entries
            .iter()
            .filter(|(t, _)| t == WILDCARD)
            .any(key_matches)
    }

    /// A stable fingerprint (FNV-1a over the sorted entries), stored per room sent so that a
    /// change of the request's required_state is noticed after a restart too.
    pub fn fingerprint(&self) -> u64 {
        let mut entries: Vec<&(String, String)> = self.entries.iter().collect();
        entries.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (t, k) in entries {
            for b in t.bytes().chain([0x1f]).chain(k.bytes()).chain([0x1e]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// Check what the request's shape cannot: ranges run forwards, and nothing is longer than
/// [`MAX_ENTRIES`].
pub fn validate(req: &SlidingRequest) -> Result<()> {
    if req.lists.len() > MAX_ENTRIES || req.subscriptions.len() > MAX_ENTRIES {
        return Err(Error::invalid_param(format!(
            "At most {MAX_ENTRIES} lists and {MAX_ENTRIES} room subscriptions"
        )));
    }
    let configs = req
        .lists
        .values()
        .map(|l| &l.config)
        .chain(req.subscriptions.values());
    for c in configs {
        if c.required_state.entries.len() > MAX_ENTRIES {
            return Err(Error::invalid_param(format!(
                "At most {MAX_ENTRIES} required_state entries"
            )));
        }
        if c.timeline_limit < 0 {
            return Err(Error::invalid_param("timeline_limit must not be negative"));
        }
    }
    for (name, list) in &req.lists {
        if list.ranges.len() > MAX_ENTRIES {
            return Err(Error::invalid_param(format!(
                "List {name:?}: at most {MAX_ENTRIES} ranges"
            )));
        }
        if list
            .filters
            .spaces
            .as_ref()
            .is_some_and(|s| s.len() > MAX_ENTRIES)
        {
            return Err(Error::invalid_param(format!(
                "List {name:?}: at most {MAX_ENTRIES} spaces"
            )));
        }
        if let Some((a, b)) = list.ranges.iter().find(|(a, b)| a > b) {
            return Err(Error::invalid_param(format!(
                "List {name:?}: range [{a}, {b}] ends before it starts"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(entries: &[(&str, &str)]) -> RequiredState {
        RequiredState {
            entries: entries
                .iter()
                .map(|(t, k)| ((*t).to_owned(), (*k).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn required_state_special_values() {
        let me = "@me:x";
        let lazy: HashSet<&str> = ["@talker:x"].into();
        let r = rs(&[
            ("m.room.name", ""),
            ("m.room.member", LAZY),
            ("m.room.member", ME),
        ]);
        assert!(r.wants(me, &lazy, "m.room.name", ""));
        assert!(!r.wants(me, &lazy, "m.room.topic", ""));
        assert!(r.wants(me, &lazy, "m.room.member", "@talker:x"));
        assert!(r.wants(me, &lazy, "m.room.member", me));
        assert!(!r.wants(me, &lazy, "m.room.member", "@silent:x"));

        // Everything, but members only lazily.
        let r = rs(&[("*", "*"), ("m.room.member", LAZY)]);
        assert!(r.wants(me, &lazy, "m.room.topic", ""));
        assert!(r.wants(me, &lazy, "m.call.member", "@a:x"));
        assert!(!r.wants(me, &lazy, "m.room.member", "@silent:x"));
        assert!(r.wants(me, &lazy, "m.room.member", "@talker:x"));

        let r = rs(&[("m.room.member", "*")]);
        assert!(r.wants(me, &lazy, "m.room.member", "@silent:x"));
        assert!(!r.wants(me, &lazy, "m.room.create", ""));

        let r = rs(&[("*", ME)]);
        assert!(r.wants(me, &lazy, "m.call.member", me));
        assert!(!r.wants(me, &lazy, "m.room.name", ""));
    }

    #[test]
    fn fingerprint_ignores_order() {
        let a = rs(&[("a", ""), ("b", "*")]);
        let b = rs(&[("b", "*"), ("a", "")]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), rs(&[("a", "")]).fingerprint());
    }

    #[test]
    fn backwards_ranges_are_refused() {
        let mut req = SlidingRequest::default();
        req.lists.insert(
            "all".into(),
            ListSpec {
                ranges: vec![(5, 2)],
                ..Default::default()
            },
        );
        assert!(validate(&req).is_err());
        req.lists.get_mut("all").unwrap().ranges = vec![(0, 0), (2, 9)];
        assert!(validate(&req).is_ok());
    }
}

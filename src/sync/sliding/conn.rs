//! Connection state: what a connection had been sent as of a position, stored in Postgres
//! with it (`sliding_positions.state`), so that the next request with that `pos`, after a
//! restart or on another process alike, sends only what changed since.

use std::collections::BTreeMap;

use ruma::events::room::member::MembershipState;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Positions kept per connection besides the one the client last used: a client retrying
/// with an older one than that has moved on, and is told to start again.
pub const KEPT_POSITIONS: i64 = 8;
/// Connections per user; the least recently used beyond this are forgotten.
pub const MAX_CONNECTIONS_PER_USER: i64 = 50;
/// A connection not used for this long is forgotten (its `pos` then answers M_UNKNOWN_POS).
pub const IDLE_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// How stale a connection's last-used time may get before a request that writes nothing
/// else marks it again.
pub const TOUCH_EVERY_MS: i64 = 60 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnState {
    /// Stream positions the response was read up to.
    #[serde(rename = "e")]
    pub events: i64,
    #[serde(rename = "ad")]
    pub account_data: i64,
    #[serde(rename = "dl")]
    pub device_lists: i64,
    #[serde(rename = "ty")]
    pub typing: i64,
    #[serde(rename = "rc")]
    pub receipts: i64,
    /// Per room number, what it was last sent with.
    #[serde(rename = "r")]
    pub rooms: BTreeMap<i64, RoomSent>,
    /// Per list, the count last sent.
    #[serde(rename = "l")]
    pub lists: BTreeMap<String, u64>,
}

/// What a room was last sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSent {
    /// The user's membership as last sent: join, invite, knock, leave or ban. Stored as
    /// its plain string (ruma's serde form), as it always was.
    #[serde(rename = "m")]
    pub membership: MembershipState,
    /// The stream position its timeline and state were sent up to (for an invite, the
    /// invite's position).
    #[serde(rename = "u")]
    pub upto: i64,
    /// Fingerprint of the required_state it was sent with.
    #[serde(rename = "c")]
    pub required_state: u64,
    /// Fingerprint of its name, avatar, heroes, counts and DM flag as sent.
    #[serde(rename = "s")]
    pub summary: u64,
    /// The DM flag and unread counts (notifications, highlights) as sent: what may change
    /// without an event in the room (`m.direct`, the user's receipts), so that a room
    /// without new events is read again only when these differ.
    #[serde(rename = "d", default)]
    pub is_dm: bool,
    #[serde(rename = "n", default)]
    pub unread: (i64, i64),
    /// The room's state group its summary was read from (joined rooms): while the room's
    /// state is the same, its name, avatar, heroes and member counts are too, and are not
    /// read or sent again (they are sticky in MSC4186).
    #[serde(rename = "g", default)]
    pub state_group: Option<i64>,
}

/// A membership as the stream of a room treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Joined,
    /// Invited or knocking: stripped state only.
    Invited,
    /// Left, kicked or banned: nothing after the membership event is ever sent.
    Gone,
}

impl Standing {
    pub fn of(membership: &MembershipState) -> Standing {
        match membership {
            MembershipState::Join => Standing::Joined,
            MembershipState::Invite | MembershipState::Knock => Standing::Invited,
            _ => Standing::Gone,
        }
    }
}

/// `pos` as handed out: the decimal number of a stored position.
pub fn parse_pos(pos: &str) -> Result<i64> {
    pos.parse::<i64>()
        .ok()
        .filter(|p| *p > 0 && pos.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(Error::unknown_pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_compactly() {
        let mut s = ConnState {
            events: 42,
            ..Default::default()
        };
        s.rooms.insert(
            7,
            RoomSent {
                membership: MembershipState::Join,
                upto: 40,
                required_state: 1,
                summary: 2,
                is_dm: false,
                unread: (3, 1),
                state_group: Some(9),
            },
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"7\":{\"m\":\"join\""), "{json}");
        let back: ConnState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rooms[&7], s.rooms[&7]);
        // A state stored before the DM flag and counts were kept reads with defaults.
        let old: ConnState = serde_json::from_str(
            r#"{"e":1,"ad":0,"dl":0,"ty":0,"rc":0,"l":{},
                "r":{"7":{"m":"join","u":40,"c":1,"s":2}}}"#,
        )
        .unwrap();
        assert_eq!(old.rooms[&7].unread, (0, 0));
        assert_eq!(old.rooms[&7].membership, MembershipState::Join);
    }

    #[test]
    fn stored_memberships_keep_their_strings() {
        for m in ["join", "invite", "knock", "leave", "ban", "xyz.custom"] {
            let stored = format!(r#"{{"m":"{m}","u":1,"c":0,"s":0}}"#);
            let sent: RoomSent = serde_json::from_str(&stored).unwrap();
            assert_eq!(sent.membership.as_str(), m);
            let again = serde_json::to_string(&sent).unwrap();
            assert!(again.starts_with(&format!(r#"{{"m":"{m}","#)), "{again}");
        }
    }

    #[test]
    fn positions_parse_strictly() {
        assert_eq!(parse_pos("12").unwrap(), 12);
        for bad in ["", "0", "-1", "+3", "1a", " 1", "99999999999999999999"] {
            assert!(parse_pos(bad).is_err(), "{bad}");
        }
    }
}

//! PDUs: parsing stored or received canonical JSON into what auth and state resolution need,
//! and building, hashing and signing our own events per room version (through ruma).

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::keys::ServerKeys;

/// A PDU with the fields the auth rules and the store look at. The signed JSON is kept
/// as-is alongside, never re-serialised from these fields.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// What a redaction names, in either place (ruma's auth rules read this); see
    /// [`Pdu::redacted_event`] for the one the room version means.
    pub redacts: Option<OwnedEventId>,
    /// `redacts` at the top level (room versions before 11) and in the content (11 on).
    redacts_at_top: Option<OwnedEventId>,
    redacts_in_content: Option<OwnedEventId>,
    pub depth: i64,
    pub rejected: bool,
}

#[derive(Deserialize)]
struct PduFields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<EventRef>,
    #[serde(default)]
    auth_events: Vec<EventRef>,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    depth: UInt,
}

/// An event reference: a bare ID (room version 3 and later) or `[id, {hashes}]` (versions 1
/// and 2).
#[derive(Deserialize)]
#[serde(untagged)]
enum EventRef {
    Id(OwnedEventId),
    WithHashes(OwnedEventId, serde::de::IgnoredAny),
}

impl EventRef {
    fn into_id(self) -> OwnedEventId {
        match self {
            EventRef::Id(id) | EventRef::WithHashes(id, _) => id,
        }
    }
}

impl Pdu {
    /// About what this event owns on the heap, for caches bounded by bytes.
    pub fn heap_bytes(&self) -> usize {
        let ids = |v: &[OwnedEventId]| {
            v.iter().map(|e| e.as_str().len()).sum::<usize>() + std::mem::size_of_val(v)
        };
        let opt = |e: &Option<OwnedEventId>| e.as_ref().map_or(0, |e| e.as_str().len());
        self.event_id.as_str().len()
            + self.room_id.as_ref().map_or(0, |r| r.as_str().len())
            + self.sender.as_str().len()
            + self.content.get().len()
            + self.state_key.as_ref().map_or(0, String::len)
            + ids(&self.prev_events)
            + ids(&self.auth_events)
            + opt(&self.redacts)
            + opt(&self.redacts_at_top)
            + opt(&self.redacts_in_content)
    }

    /// Parse canonical JSON whose event ID is already known (stored events, or computed).
    pub fn parse(event_id: OwnedEventId, json: &str) -> Result<Pdu> {
        let f: PduFields = serde_json::from_str(json)
            .map_err(|e| Error::bad_json(format!("malformed PDU {event_id}: {e}")))?;
        // Since room version 11 `redacts` lives in the content.
        #[derive(Deserialize)]
        struct R {
            redacts: Option<OwnedEventId>,
        }
        let redacts_in_content = (f.kind == TimelineEventType::RoomRedaction)
            .then(|| {
                serde_json::from_str::<R>(f.content.get())
                    .ok()
                    .and_then(|r| r.redacts)
            })
            .flatten();
        let redacts = f.redacts.clone().or_else(|| redacts_in_content.clone());
        Ok(Pdu {
            event_id,
            room_id: f.room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events.into_iter().map(EventRef::into_id).collect(),
            auth_events: f.auth_events.into_iter().map(EventRef::into_id).collect(),
            redacts,
            redacts_at_top: f.redacts,
            redacts_in_content,
            depth: i64::try_from(u64::from(f.depth)).unwrap_or(i64::MAX),
            rejected: false,
        })
    }

    /// The event this redaction redacts under the room version's rules: `content.redacts`
    /// from version 11 on, the top-level key before (the other place means nothing there).
    /// `None` for any other event type.
    pub fn redacted_event(&self, rules: &RoomVersionRules) -> Option<&EventId> {
        if self.kind != TimelineEventType::RoomRedaction {
            return None;
        }
        match rules.redaction.content_field_redacts {
            true => self.redacts_in_content.as_deref(),
            false => self.redacts_at_top.as_deref(),
        }
    }

    /// What the event relates to (`content.m.relates_to` with a `rel_type`), if anything.
    pub fn relation(&self) -> Option<Relation> {
        relation_in(&self.content)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// Whether the PDU is an event of `room_id`: its `room_id` field, or, for the create
    /// event of a room version whose room ID is the create event's hash (12 on), its own ID.
    pub fn belongs_to(&self, room_id: &RoomId) -> bool {
        match &self.room_id {
            Some(r) => r == room_id,
            None => {
                self.kind == TimelineEventType::RoomCreate
                    && self.event_id.as_str().strip_prefix('$') == Some(room_id.strip_sigil())
            }
        }
    }
}

/// The create event a room's ID stands for, in room versions where events do not list it
/// among their auth events (12 on): every event is authorised as if they did.
pub fn implied_create_id(rules: &RoomVersionRules, room_id: &RoomId) -> Option<OwnedEventId> {
    if !rules.authorization.room_create_event_id_as_room_id {
        return None;
    }
    EventId::parse(format!("${}", room_id.strip_sigil())).ok()
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// What a local event is made of before it is placed in the graph.
#[derive(Debug, Clone)]
pub struct NewContent {
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub redacts: Option<OwnedEventId>,
}

/// The deepest depth an event can carry: the largest integer canonical JSON allows (the spec
/// caps depth at 2^63-1, but a PDU's integers must stay within ±(2^53-1)).
pub const MAX_DEPTH: i64 = 9_007_199_254_740_991;

/// The depth of an event placed after one at `depth`. Depth comes from other servers, so it
/// is clamped: one remote event at the cap must not make the room unwritable, its
/// successors simply share the cap (the stream position still orders them).
pub fn depth_after(depth: i64) -> i64 {
    depth.saturating_add(1).clamp(1, MAX_DEPTH)
}

/// Everything the graph decides for a new event.
pub struct Placement<'a> {
    /// `None` only for a create event whose room ID will be its hash (room version 12 on).
    pub room_id: Option<&'a RoomId>,
    pub version: &'a RoomVersionId,
    pub rules: &'a RoomVersionRules,
    pub sender: &'a UserId,
    pub prev_events: &'a [OwnedEventId],
    pub auth_events: &'a [OwnedEventId],
    pub depth: i64,
}

/// Build, hash and sign a local event; returns its ID and canonical JSON text.
pub fn build(
    keys: &ServerKeys,
    new: &NewContent,
    at: &Placement<'_>,
) -> Result<(OwnedEventId, String)> {
    let internal = |e: &dyn std::fmt::Display| Error::internal(format!("building event: {e}"));
    let mut obj = CanonicalJsonObject::new();
    let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
    match at.room_id {
        Some(room_id) => {
            obj.insert("room_id".into(), s(room_id.as_str()));
        }
        None if new.kind == TimelineEventType::RoomCreate
            && !at.rules.event_format.require_room_create_room_id => {}
        None => return Err(Error::internal("an event without a room ID")),
    }
    obj.insert("sender".into(), s(at.sender.as_str()));
    obj.insert("type".into(), s(&new.kind.to_string()));
    // Content comes from clients: a float, an integer beyond ±(2^53-1) or nesting past the
    // parser's limit cannot be signed as canonical JSON, which is the client's error.
    let content: CanonicalJsonValue = serde_json::from_str(new.content.get())
        .map_err(|e| Error::bad_json(format!("Event content is not canonical JSON: {e}")))?;
    obj.insert("content".into(), content);
    if let Some(k) = &new.state_key {
        obj.insert("state_key".into(), s(k));
    }
    if let Some(r) = &new.redacts {
        // Before room version 11 `redacts` is a top-level key; since then it is in content,
        // where the caller put it. Sending both is what Synapse does for compatibility.
        obj.insert("redacts".into(), s(r.as_str()));
    }
    let ts = MilliSecondsSinceUnixEpoch::now();
    obj.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ts.0.into()),
    );
    obj.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(
            at.depth
                .clamp(1, MAX_DEPTH)
                .try_into()
                .map_err(|e| internal(&e))?,
        ),
    );
    let ids = |list: &[OwnedEventId]| {
        CanonicalJsonValue::Array(
            list.iter()
                .map(|id| CanonicalJsonValue::String(id.to_string()))
                .collect(),
        )
    };
    obj.insert("prev_events".into(), ids(at.prev_events));
    obj.insert("auth_events".into(), ids(at.auth_events));
    if at.rules.event_id_format != EventIdFormatVersion::V2
        && at.rules.event_id_format != EventIdFormatVersion::V3
    {
        return Err(Error::new(
            ruma::api::error::ErrorKind::UnsupportedRoomVersion,
            format!(
                "Creating events in room version {} is not supported",
                at.version
            ),
        ));
    }
    keys.hash_and_sign_event(&mut obj, &at.rules.redaction)?;
    let hash = ruma::signatures::reference_hash(&obj, at.rules).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => too_large(),
        e => internal(&e),
    })?;
    let event_id = EventId::parse(format!("${hash}")).map_err(|e| internal(&e))?;
    let json = serde_json::to_string(&obj).map_err(|e| internal(&e))?;
    check_size(&json)?;
    Ok((event_id, json))
}

/// The spec's limit on a PDU's size, signatures and all.
const MAX_PDU_BYTES: usize = 65_536;

/// What an event over [`MAX_PDU_BYTES`] answers: the client's content is too large, before
/// anything is stored.
pub fn too_large() -> Error {
    Error::too_large("Event is larger than 65536 bytes")
}

/// The spec's size limit on a PDU, for the events we build.
pub fn check_size(json: &str) -> Result<()> {
    match json.len() > MAX_PDU_BYTES {
        true => Err(too_large()),
        false => Ok(()),
    }
}

/// A relation an event declares: its type (`m.replace`, `m.thread`, `m.reference`, ...) and
/// the event it relates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub rel_type: String,
    pub event_id: OwnedEventId,
}

/// Longest relation type stored: the spec's are short, and a namespaced one has no need of
/// more.
const MAX_REL_TYPE: usize = 255;

/// The relation in an event content, if it names one well (a plain reply, `m.in_reply_to`
/// without `rel_type`, is not a relation that aggregates).
pub fn relation_in(content: &RawValue) -> Option<Relation> {
    #[derive(Deserialize)]
    struct Content<'a> {
        #[serde(rename = "m.relates_to", borrow)]
        relates_to: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct RelatesTo {
        rel_type: Option<String>,
        event_id: Option<OwnedEventId>,
    }
    let raw = serde_json::from_str::<Content<'_>>(content.get())
        .ok()?
        .relates_to?;
    let rel = serde_json::from_str::<RelatesTo>(raw.get()).ok()?;
    match (rel.rel_type, rel.event_id) {
        (Some(rel_type), Some(event_id))
            if !rel_type.is_empty() && rel_type.len() <= MAX_REL_TYPE =>
        {
            Some(Relation { rel_type, event_id })
        }
        _ => None,
    }
}

/// The membership value of an m.room.member content (`leave` when unreadable; a value
/// ruma does not name is kept as it is, as `_Custom`).
pub fn membership_of(content: &serde_json::value::RawValue) -> MembershipState {
    #[derive(serde::Deserialize)]
    struct M {
        membership: MembershipState,
    }
    serde_json::from_str::<M>(content.get())
        .map(|m| m.membership)
        .unwrap_or(MembershipState::Leave)
}

/// The membership of an m.room.member content already parsed (`None` when it has none).
pub fn membership_in(content: &serde_json::Value) -> Option<MembershipState> {
    content["membership"].as_str().map(MembershipState::from)
}

/// The fields of a PDU that the client format keeps (any other field is skipped unbuilt).
#[derive(serde::Deserialize)]
struct ClientFields {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    content: Option<serde_json::Value>,
    sender: Option<serde_json::Value>,
    origin_server_ts: Option<serde_json::Value>,
    state_key: Option<serde_json::Value>,
    room_id: Option<serde_json::Value>,
    redacts: Option<serde_json::Value>,
}

/// The event as clients see it: the PDU's client fields, `event_id`, and `unsigned`.
/// Redacted events are served with the redaction algorithm of the room version applied.
pub fn client_format(
    event_id: &EventId,
    json: &str,
    rules: Option<&RoomVersionRules>,
    redacted_because: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let unreadable =
        |e: serde_json::Error| Error::internal(format!("stored event unreadable: {e}"));
    // Only the fields clients see are built; the rest of the PDU (hashes, signatures, auth
    // and prev events) is skipped while parsing. The canonical form only to redact.
    let fields: ClientFields = match (&redacted_because, rules) {
        (Some(_), Some(rules)) => {
            let canonical: CanonicalJsonObject = serde_json::from_str(json).map_err(unreadable)?;
            let redacted = ruma::canonical_json::redact(canonical, &rules.redaction, None)
                .map_err(|e| Error::internal(format!("redaction failed: {e}")))?;
            serde_json::from_value(serde_json::to_value(redacted).map_err(unreadable)?)
                .map_err(unreadable)?
        }
        _ => serde_json::from_str(json).map_err(unreadable)?,
    };
    let mut out = serde_json::Map::new();
    for (key, v) in [
        ("type", fields.kind),
        ("content", fields.content),
        ("sender", fields.sender),
        ("origin_server_ts", fields.origin_server_ts),
        ("state_key", fields.state_key),
        ("room_id", fields.room_id),
        ("redacts", fields.redacts),
    ] {
        if let Some(v) = v {
            out.insert(key.to_owned(), v);
        }
    }
    // A version 12 create event has no room_id: its own ID is the room's, and clients expect
    // every event to name its room.
    if !out.contains_key("room_id")
        && out.get("type").and_then(|t| t.as_str()) == Some("m.room.create")
    {
        out.insert(
            "room_id".into(),
            serde_json::Value::String(format!("!{}", event_id.as_str().trim_start_matches('$'))),
        );
    }
    out.insert(
        "event_id".into(),
        serde_json::Value::String(event_id.to_string()),
    );
    let mut unsigned = serde_json::Map::new();
    if let Some(b) = redacted_because {
        unsigned.insert("redacted_because".into(), b);
    }
    out.insert("unsigned".into(), serde_json::Value::Object(unsigned));
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_read_as_ruma_values() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(
            membership_of(&raw(r#"{"membership":"join"}"#)),
            MembershipState::Join
        );
        // A value ruma does not name is kept as it was sent, so it is stored unchanged.
        assert_eq!(
            membership_of(&raw(r#"{"membership":"xyz.custom"}"#)).as_str(),
            "xyz.custom"
        );
        assert_eq!(
            membership_of(&raw(r#"{"membership":3}"#)),
            MembershipState::Leave
        );
        assert_eq!(membership_of(&raw("{}")), MembershipState::Leave);
        assert_eq!(
            membership_in(&serde_json::json!({"membership": "ban"})),
            Some(MembershipState::Ban)
        );
        assert_eq!(membership_in(&serde_json::json!({})), None);
    }

    #[test]
    fn relations_are_read_only_when_well_formed() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let thread = relation_in(&raw(
            r#"{"body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}"#,
        ));
        assert_eq!(
            thread,
            Some(Relation {
                rel_type: "m.thread".into(),
                event_id: "$root".try_into().unwrap()
            })
        );
        for bad in [
            r#"{"m.relates_to":{"m.in_reply_to":{"event_id":"$a"}}}"#,
            r#"{"m.relates_to":{"rel_type":"m.thread","event_id":"no-sigil"}}"#,
            r#"{"m.relates_to":{"rel_type":7,"event_id":"$a"}}"#,
            r#"{"m.relates_to":{"rel_type":"","event_id":"$a"}}"#,
            r#"{"m.relates_to":"$a"}"#,
            r#"{"body":"plain"}"#,
        ] {
            assert_eq!(relation_in(&raw(bad)), None, "{bad}");
        }
    }

    #[test]
    fn parses_both_event_reference_formats() {
        let v3 = r#"{"room_id":"!r:x","sender":"@a:x","origin_server_ts":1,"type":"m.room.message",
            "content":{},"prev_events":["$p"],"auth_events":["$a"],"depth":3}"#;
        let p = Pdu::parse("$e".try_into().unwrap(), v3).unwrap();
        assert_eq!(p.prev_events, vec![OwnedEventId::try_from("$p").unwrap()]);
        let v1 = r#"{"room_id":"!r:x","sender":"@a:x","origin_server_ts":1,"type":"m.room.message",
            "content":{},"prev_events":[["$p:x",{"sha256":"abc"}]],"auth_events":[["$a:x",{"sha256":"d"}]],"depth":3}"#;
        let p = Pdu::parse("$e:x".try_into().unwrap(), v1).unwrap();
        assert_eq!(p.prev_events, vec![OwnedEventId::try_from("$p:x").unwrap()]);
        assert_eq!(p.auth_events, vec![OwnedEventId::try_from("$a:x").unwrap()]);
        assert_eq!(p.depth, 3);
        assert!(Pdu::parse("$e".try_into().unwrap(), "{}").is_err());
    }

    #[test]
    fn a_version_12_create_event_belongs_to_the_room_its_hash_names() {
        let create = r#"{"sender":"@a:x","origin_server_ts":1,"type":"m.room.create",
            "state_key":"","content":{"room_version":"12"},"prev_events":[],"auth_events":[],"depth":1}"#;
        let p = Pdu::parse("$abcDEF_-1".try_into().unwrap(), create).unwrap();
        assert!(p.room_id.is_none());
        assert!(p.belongs_to(<&RoomId>::try_from("!abcDEF_-1").unwrap()));
        assert!(!p.belongs_to(<&RoomId>::try_from("!other").unwrap()));
        // Another event must name its room itself.
        let msg = r#"{"sender":"@a:x","origin_server_ts":1,"type":"m.room.message",
            "content":{},"prev_events":[],"auth_events":[],"depth":1}"#;
        let m = Pdu::parse("$abcDEF_-1".try_into().unwrap(), msg).unwrap();
        assert!(!m.belongs_to(<&RoomId>::try_from("!abcDEF_-1").unwrap()));

        let v12 = RoomVersionId::V12.rules().unwrap();
        let v11 = RoomVersionId::V11.rules().unwrap();
        let room = <&RoomId>::try_from("!abcDEF_-1").unwrap();
        assert_eq!(
            implied_create_id(&v12, room).unwrap().as_str(),
            "$abcDEF_-1"
        );
        assert!(implied_create_id(&v11, <&RoomId>::try_from("!r:x").unwrap()).is_none());

        let client = client_format(p.event_id.as_ref(), create, None, None).unwrap();
        assert_eq!(client["room_id"], "!abcDEF_-1");
    }
}

//! Membership templates from make_join, make_leave and make_knock. Another server proposes
//! the event and we sign it: whatever we sign is ours, so a template is checked field by
//! field and rebuilt from the fields a membership event needs, never signed as it came (a
//! template that slipped another type or state key past the signer let a remote server
//! forge state under the joining server's name).

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::room::member::MembershipState;
use ruma::{RoomId, UserId};

/// Most prev_events a template may cite (the spec's own limit on a PDU is 20).
const MAX_PREV_EVENTS: usize = 20;
/// Most auth_events: a membership event needs at most create, power levels, join rules,
/// the member event itself, a third-party invite and the authorising user's membership.
const MAX_AUTH_EVENTS: usize = 10;

/// The membership the template is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Join,
    Leave,
    Knock,
}

impl Kind {
    pub fn membership(self) -> MembershipState {
        match self {
            Kind::Join => MembershipState::Join,
            Kind::Leave => MembershipState::Leave,
            Kind::Knock => MembershipState::Knock,
        }
    }
}

/// The template, checked to be `user`'s `kind` membership event in `room_id`, as an object
/// holding only `room_id`, `sender`, `type`, `state_key`, `prev_events`, `auth_events`,
/// `depth` and a content of `membership` (plus `join_authorised_via_users_server` for a
/// restricted join). The signer adds origin, timestamp, reason and profile. Errors say
/// what was wrong, for the log.
pub fn checked(
    template: CanonicalJsonObject,
    room_id: &RoomId,
    user: &UserId,
    kind: Kind,
) -> Result<CanonicalJsonObject, String> {
    let string = |key: &str| match template.get(key) {
        Some(CanonicalJsonValue::String(s)) => Ok(s.as_str()),
        Some(_) => Err(format!("`{key}` is not a string")),
        None => Err(format!("`{key}` is missing")),
    };
    let expect = |key: &str, want: &str| match string(key)? {
        got if got == want => Ok(()),
        got => Err(format!("`{key}` is {got:?}, expected {want:?}")),
    };
    expect("type", "m.room.member")?;
    expect("room_id", room_id.as_str())?;
    expect("sender", user.as_str())?;
    expect("state_key", user.as_str())?;

    let Some(CanonicalJsonValue::Object(content)) = template.get("content") else {
        return Err("`content` is not an object".into());
    };
    let mut own = CanonicalJsonObject::new();
    match content.get("membership") {
        Some(CanonicalJsonValue::String(m)) if m == kind.membership().as_str() => {}
        None => {}
        Some(other) => {
            return Err(format!(
                "membership {other:?} in a {} template",
                kind.membership()
            ));
        }
    }
    own.insert(
        "membership".into(),
        CanonicalJsonValue::String(kind.membership().as_str().into()),
    );
    if kind == Kind::Join {
        match content.get("join_authorised_via_users_server") {
            None => {}
            Some(CanonicalJsonValue::String(u)) if UserId::parse(u.as_str()).is_ok() => {
                own.insert(
                    "join_authorised_via_users_server".into(),
                    CanonicalJsonValue::String(u.clone()),
                );
            }
            Some(_) => return Err("`join_authorised_via_users_server` is not a user ID".into()),
        }
    }

    let list = |key: &str, max: usize| match template.get(key) {
        Some(CanonicalJsonValue::Array(a)) if a.len() <= max => {
            Ok(CanonicalJsonValue::Array(a.clone()))
        }
        Some(CanonicalJsonValue::Array(a)) => Err(format!("`{key}` lists {} events", a.len())),
        _ => Err(format!("`{key}` is not a list")),
    };
    let prev_events = list("prev_events", MAX_PREV_EVENTS)?;
    let auth_events = list("auth_events", MAX_AUTH_EVENTS)?;
    let depth = match template.get("depth") {
        Some(CanonicalJsonValue::Integer(d)) if i64::from(*d) >= 0 => {
            CanonicalJsonValue::Integer(*d)
        }
        _ => return Err("`depth` is not a non-negative integer".into()),
    };

    let mut out = CanonicalJsonObject::new();
    for key in ["type", "room_id", "sender", "state_key"] {
        out.insert(
            key.into(),
            CanonicalJsonValue::String(string(key)?.to_owned()),
        );
    }
    out.insert("content".into(), CanonicalJsonValue::Object(own));
    out.insert("prev_events".into(), prev_events);
    out.insert("auth_events".into(), auth_events);
    out.insert("depth".into(), depth);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: serde_json::Value) -> CanonicalJsonObject {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({
            "type": "m.room.member", "room_id": "!r:x", "sender": "@u:y", "state_key": "@u:y",
            "content": {"membership": "join"}, "prev_events": ["$p"], "auth_events": ["$a"],
            "depth": 7, "origin": "x", "origin_server_ts": 1,
        })
    }

    fn check(v: serde_json::Value, kind: Kind) -> Result<CanonicalJsonObject, String> {
        let room = <&RoomId>::try_from("!r:x").unwrap();
        let user = <&UserId>::try_from("@u:y").unwrap();
        checked(template(v), room, user, kind)
    }

    #[test]
    fn a_proper_template_keeps_only_what_a_membership_needs() {
        let mut v = good();
        v["content"]["displayname"] = json!("chosen by them");
        v["content"]["join_authorised_via_users_server"] = json!("@admin:x");
        v["redacts"] = json!("$victim");
        v["unsigned"] = json!({"x": 1});
        let out = serde_json::to_value(check(v, Kind::Join).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({
                "type": "m.room.member", "room_id": "!r:x", "sender": "@u:y",
                "state_key": "@u:y", "prev_events": ["$p"], "auth_events": ["$a"], "depth": 7,
                "content": {"membership": "join", "join_authorised_via_users_server": "@admin:x"},
            })
        );
        // A leave or knock template carries no authorising user.
        let mut v = good();
        v["content"] = json!({"membership": "leave", "join_authorised_via_users_server": "@a:x"});
        let out = serde_json::to_value(check(v, Kind::Leave).unwrap()).unwrap();
        assert_eq!(out["content"], json!({"membership": "leave"}));
    }

    #[test]
    fn a_template_for_anything_else_is_refused() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("type", json!("m.room.power_levels")),
            ("state_key", json!("@admin:y")),
            ("state_key", json!("")),
            ("sender", json!("@other:y")),
            ("room_id", json!("!other:x")),
            ("content", json!({"membership": "ban"})),
            ("content", json!("join")),
            ("prev_events", json!("$p")),
            ("prev_events", json!(vec!["$p"; 21])),
            ("auth_events", json!(vec!["$a"; 11])),
            ("depth", json!(-1)),
            ("depth", json!("7")),
        ];
        for (key, value) in cases {
            let mut v = good();
            v[key] = value.clone();
            assert!(check(v, Kind::Join).is_err(), "{key} = {value}");
        }
        for key in ["type", "room_id", "sender", "state_key", "content", "depth"] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(key);
            assert!(check(v, Kind::Join).is_err(), "without {key}");
        }
        let mut v = good();
        v["content"]["join_authorised_via_users_server"] = json!(5);
        assert!(check(v, Kind::Join).is_err());
        // A join template offered for a knock.
        assert!(check(good(), Kind::Knock).is_err());
    }
}

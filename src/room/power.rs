//! Power levels as a room's state sets them, for decisions the auth rules leave to the
//! server: whether a redaction takes effect, who may change the room's directory entry.
//! ruma's `RoomPowerLevels` does the arithmetic; this builds it from stored events.

use std::collections::HashMap;

use ruma::events::StateEventType;
use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;

use super::pdu::Pdu;
use crate::error::{Error, Result};

/// The state keys [`from_state`] reads.
pub fn state_keys() -> [(StateEventType, String); 2] {
    [
        (StateEventType::RoomCreate, String::new()),
        (StateEventType::RoomPowerLevels, String::new()),
    ]
}

/// The power levels of a state holding (at least) the entries of [`state_keys`].
pub fn from_state(
    rules: &RoomVersionRules,
    state: &HashMap<(StateEventType, String), Pdu>,
) -> Result<RoomPowerLevels> {
    let [create_key, power_key] = state_keys();
    let create = state
        .get(&create_key)
        .map(|c| (c.sender.as_ref(), c.content.get()));
    levels(
        rules,
        create,
        state.get(&power_key).map(|p| p.content.get()),
    )
}

/// The power levels from the create event (sender, content JSON) and the power levels
/// content JSON, either absent as in a room without them. A power levels content that does
/// not parse is an error: callers decide what an unreadable state allows.
pub fn levels(
    rules: &RoomVersionRules,
    create: Option<(&UserId, &str)>,
    power_levels: Option<&str>,
) -> Result<RoomPowerLevels> {
    let creators = match create {
        Some((sender, content)) => creators(rules, sender, content),
        None => Vec::new(),
    };
    let source = match power_levels {
        // A redacted content still reads as the full type (only `notifications` goes, which
        // has a default).
        Some(json) => RoomPowerLevelsSource::Original(
            serde_json::from_str::<RoomPowerLevelsEventContent>(json)
                .map_err(|e| Error::internal(format!("stored power levels: {e}")))?,
        ),
        None => RoomPowerLevelsSource::None,
    };
    Ok(RoomPowerLevels::new(source, &rules.authorization, creators))
}

/// Refuse power levels content that is not made of integers where the spec has levels.
/// Room versions before 10 let other servers send levels as strings, so stored events may
/// hold them; a level this server writes for a client is always an integer.
pub fn check_integer_levels(content: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    use serde_json::Value;
    let bad = |key: &str| {
        Err(Error::bad_json(format!(
            "Power level {key} must be an integer"
        )))
    };
    for (key, value) in content {
        match (key.as_str(), value) {
            (
                "ban" | "kick" | "redact" | "invite" | "events_default" | "state_default"
                | "users_default",
                v,
            ) if !v.is_i64() => return bad(key),
            ("events" | "users" | "notifications", Value::Object(levels)) => {
                if let Some((name, _)) = levels.iter().find(|(_, v)| !v.is_i64()) {
                    return bad(&format!("{key}.{name}"));
                }
            }
            ("events" | "users" | "notifications", _) => {
                return Err(Error::bad_json(format!(
                    "Power levels {key} must be an object"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The room's creators: the create event's sender (from room version 11 on; the content's
/// `creator` before) and, where the version has them, its `additional_creators`.
fn creators(rules: &RoomVersionRules, sender: &UserId, content: &str) -> Vec<OwnedUserId> {
    #[derive(Deserialize)]
    struct Create {
        creator: Option<OwnedUserId>,
        #[serde(default)]
        additional_creators: Vec<serde_json::Value>,
    }
    let parsed = serde_json::from_str::<Create>(content).ok();
    let first = match (&parsed, rules.authorization.use_room_create_sender) {
        (
            Some(Create {
                creator: Some(c), ..
            }),
            false,
        ) => c.clone(),
        _ => sender.to_owned(),
    };
    let mut out = vec![first];
    if rules.authorization.additional_room_creators
        && let Some(c) = parsed
    {
        out.extend(
            c.additional_creators
                .iter()
                .filter_map(|u| u.as_str())
                .filter_map(|u| OwnedUserId::try_from(u).ok()),
        );
    }
    out
}

/// Whether `sender` may redact events of others in a state with these power levels: the
/// power to send `m.room.redaction` and the `redact` level. Unreadable power levels allow
/// nothing (logged).
pub fn may_redact_others(
    rules: &RoomVersionRules,
    state: &HashMap<(StateEventType, String), Pdu>,
    sender: &UserId,
) -> bool {
    match from_state(rules, state) {
        Ok(levels) => levels.user_can_redact_event_of_other(sender),
        Err(e) => {
            tracing::warn!(error = %e, "power levels unreadable: no redaction rights");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::RoomVersionId;

    fn user(s: &str) -> OwnedUserId {
        OwnedUserId::try_from(s).unwrap()
    }

    #[test]
    fn redact_level_and_creators_decide() {
        let v10 = RoomVersionId::V10.rules().unwrap();
        let pl = r#"{"users":{"@mod:x":50,"@low:x":10},"redact":50}"#;
        let creator = user("@c:x");
        let l = levels(&v10, Some((&creator, r#"{"creator":"@c:x"}"#)), Some(pl)).unwrap();
        assert!(l.user_can_redact_event_of_other(&user("@mod:x")));
        assert!(!l.user_can_redact_event_of_other(&user("@low:x")));
        assert!(!l.user_can_redact_event_of_other(&user("@c:x")));
        // Version 12: creators have every power, whatever the levels say.
        let v12 = RoomVersionId::V12.rules().unwrap();
        let l = levels(
            &v12,
            Some((&creator, r#"{"additional_creators":["@d:y", 5]}"#)),
            Some(pl),
        )
        .unwrap();
        assert!(l.user_can_redact_event_of_other(&user("@c:x")));
        assert!(l.user_can_redact_event_of_other(&user("@d:y")));
        assert!(!l.user_can_redact_event_of_other(&user("@low:x")));
        // Without power levels the creator has 100 (before version 12), everyone else 0.
        let l = levels(&v10, Some((&creator, r#"{"creator":"@c:x"}"#)), None).unwrap();
        assert!(l.user_can_redact_event_of_other(&user("@c:x")));
        assert!(!l.user_can_redact_event_of_other(&user("@other:x")));
        assert!(levels(&v10, None, Some(r#"{"redact":"lots"}"#)).is_err());
    }
}

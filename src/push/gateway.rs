//! What a push gateway is sent and what its answer means, per the Push Gateway API
//! (`POST /_matrix/push/v1/notify`), as pure functions over ruma's push gateway types.
//!
//! [spec](https://spec.matrix.org/latest/push-gateway-api/)

use ruma::api::push_gateway::send_event_notification::v1::{
    Device, Notification, NotificationCounts, NotificationPriority, PusherData,
};
use ruma::events::TimelineEventType;
use ruma::push::{Action, HighlightTweakValue, HttpPusherData, PushFormat, Tweak};
use ruma::{OwnedRoomAliasId, OwnedRoomId, SecondsSinceUnixEpoch, UInt, UserId};

use crate::room::pdu::Pdu;

/// The pusher a notification goes to, as the gateway knows it.
pub struct Target<'a> {
    pub app_id: &'a str,
    pub pushkey: &'a str,
    /// When the pushkey was last set, ms since the epoch.
    pub pushkey_ts: i64,
    /// The pusher's data (its `url` is not sent).
    pub data: &'a HttpPusherData,
}

/// What the room says about itself and the sender now (full format only).
#[derive(Debug, Default)]
pub struct RoomFacts {
    pub name: Option<String>,
    pub alias: Option<OwnedRoomAliasId>,
    pub sender_display_name: Option<String>,
}

/// The notification of `event` (in `room_id`) for `user` through `target`: `actions` are the
/// push rule's (their tweaks go to the device), `unread` the user's unread count. A pusher
/// with `format: event_id_only` is sent only the event ID, room ID, counts and device.
pub fn notification(
    user: &UserId,
    (event, room_id): (&Pdu, OwnedRoomId),
    room: &RoomFacts,
    actions: &[Action],
    target: &Target<'_>,
    unread: u64,
) -> Notification {
    let tweaks: Vec<Tweak> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SetTweak(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let mut device = Device::new(target.app_id.to_owned(), target.pushkey.to_owned());
    device.pushkey_ts = UInt::try_from(target.pushkey_ts.max(0) / 1000)
        .ok()
        .map(SecondsSinceUnixEpoch);
    device.data = PusherData::from(target.data.clone());
    let high = event.kind == TimelineEventType::RoomEncrypted
        || tweaks.iter().any(|t| {
            matches!(
                t,
                Tweak::Sound(_) | Tweak::Highlight(HighlightTweakValue::Yes)
            )
        });
    device.tweaks = tweaks;

    let mut n = Notification::new(vec![device]);
    n.event_id = Some(event.event_id.clone());
    n.room_id = Some(room_id);
    n.counts = NotificationCounts::new(UInt::try_from(unread).unwrap_or(UInt::MAX), UInt::MIN);
    if target.data.format == Some(PushFormat::EventIdOnly) {
        return n;
    }
    n.event_type = Some(event.kind.clone());
    n.sender = Some(event.sender.clone());
    n.sender_display_name = room.sender_display_name.clone();
    n.room_name = room.name.clone();
    n.room_alias = room.alias.clone();
    n.user_is_target = event.kind == TimelineEventType::RoomMember
        && event.state_key.as_deref() == Some(user.as_str());
    n.prio = if high {
        NotificationPriority::High
    } else {
        NotificationPriority::Low
    };
    n.content = Some(event.content.clone());
    n
}

/// The request body: `{"notification": …}`.
pub fn body(notification: &Notification) -> serde_json::Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        notification: &'a Notification,
    }
    serde_json::to_vec(&Body { notification })
}

/// What a gateway's answer means for the notification.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (or refused for good: a 4xx other than 429 will not change on retry).
    Done,
    /// The gateway answered that the pushkey is not valid: remove the pusher.
    Rejected,
    /// Try again later (429, 5xx, any other status).
    Retry,
}

/// The outcome of an answer with `status` and `body` to a notification for `pushkey`.
pub fn outcome(status: http::StatusCode, body: &[u8], pushkey: &str) -> Outcome {
    use ruma::api::IncomingResponseExt;
    use ruma::api::push_gateway::send_event_notification::v1::Response;
    if status.is_success() {
        let answer = http::Response::builder().status(status).body(body);
        let rejected = answer
            .ok()
            .and_then(|a| Response::try_from_http_response(a).ok())
            .is_some_and(|r| r.rejected.iter().any(|k| k == pushkey));
        return if rejected {
            Outcome::Rejected
        } else {
            Outcome::Done
        };
    }
    if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS {
        return Outcome::Done;
    }
    Outcome::Retry
}

/// The actions stored with a push action, or those a row from before actions were stored
/// stands for: notify, with a highlight if it was one.
pub fn stored_actions(actions: Option<&str>, highlight: bool) -> Vec<Action> {
    if let Some(parsed) = actions.and_then(|a| serde_json::from_str::<Vec<Action>>(a).ok()) {
        return parsed;
    }
    let mut actions = vec![Action::Notify];
    if highlight {
        actions.push(Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(kind: &str, state_key: Option<&str>) -> Pdu {
        let mut ev = json!({
            "room_id": "!r:x", "sender": "@bob:x", "origin_server_ts": 1, "type": kind,
            "content": {"body": "hi", "msgtype": "m.text"},
            "prev_events": [], "auth_events": [], "depth": 1
        });
        if let Some(k) = state_key {
            ev["state_key"] = json!(k);
        }
        Pdu::parse("$e".try_into().unwrap(), &ev.to_string()).unwrap()
    }

    /// What alice's pusher ("app", "key", set at 12,345.678 s) is sent of `ev`, as JSON.
    fn sent(
        ev: &Pdu,
        format: Option<PushFormat>,
        room: &RoomFacts,
        actions: &[Action],
        unread: u64,
    ) -> Value {
        let mut data = HttpPusherData::new("https://push.example/_matrix/push/v1/notify".into());
        data.format = format;
        data.data.insert("extra".into(), json!("kept"));
        let target = Target {
            app_id: "app",
            pushkey: "key",
            pushkey_ts: 12_345_678,
            data: &data,
        };
        let user = UserId::parse("@alice:x").unwrap();
        let room_id = "!r:x".try_into().unwrap();
        let n = notification(&user, (ev, room_id), room, actions, &target, unread);
        serde_json::from_slice::<Value>(&body(&n).unwrap()).unwrap()["notification"].clone()
    }

    #[test]
    fn full_format_carries_the_event_and_the_device() {
        let room = RoomFacts {
            name: Some("Room".into()),
            alias: Some("#room:x".try_into().unwrap()),
            sender_display_name: Some("Bob".into()),
        };
        let actions = stored_actions(
            Some(r#"["notify",{"set_tweak":"sound","value":"default"}]"#),
            false,
        );
        let n = sent(&event("m.room.message", None), None, &room, &actions, 3);
        assert_eq!(n["event_id"], "$e");
        assert_eq!(n["room_id"], "!r:x");
        assert_eq!(n["type"], "m.room.message");
        assert_eq!(n["sender"], "@bob:x");
        assert_eq!(n["sender_display_name"], "Bob");
        assert_eq!(n["room_name"], "Room");
        assert_eq!(n["room_alias"], "#room:x");
        assert_eq!(n["content"]["body"], "hi");
        assert_eq!(n["counts"], json!({"unread": 3}));
        // High is the spec's default, so it is left out; a sound makes it high.
        assert!(n.get("prio").is_none(), "{n}");
        assert!(n.get("user_is_target").is_none(), "{n}");
        let device = &n["devices"][0];
        assert_eq!(device["app_id"], "app");
        assert_eq!(device["pushkey"], "key");
        assert_eq!(device["pushkey_ts"], 12_345);
        assert_eq!(device["data"], json!({"extra": "kept"}));
        assert_eq!(device["tweaks"], json!({"sound": "default"}));
    }

    #[test]
    fn plain_notifications_are_low_and_members_see_themselves_as_target() {
        let actions = stored_actions(None, false);
        let ev = event("m.room.member", Some("@alice:x"));
        let n = sent(&ev, None, &RoomFacts::default(), &actions, 0);
        assert_eq!(n["prio"], "low");
        assert_eq!(n["user_is_target"], true);
        assert!(n.get("counts").is_none(), "zero counts are left out: {n}");
    }

    #[test]
    fn event_id_only_sends_ids_counts_and_device() {
        let actions = stored_actions(None, true);
        let room = RoomFacts {
            name: Some("Room".into()),
            ..RoomFacts::default()
        };
        let ev = event("m.room.message", None);
        let n = sent(&ev, Some(PushFormat::EventIdOnly), &room, &actions, 2);
        let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["counts", "devices", "event_id", "room_id"]);
        assert_eq!(
            n["devices"][0]["data"],
            json!({"format": "event_id_only", "extra": "kept"})
        );
        assert_eq!(n["devices"][0]["tweaks"], json!({"highlight": true}));
    }

    #[test]
    fn answers_decide_the_outcome() {
        use http::StatusCode as S;
        let ok = br#"{"rejected":[]}"#;
        let rejected = br#"{"rejected":["key"]}"#;
        assert_eq!(outcome(S::OK, ok, "key"), Outcome::Done);
        assert_eq!(outcome(S::OK, rejected, "key"), Outcome::Rejected);
        assert_eq!(outcome(S::OK, rejected, "other"), Outcome::Done);
        assert_eq!(outcome(S::OK, b"not json", "key"), Outcome::Done);
        assert_eq!(outcome(S::SERVICE_UNAVAILABLE, ok, "key"), Outcome::Retry);
        assert_eq!(outcome(S::TOO_MANY_REQUESTS, ok, "key"), Outcome::Retry);
        assert_eq!(outcome(S::BAD_REQUEST, ok, "key"), Outcome::Done);
    }
}

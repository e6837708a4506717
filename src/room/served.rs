//! What other servers ask of the rooms we are in: membership event templates (make_join,
//! make_leave, make_knock), the state and auth chain that go with a join, server ACLs.

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::events::room::server_acl::RoomServerAclEventContent;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::Rooms;
use super::append;
use super::pdu::{NewContent, Pdu};
use super::raw;
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};

/// The most events a state-plus-auth-chain answer may hold.
const MAX_AUTH_CHAIN: i64 = 500_000;

impl Rooms {
    /// Whether one of our users is joined: only then do we hold the room's live state and
    /// may answer for it.
    pub async fn is_resident(&self, room: &RoomRow) -> Result<bool> {
        Ok(
            db::federation::server_joined(self.db(), room.room_nid, self.server_name().as_str())
                .await?,
        )
    }

    /// Whether a user of `server` is joined to the room.
    pub async fn server_in_room(&self, room: &RoomRow, server: &ServerName) -> Result<bool> {
        Ok(db::federation::server_joined(self.db(), room.room_nid, server.as_str()).await?)
    }

    /// Whether the room's server ACL lets `server` take part.
    pub async fn server_allowed(&self, room: &RoomRow, server: &ServerName) -> Result<bool> {
        let Some(group) = room.state_group else {
            return Ok(true);
        };
        let key = (ruma::events::StateEventType::RoomServerAcl, String::new());
        let state = self
            .state_entries(group, std::slice::from_ref(&key))
            .await?;
        let Some(acl) = state.get(&key) else {
            return Ok(true);
        };
        Ok(acl_allows(acl.content.get(), server))
    }

    /// 403 unless `server` passes the room's ACL.
    pub async fn check_server_acl(&self, room: &RoomRow, server: &ServerName) -> Result<()> {
        if self.server_allowed(room, server).await? {
            Ok(())
        } else {
            Err(Error::forbidden(
                "Server is banned from this room by its ACL",
            ))
        }
    }

    /// A membership event for `user` of another server to sign and send back: make_join,
    /// make_leave, make_knock. Refused (403) when the auth rules would refuse it, so the
    /// other server learns why before it signs anything.
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: MembershipState,
        supported: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        let room = self.room(room_id).await?;
        if !self.is_resident(&room).await? {
            return Err(Error::not_found("This server is not in that room"));
        }
        let rules = room.rules()?;
        let version = room.room_version.clone();
        if !supported.contains(&version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
                ),
                "Your server does not support this room's version",
            ));
        }
        let mut content = serde_json::Map::new();
        if membership == MembershipState::Join {
            content = self.join_content(&room, user).await?;
        }
        content.insert("membership".into(), membership.as_str().into());
        let new = NewContent {
            kind: TimelineEventType::RoomMember,
            state_key: Some(user.to_string()),
            content: raw(&Value::Object(content))?,
            redacts: None,
        };
        let p = append::place(self.db(), &self.state_cache, &room, user, &new).await?;
        let template = json!({
            "room_id": room_id,
            "sender": user,
            "type": "m.room.member",
            "state_key": user,
            "content": serde_json::from_str::<Value>(new.content.get()).map_err(|e| Error::internal(e.to_string()))?,
            "origin": self.server_name(),
            "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
            "depth": p.depth,
            "prev_events": p.prev_ids,
            "auth_events": p.auth_ids,
        });
        let text = template.to_string();
        let probe = Pdu::parse(
            OwnedEventId::try_from("$template").map_err(|e| Error::internal(e.to_string()))?,
            &text,
        )?;
        append::authorise(&rules, &probe, &p.auth_state).map_err(Error::forbidden)?;
        let raw = RawValue::from_string(text).map_err(|e| Error::internal(e.to_string()))?;
        Ok((version, raw))
    }

    /// The state before a stored event and the auth chain of that state and of the event,
    /// as PDUs (send_join's answer).
    pub async fn state_and_auth_chain(
        &self,
        event_id: &EventId,
    ) -> Result<(Vec<Box<RawValue>>, Vec<Box<RawValue>>)> {
        let db = self.db();
        let ev = db::events::by_id(db, event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let state_nids: Vec<i64> = match ev.state_before {
            Some(g) => db::state::load(db, g)
                .await?
                .into_iter()
                .map(|r| r.1)
                .collect(),
            None => Vec::new(),
        };
        let mut roots = state_nids.clone();
        roots.push(ev.event_nid);
        let sets = vec![0; roots.len()];
        let chain: Vec<i64> = db::events::auth_chains(db, &sets, &roots, MAX_AUTH_CHAIN)
            .await?
            .into_iter()
            .map(|r| r.1)
            .collect();
        let to_raw = |rows: Vec<db::events::StoredEvent>| -> Result<Vec<Box<RawValue>>> {
            rows.into_iter()
                .map(|r| RawValue::from_string(r.json).map_err(|e| Error::internal(e.to_string())))
                .collect()
        };
        let state = to_raw(db::events::by_nids(db, &state_nids).await?)?;
        let auth_chain = to_raw(db::events::by_nids(db, &chain).await?)?;
        Ok((state, auth_chain))
    }

    /// Servers with joined members (ours included), for send_join's `servers_in_room`.
    pub async fn servers_in(&self, room: &RoomRow) -> Result<Vec<String>> {
        let mut servers = db::federation::servers_in_room(self.db(), room.room_nid, "").await?;
        servers.sort();
        Ok(servers)
    }
}

impl Rooms {
    /// Who set `user`'s current membership (the inviter, for an invite).
    pub async fn membership_sender(
        &self,
        room: &RoomRow,
        user: &UserId,
    ) -> Result<Option<ruma::OwnedUserId>> {
        Ok(
            db::rooms::membership_sender(self.db(), room.room_nid, user.as_str())
                .await?
                .and_then(|s| ruma::OwnedUserId::try_from(s).ok()),
        )
    }
}

/// Whether an `m.room.server_acl` content (JSON) admits `server`. Server names are matched
/// without regard to case (DNS names are case-insensitive; ruma's globs match that way). An
/// unreadable ACL denies nobody, as Synapse treats it.
pub(super) fn acl_allows(content: &str, server: &ServerName) -> bool {
    serde_json::from_str::<RoomServerAclEventContent>(content)
        .ok()
        .is_none_or(|acl| acl.is_allowed(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_server_names_match_without_regard_to_case() {
        let acl =
            r#"{"allow":["*"],"deny":["Evil.Example","*.BAD.org"],"allow_ip_literals":false}"#;
        let name = |s: &str| ruma::OwnedServerName::try_from(s).unwrap();
        for denied in [
            "evil.example",
            "EVIL.EXAMPLE",
            "evil.example:8448",
            "x.bad.ORG",
            "1.2.3.4",
        ] {
            assert!(!acl_allows(acl, &name(denied)), "{denied}");
        }
        assert!(acl_allows(acl, &name("good.example")));
        let allow_only = r#"{"allow":["Good.Example"]}"#;
        assert!(acl_allows(allow_only, &name("GOOD.example")));
        assert!(!acl_allows(allow_only, &name("other.example")));
        // Unreadable: nobody denied.
        assert!(acl_allows(r#"{"deny":"all"}"#, &name("evil.example")));
    }
}

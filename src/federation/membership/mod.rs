//! Membership across servers, both sides: joining and leaving rooms hosted elsewhere
//! (make_join/send_join, make_leave/send_leave), knocking (make_knock/send_knock), invites
//! to users of other servers, and answering those requests for rooms we are in.

mod invite;
mod join;
mod knock;
mod leave;
mod requests;
mod resident;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::value::RawValue;

use super::Federation;
use crate::db;
use crate::error::{Error, Result};
use crate::federation::template::{self, Kind};
use crate::room::create::creatable_versions;
use crate::room::membership::JoinContent;

impl Federation {
    /// Fill in and sign a membership template from make_join / make_leave.
    fn sign_template(
        &self,
        version: &RoomVersionId,
        (room_id, user): (&RoomId, &UserId),
        template: &RawValue,
        kind: Kind,
        reason: Option<&str>,
        join: Option<&JoinContent>,
    ) -> Result<(ruma::OwnedEventId, CanonicalJsonObject)> {
        if !creatable_versions().contains(version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
                ),
                "This server does not support the room's version",
            ));
        }
        let rules = db::rooms::rules_of(version)?;
        let proposed: CanonicalJsonObject = serde_json::from_str(template.get())
            .map_err(|e| Error::Upstream(format!("invalid membership template: {e}")))?;
        let mut obj = template::checked(proposed, room_id, user, kind).map_err(|e| {
            tracing::warn!(%room_id, %user, kind = %kind.membership(), error = %e, "refused a membership template");
            Error::Upstream(format!("membership template refused: {e}"))
        })?;
        let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
        obj.insert("origin".into(), s(self.client_server_name().as_str()));
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()),
        );
        if let Some(CanonicalJsonValue::Object(content)) = obj.get_mut("content") {
            if let Some(r) = reason {
                content.insert("reason".into(), s(r));
            }
            if let Some(join) = join.filter(|_| kind == Kind::Join) {
                // The template's own keys (membership, a restricted join's voucher) stay.
                for (key, value) in join.keys() {
                    if content.contains_key(key) {
                        continue;
                    }
                    let value = serde_json::from_value::<CanonicalJsonValue>(value.clone())
                        .map_err(|e| Error::bad_json(format!("Join content: {e}")))?;
                    content.insert(key.clone(), value);
                }
            }
        }
        self.server_keys
            .hash_and_sign_event(&mut obj, &rules.redaction)?;
        let hash = ruma::signatures::reference_hash(&obj, &rules)
            .map_err(|e| Error::internal(e.to_string()))?;
        let event_id =
            EventId::parse(format!("${hash}")).map_err(|e| Error::internal(e.to_string()))?;
        Ok((event_id, obj))
    }

    fn client_server_name(&self) -> &ServerName {
        self.server_keys.server_name()
    }
}

fn dedup_keep_order(servers: &mut Vec<OwnedServerName>) {
    let mut seen = std::collections::HashSet::new();
    servers.retain(|s| seen.insert(s.clone()));
}

//! Room summaries (MSC3266, `GET /room_summary/{roomIdOrAlias}`): what a client shows of a
//! room before joining it (a link preview, an invite). From our own state when one of our
//! users is in the room, else from another server's `/hierarchy` answer (cached as for
//! space walks). Who may see a summary is who may see the room in a hierarchy.

use std::time::{Duration, Instant};

use ruma::events::room::member::MembershipState;
use ruma::room::RoomSummary;
use ruma::{OwnedServerName, RoomOrAliasId, UserId};

use super::Federation;
use super::hierarchy_remote::{Answer, AskBudget};
use crate::error::{Error, Result};
use crate::room::Rooms;
use crate::room::hierarchy::{Viewer, may_see};

/// How long a summary may wait on other servers.
const ASKING_BUDGET: Duration = Duration::from_secs(10);

impl Federation {
    /// The summary of a room for `viewer` (none: a client without an access token), with
    /// the viewer's membership in it. A room the viewer may not see answers as an unknown
    /// one, so summaries cannot be used to probe for private rooms.
    #[tracing::instrument(name = "room_summary", skip_all, fields(%target))]
    pub async fn room_summary(
        &self,
        rooms: &Rooms,
        viewer: Option<&UserId>,
        target: &RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<(RoomSummary, Option<MembershipState>)> {
        let not_found = || Error::not_found("Room not found, or not one you may see");
        let (room_id, mut servers) = self.room_and_servers(rooms, target, via).await?;
        let membership = match (viewer, rooms.room(&room_id).await) {
            (Some(user), Ok(room)) => rooms.membership(&room, user).await?,
            _ => None,
        };
        let as_viewer = viewer.map_or(Viewer::Anonymous, Viewer::User);
        if let Some(local) = rooms
            .space_rooms(std::slice::from_ref(&room_id), as_viewer, false, false)
            .await?
            .remove(&room_id)
        {
            return match local.accessible {
                true => Ok((local.summary, membership)),
                false => Err(not_found()),
            };
        }
        if let Some(s) = room_id.server_name() {
            servers.push(s.to_owned());
        }
        let mut budget = AskBudget {
            left: 1,
            deadline: Instant::now() + ASKING_BUDGET,
        };
        let Answer::Known(remote) = self
            .remote_space(&room_id, &servers, false, &mut budget)
            .await
        else {
            return Err(not_found());
        };
        let visible = match viewer {
            Some(user) => rooms.user_may_see(user, &remote.summary).await?,
            None => may_see(&remote.summary, false, |_| false),
        };
        match visible {
            true => Ok((remote.summary.clone(), membership)),
            false => Err(not_found()),
        }
    }
}

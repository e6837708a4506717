//! The rooms a user is not joined to in a sync: invites, knocks, and the rooms they left or
//! were banned from, each with the little the user may still see of it.

use std::collections::HashSet;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, UserId};

use super::token::SyncToken;
use super::{JoinedRoomSync, MAX_TIMELINE, Sync, SyncRequest, SyncResponse, room_row};
use crate::db;
use crate::error::Result;
use crate::room::timeline::TopoToken;

impl Sync {
    /// Invites, knocks and left rooms whose membership changed since the token (left rooms
    /// on an initial sync only when the filter asks for them, `include_leave`).
    pub(super) async fn add_memberships(
        &self,
        user: &UserId,
        req: &SyncRequest,
        rooms: &[db::sync::UserRoom],
        since: Option<SyncToken>,
        out: &mut SyncResponse,
    ) -> Result<()> {
        let after = since.map_or(0, |s| s.events);
        let with_leaves = since.is_some() || req.include_leave;
        let from_ignored = self
            .invites_from_ignored(rooms, after, &req.timeline_select.ignored)
            .await?;
        for r in rooms.iter().filter(|r| r.member_stream > after) {
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            match r.membership {
                // Invites from ignored users are never shown (spec, "Ignoring Users").
                MembershipState::Invite if from_ignored.contains(&r.member_event_nid) => {}
                MembershipState::Invite => {
                    out.invite.insert(room_id, self.invite_state(r).await?);
                }
                MembershipState::Knock => {
                    out.knock.insert(room_id, self.invite_state(r).await?);
                }
                MembershipState::Leave | MembershipState::Ban if !r.forgotten && with_leaves => {
                    let left = self
                        .left_room(user, req, r, since.map(|s| s.events))
                        .await?;
                    out.leave.insert(room_id, left);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The membership events of the invites in `rooms` since `after` that an ignored user
    /// sent: one read for all of them, none when nobody is ignored.
    async fn invites_from_ignored(
        &self,
        rooms: &[db::sync::UserRoom],
        after: i64,
        ignored: &[String],
    ) -> Result<HashSet<i64>> {
        if ignored.is_empty() {
            return Ok(HashSet::new());
        }
        let invites: Vec<i64> = rooms
            .iter()
            .filter(|r| r.member_stream > after && r.membership == MembershipState::Invite)
            .map(|r| r.member_event_nid)
            .collect();
        if invites.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(db::events::by_nids(self.rooms.reads(), &invites)
            .await?
            .into_iter()
            .filter(|e| ignored.contains(&e.sender))
            .map(|e| e.event_nid)
            .collect())
    }

    /// A room the user left (or was banned from): its timeline up to and including the
    /// event that removed them, since the token (`after`) or, on an initial sync, its newest
    /// events, as the user could see them; with the state before that timeline when the
    /// timeline does not cover everything since the token. Nothing after the leave is shown.
    async fn left_room(
        &self,
        user: &UserId,
        req: &SyncRequest,
        r: &db::sync::UserRoom,
        after: Option<i64>,
    ) -> Result<JoinedRoomSync> {
        let db = self.rooms.reads();
        let limit = req.timeline_limit.clamp(1, MAX_TIMELINE);
        let mut events = db::sync::recent_events(
            db,
            &[r.room_nid],
            after.unwrap_or(i64::MIN),
            r.member_stream,
            limit,
            &req.timeline_select,
        )
        .await?;
        let mut limited = events.len() as i64 > limit;
        events.truncate(limit as usize);
        events.reverse();
        if after.is_none()
            && events
                .first()
                .is_some_and(|e| e.event_type != "m.room.create")
        {
            limited = true;
        }
        let row = room_row(r);
        // The event that removed the user is theirs to see whatever the history visibility
        // (they are no longer a member once it applies); it is the newest read. A leave
        // outside the graph (an invite rejected out of band) is read on its own.
        let removal = match events.last() {
            Some(e) if e.event_nid == r.member_event_nid => events.pop(),
            _ if after.is_none_or(|a| r.member_stream > a) => {
                db::events::by_nids(db, &[r.member_event_nid])
                    .await?
                    .into_iter()
                    .find(|e| e.outlier)
            }
            _ => None,
        };
        let mut events = self.rooms.filter_visible(&row, user, events).await?;
        events.extend(removal);
        let state = match events.first().and_then(|e| e.state_before) {
            Some(group) if after.is_none() || limited => self
                .states_of_groups(&[group])
                .await?
                .remove(&group)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
            _ => Vec::new(),
        };
        let prev_batch = events.first().map(|e| TopoToken::of(e).to_string());
        Ok(JoinedRoomSync {
            timeline: self.rooms.to_client(&row, &events).await?,
            limited,
            prev_batch,
            state: self.rooms.to_client(&row, &state).await?,
            ..Default::default()
        })
    }
}

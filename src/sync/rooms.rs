//! The per-room parts of /sync: which rooms were newly joined, their ephemeral events,
//! summaries and unread counts, lazy-loaded members and invite state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::UserId;
use ruma::events::room::member::MembershipState;
use serde_json::Value;

use super::token::SyncToken;
use super::{MAX_HEROES, Parts, RoomSummary, Sync, SyncResponse};
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::ephemeral::{EphemeralPositions, EphemeralRead, EphemeralSync};
use crate::error::Result;
use crate::room::membership::INVITE_STATE_TYPES;

impl Sync {
    /// The joined rooms whose membership changed after `after` and was not `join` then.
    pub(super) async fn newly_joined(
        &self,
        user: &UserId,
        joined: &[&db::sync::UserRoom],
        after: i64,
    ) -> Result<HashSet<i64>> {
        let changed: Vec<i64> = joined
            .iter()
            .filter(|r| r.member_stream > after)
            .map(|r| r.room_nid)
            .collect();
        if changed.is_empty() {
            return Ok(Default::default());
        }
        let was_joined: HashSet<i64> =
            db::sync::memberships_at(self.rooms.reads(), user.as_str(), &changed, after)
                .await?
                .into_iter()
                .filter(|(_, m)| *m == MembershipState::Join)
                .map(|(nid, _)| nid)
                .collect();
        Ok(changed
            .into_iter()
            .filter(|nid| !was_joined.contains(nid))
            .collect())
    }

    /// Typing, receipts and presence for the joined rooms, read before the timelines so
    /// nothing that lands in between is skipped by the next token. After a wake-up, receipts
    /// and presence are read only when the news names them; otherwise their positions stay
    /// where the previous read (`carry`) left them.
    pub(super) async fn ephemeral_section(
        &self,
        user: &UserId,
        joined: &[&db::sync::UserRoom],
        since: Option<SyncToken>,
        parts: Parts,
        carry: Option<SyncToken>,
    ) -> Result<EphemeralSync> {
        let rooms: Vec<(i64, &ruma::RoomId)> = joined
            .iter()
            .filter_map(|r| {
                <&ruma::RoomId>::try_from(r.room_id.as_str())
                    .ok()
                    .map(|id| (r.room_nid, id))
            })
            .collect();
        let positions = |s: SyncToken| EphemeralPositions {
            typing: s.typing,
            receipts: s.receipts,
            presence: s.presence,
        };
        let read = EphemeralRead {
            receipts: parts.receipts,
            presence: parts.presence,
            carry: carry.map(positions).unwrap_or_default(),
        };
        self.ephemeral
            .sync_section(user, &rooms, since.map(positions), read)
            .await
    }

    /// Fill in the unread counts of every joined room in the response, and the summary of
    /// those in `summarise`: three queries for all rooms.
    pub(super) async fn add_summaries(
        &self,
        user: &UserId,
        rooms: &[db::sync::UserRoom],
        summarise: &HashSet<i64>,
        out: &mut SyncResponse,
    ) -> Result<()> {
        let nid_of: HashMap<&str, i64> = rooms
            .iter()
            .map(|r| (r.room_id.as_str(), r.room_nid))
            .collect();
        let nids: Vec<i64> = out
            .join
            .keys()
            .filter_map(|id| nid_of.get(id.as_str()).copied())
            .collect();
        if nids.is_empty() {
            return Ok(());
        }
        let db = self.rooms.reads();
        let mut summaries: HashMap<i64, RoomSummary> = HashMap::new();
        let summarised: Vec<i64> = nids
            .iter()
            .copied()
            .filter(|n| summarise.contains(n))
            .collect();
        if !summarised.is_empty() {
            for (nid, joined, invited) in db::sync::member_counts(db, &summarised).await? {
                let s = summaries.entry(nid).or_default();
                s.joined = joined;
                s.invited = invited;
            }
            for (nid, hero) in db::sync::heroes(db, &summarised, user.as_str(), MAX_HEROES).await? {
                summaries.entry(nid).or_default().heroes.push(hero);
            }
        }
        let mut unread: HashMap<i64, BTreeMap<String, (i64, i64)>> = HashMap::new();
        for (nid, thread, n, h) in db::push::unread_counts(db, user.as_str(), &nids).await? {
            unread.entry(nid).or_default().insert(thread, (n, h));
        }
        for (room_id, joined) in out.join.iter_mut() {
            if let Some(nid) = nid_of.get(room_id.as_str()) {
                if summarise.contains(nid) {
                    joined.summary = Some(summaries.remove(nid).unwrap_or_default());
                }
                joined.unread = unread.remove(nid).unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Lazy-loaded membership: drop member events of users who did not send anything in the
    /// timeline, and add those senders' member events (as of the timeline's start) that the
    /// state section lacks. Redundant members are sent again rather than tracked per device.
    pub(super) async fn lazy_members(
        &self,
        room: &RoomRow,
        user: &UserId,
        timeline: &[StoredEvent],
        state: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        let mut wanted: BTreeSet<String> = timeline.iter().map(|e| e.sender.clone()).collect();
        wanted.insert(user.to_string());
        let state_key = |e: &StoredEvent| {
            serde_json::from_str::<Value>(&e.json)
                .ok()
                .and_then(|v| v["state_key"].as_str().map(str::to_owned))
        };
        let mut kept = Vec::with_capacity(state.len());
        let mut have = BTreeSet::new();
        for e in state {
            if e.event_type != "m.room.member" {
                kept.push(e);
            } else if let Some(k) = state_key(&e)
                && wanted.contains(&k)
            {
                have.insert(k);
                kept.push(e);
            }
        }
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|u| !have.contains(*u))
            .map(String::as_str)
            .collect();
        let group = timeline
            .first()
            .and_then(|e| e.state_before)
            .or(room.state_group);
        if let (false, Some(group)) = (missing.is_empty(), group) {
            let keys: Vec<(&str, &str)> = missing.iter().map(|u| ("m.room.member", *u)).collect();
            let nids: Vec<i64> = db::state::load_keys(self.rooms.reads(), group, &keys)
                .await?
                .into_iter()
                .map(|row| row.1)
                .collect();
            kept.extend(db::events::by_nids(self.rooms.reads(), &nids).await?);
        }
        Ok(kept)
    }

    /// Stripped state for an invite: the invite itself and the room's public basics.
    pub(super) async fn invite_state(&self, r: &db::sync::UserRoom) -> Result<Vec<Value>> {
        if let Some(json) = &r.invite_state
            && let Ok(events) = serde_json::from_str::<Vec<Value>>(json)
        {
            return Ok(events);
        }
        let db = self.rooms.reads();
        let mut nids = vec![r.member_event_nid];
        if let Some(group) = r.state_group {
            let keys: Vec<(&str, &str)> = INVITE_STATE_TYPES.iter().map(|t| (*t, "")).collect();
            nids.extend(
                db::state::load_keys(db, group, &keys)
                    .await?
                    .into_iter()
                    .map(|row| row.1),
            );
        }
        let events = db::events::by_nids(db, &nids).await?;
        Ok(events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.json).ok())
            .map(|v| {
                serde_json::json!({
                    "type": v["type"], "state_key": v["state_key"], "sender": v["sender"], "content": v["content"]
                })
            })
            .collect())
    }
}

//! The per-room parts of /sync: which rooms were newly joined, their ephemeral events,
//! summaries and unread counts, lazy-loaded members and invite state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::UserId;
use ruma::events::StateEventType;
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
            // Heroes name a room that has no name of its own: none for a room with a name
            // or a canonical alias, as the spec says (Synapse: a non-empty one).
            let named = self.named_rooms(rooms, &summarised).await?;
            let unnamed: Vec<i64> = summarised
                .iter()
                .copied()
                .filter(|n| !named.contains(n))
                .collect();
            if !unnamed.is_empty() {
                for (nid, hero) in db::sync::heroes(db, &unnamed, user.as_str(), MAX_HEROES).await?
                {
                    summaries.entry(nid).or_default().heroes.push(hero);
                }
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

    /// Which of the rooms have a non-empty name or canonical alias now: one read of their
    /// current state groups for both keys (none for groups the state cache holds).
    async fn named_rooms(
        &self,
        rooms: &[db::sync::UserRoom],
        nids: &[i64],
    ) -> Result<HashSet<i64>> {
        let group_of: HashMap<i64, i64> = rooms
            .iter()
            .filter(|r| nids.contains(&r.room_nid))
            .filter_map(|r| r.state_group.map(|g| (r.room_nid, g)))
            .collect();
        let groups: Vec<i64> = group_of
            .values()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let name_key = (StateEventType::RoomName, String::new());
        let alias_key = (StateEventType::RoomCanonicalAlias, String::new());
        let entries = self
            .rooms
            .state_entries_many(&groups, &[name_key.clone(), alias_key.clone()])
            .await?;
        let non_empty = |pdu: Option<&crate::room::pdu::Pdu>, field: &str| {
            pdu.and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
                .is_some_and(|c| c[field].as_str().is_some_and(|v| !v.is_empty()))
        };
        Ok(group_of
            .into_iter()
            .filter(|(_, g)| {
                entries.get(g).is_some_and(|state| {
                    non_empty(state.get(&name_key), "name")
                        || non_empty(state.get(&alias_key), "alias")
                })
            })
            .map(|(nid, _)| nid)
            .collect())
    }

    /// Lazy-loaded membership, as Synapse does it: the member events of the timeline's
    /// senders as of its start (on a full state, the user's own too), the state's other
    /// events as they are (a full state keeps no other member events; an incremental one
    /// keeps every change of its gap, a silent joiner's or leaver's included), and, unless
    /// the filter asks for redundant members, none the device has been sent already.
    pub(super) async fn lazy_members(
        &self,
        room: &RoomRow,
        user: &UserId,
        req: &super::SyncRequest,
        timeline: &[StoredEvent],
        state: Vec<StoredEvent>,
        full: bool,
    ) -> Result<Vec<StoredEvent>> {
        let mut wanted: BTreeSet<String> = timeline.iter().map(|e| e.sender.clone()).collect();
        if full {
            wanted.insert(user.to_string());
        }
        let mut kept = Vec::with_capacity(state.len());
        let mut have = BTreeSet::new();
        for e in state {
            if e.event_type != "m.room.member" {
                kept.push(e);
            } else if let Some(k) = state_key(&e)
                && (!full || wanted.contains(&k))
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
        let member = |e: &StoredEvent| {
            (e.event_type == "m.room.member")
                .then(|| state_key(e))
                .flatten()
        };
        let (members, mut others): (Vec<StoredEvent>, Vec<StoredEvent>) =
            kept.into_iter().partition(|e| member(e).is_some());
        let keyed: Vec<(String, StoredEvent)> = members
            .into_iter()
            .filter_map(|e| member(&e).map(|k| (k, e)))
            .collect();
        let members: Vec<StoredEvent> = if req.include_redundant_members {
            keyed.into_iter().map(|(_, e)| e).collect()
        } else {
            self.lazy_sent
                .unsent(
                    user,
                    &req.device_id,
                    keyed
                        .iter()
                        .map(|(k, e)| (room.room_nid, k.as_str(), e.event_id.as_str(), e)),
                )
                .into_iter()
                .cloned()
                .collect()
        };
        // What the device has now: these members, and those the timeline carries.
        let timeline_members: Vec<(String, &StoredEvent)> = timeline
            .iter()
            .filter_map(|e| member(e).map(|k| (k, e)))
            .collect();
        let sent: Vec<(String, &StoredEvent)> = members
            .iter()
            .filter_map(|e| member(e).map(|k| (k, e)))
            .collect();
        self.lazy_sent.record(
            user,
            &req.device_id,
            sent.iter()
                .chain(&timeline_members)
                .map(|(k, e)| (room.room_nid, k.as_str(), e.event_id.as_str())),
        );
        others.extend(members);
        Ok(others)
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

/// The state key of a stored state event.
fn state_key(e: &StoredEvent) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key {
        state_key: Option<String>,
    }
    serde_json::from_str::<Key>(&e.json).ok()?.state_key
}

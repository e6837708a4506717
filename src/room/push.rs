//! Push rules at store time: for an event about to be stored, which local members it
//! notifies (and highlights), decided by each one's push rules with ruma's evaluator. The
//! answer is written with the event, so /sync counts unread notifications with one query.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::events::StateEventType;
use ruma::push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset};
use ruma::room_version_rules::{RoomPowerLevelsRules, RoomVersionRules};
use ruma::serde::Raw;
use ruma::{Int, OwnedUserId, ServerName, UInt};
use serde_json::Value;
use sqlx::PgPool;

use super::pdu::{self, Pdu};
use super::state_cache::{StateCache, load_state_events};
use crate::account::PushRulesVersion;
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};

/// Who an event notifies, and the thread it belongs to.
pub struct Notified {
    pub thread_id: String,
    pub users: Vec<NotifiedUser>,
}

/// One local user an event notifies.
pub struct NotifiedUser {
    pub user_id: String,
    pub highlight: bool,
    /// The actions of the push rule that matched, as a JSON array (push gateway tweaks,
    /// /notifications).
    pub actions: String,
}

impl Notified {
    /// The push action rows for the event stored as `event_nid` at `stream_ordering`.
    pub fn rows(
        &self,
        event_nid: i64,
        stream_ordering: i64,
    ) -> impl Iterator<Item = db::append::PushRow<'_>> {
        self.users.iter().map(move |u| db::append::PushRow {
            event_nid,
            user_id: &u.user_id,
            stream_ordering,
            highlight: u.highlight,
            thread_id: &self.thread_id,
            actions: &u.actions,
        })
    }
}

#[derive(serde::Deserialize)]
struct StoredRules {
    global: Ruleset,
}

/// Most rooms whose push context is kept, and most bytes (by [`PushContext::bytes`]) all
/// kept contexts may hold; past either the cache starts again empty. A context larger than
/// the byte bound by itself (a room with tens of thousands of local members) is not kept.
const MAX_CACHED_ROOMS: usize = 1024;
const MAX_CACHED_BYTES: usize = 32 << 20;

/// Push contexts of recently written rooms, reused while the room's state and every local
/// user's push rules stay as they were: a send then reads nothing to evaluate push rules.
/// The room's state group changes with every membership, name or power change; push rule
/// changes are counted by accounts ([`PushRulesVersion`]).
#[derive(Default)]
pub struct PushContexts {
    rules: Arc<PushRulesVersion>,
    by_room: Mutex<CachedRooms>,
}

#[derive(Default)]
struct CachedRooms {
    rooms: HashMap<i64, CachedContext>,
    /// The sum of the kept contexts' [`PushContext::bytes`] (replaced ones included until
    /// the next clear: an overestimate, which only clears sooner).
    bytes: usize,
}

/// A room's push context: the state group it was loaded for, the push-rules generation it
/// saw, the context.
type CachedContext = (Option<i64>, u64, Arc<PushContext>);

impl PushContexts {
    /// The count of push rule changes these contexts follow (accounts move it).
    pub fn rules_version(&self) -> Arc<PushRulesVersion> {
        self.rules.clone()
    }

    /// The context for events stored on `state_before`, cached or loaded (`server`: ours,
    /// whose users' rules count).
    pub(crate) async fn get(
        &self,
        (db, server, state): (&PgPool, &ServerName, &StateCache),
        room: &RoomRow,
        rules: &RoomVersionRules,
        state_before: Option<i64>,
    ) -> Result<Arc<PushContext>> {
        // Read before loading: a change stored after this read makes the entry stale.
        let generation = self.rules.current();
        if let Some((group, r#gen, ctx)) = self.by_room.lock().rooms.get(&room.room_nid)
            && *group == state_before
            && *r#gen == generation
        {
            return Ok(ctx.clone());
        }
        let ctx =
            Arc::new(PushContext::load((db, server, state), room, rules, state_before).await?);
        if ctx.bytes > MAX_CACHED_BYTES {
            return Ok(ctx);
        }
        let mut cached = self.by_room.lock();
        if cached.rooms.len() >= MAX_CACHED_ROOMS || cached.bytes + ctx.bytes > MAX_CACHED_BYTES {
            cached.rooms.clear();
            cached.bytes = 0;
        }
        cached.bytes += ctx.bytes;
        cached
            .rooms
            .insert(room.room_nid, (state_before, generation, ctx.clone()));
        Ok(ctx)
    }
}

/// What evaluating push rules needs of a room, loaded once for the events stored together:
/// its local members with their rules, its member count and its power levels.
pub(crate) struct PushContext {
    room_id: ruma::OwnedRoomId,
    members: Vec<(OwnedUserId, String, Ruleset)>,
    member_count: UInt,
    power: Option<PushConditionPowerLevelsCtx>,
    /// About what the members and their rules hold in memory: the stored rules' JSON size
    /// stands for a parsed rule set's (the parsed form is of the same order).
    bytes: usize,
}

impl PushContext {
    /// For events stored on the state group `state_before`.
    async fn load(
        (db, server, state): (&PgPool, &ServerName, &StateCache),
        room: &RoomRow,
        rules: &RoomVersionRules,
        state_before: Option<i64>,
    ) -> Result<PushContext> {
        let room_id = ruma::OwnedRoomId::try_from(room.room_id.as_str())
            .map_err(|e| Error::internal(e.to_string()))?;
        let local = db::push::local_members_with_rules(db, room.room_nid, server.as_str()).await?;
        let mut members = Vec::with_capacity(local.members.len());
        let mut bytes = 0;
        for (user_id, displayname, stored) in local.members {
            let Ok(user) = OwnedUserId::try_from(user_id.as_str()) else {
                continue;
            };
            let parsed = stored.and_then(|j| {
                let len = j.0.get().len();
                serde_json::from_str::<StoredRules>(j.0.get())
                    .ok()
                    .map(|s| (s.global, len))
            });
            let (ruleset, rules_bytes) =
                parsed.unwrap_or_else(|| (Ruleset::server_default(&user), default_rules_bytes()));
            let name = displayname.unwrap_or_else(|| user.localpart().to_owned());
            bytes += std::mem::size_of::<(OwnedUserId, String, Ruleset)>()
                + user.as_str().len()
                + name.len()
                + rules_bytes;
            members.push((user, name, ruleset));
        }
        if members.is_empty() {
            return Ok(PushContext {
                room_id,
                members,
                member_count: UInt::default(),
                power: None,
                bytes,
            });
        }
        let member_count = UInt::try_from(local.joined).unwrap_or_default();
        // The create event too: from room version 12 its sender and additional creators
        // outrank every power level (a creator's @room notifies), and are in no `users` map.
        let (power, creators) = match state_before {
            Some(g) => {
                let power_key = (StateEventType::RoomPowerLevels, String::new());
                let create_key = (StateEventType::RoomCreate, String::new());
                let mut found =
                    load_state_events(db, state, g, &[power_key.clone(), create_key.clone()])
                        .await?;
                let power = found
                    .remove(&power_key)
                    .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok());
                (power, found.remove(&create_key).map(|c| creators_of(&c)))
            }
            None => (None, None),
        };
        Ok(PushContext {
            room_id,
            members,
            member_count,
            power: power.map(|p| power_levels_ctx(&p, rules, creators.unwrap_or_default())),
            bytes,
        })
    }

    /// Which members (its sender aside) an event about to be stored notifies.
    pub(crate) async fn actions(
        &self,
        event_id: &ruma::EventId,
        json: &str,
        pdu: &Pdu,
    ) -> Result<Notified> {
        let thread_id = thread_of(pdu).unwrap_or_else(|| "main".to_owned());
        let mut users = Vec::new();
        if self.members.iter().all(|m| m.0 == pdu.sender) {
            return Ok(Notified { thread_id, users });
        }
        let event = pdu::client_format(event_id, json, None, None)?;
        let raw: Raw<Value> = Raw::from_json(
            serde_json::value::to_raw_value(&event).map_err(|e| Error::internal(e.to_string()))?,
        );
        for (user, name, ruleset) in &self.members {
            if *user == pdu.sender {
                continue;
            }
            let mut ctx = PushConditionRoomCtx::new(
                self.room_id.clone(),
                self.member_count,
                user.clone(),
                name.clone(),
            );
            ctx.power_levels = self.power.clone();
            let actions = ruleset.get_actions(&raw, &ctx).await;
            if actions.iter().any(|a| a.should_notify()) {
                users.push(NotifiedUser {
                    user_id: user.to_string(),
                    highlight: actions.iter().any(|a| a.is_highlight()),
                    actions: serde_json::to_string(actions)
                        .map_err(|e| Error::internal(e.to_string()))?,
                });
            }
        }
        Ok(Notified { thread_id, users })
    }
}

/// The JSON size of the server's default push rules, which members without rules of their
/// own evaluate: measured once.
fn default_rules_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        let user = ruma::user_id!("@u:x");
        serde_json::to_string(&Ruleset::server_default(user)).map_or(16 << 10, |s| s.len())
    })
}

/// The thread root an event replies in (`m.thread` relation), if any.
fn thread_of(pdu: &Pdu) -> Option<String> {
    pdu.relation()
        .filter(|r| r.rel_type == "m.thread")
        .map(|r| r.event_id.to_string())
}

/// The room's creators as an m.room.create event names them: its sender and the
/// `additional_creators` of its content (room version 12 on; earlier versions ignore them).
fn creators_of(create: &Pdu) -> Vec<OwnedUserId> {
    let content: Value = serde_json::from_str(create.content.get()).unwrap_or_default();
    let additional = content["additional_creators"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| OwnedUserId::try_from(u.as_str()?).ok());
    std::iter::once(create.sender.clone())
        .chain(additional)
        .collect()
}

/// The power levels push conditions need, from an m.room.power_levels content.
fn power_levels_ctx(
    content: &Value,
    rules: &RoomVersionRules,
    creators: Vec<OwnedUserId>,
) -> PushConditionPowerLevelsCtx {
    let int = |v: &Value, default: i64| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| Int::try_from(n).ok())
            .unwrap_or_else(|| Int::try_from(default).unwrap_or_default())
    };
    let users = content["users"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((OwnedUserId::try_from(k.as_str()).ok()?, int(v, 0))))
                .collect()
        })
        .unwrap_or_default();
    let notifications =
        serde_json::from_value(content["notifications"].clone()).unwrap_or_default();
    PushConditionPowerLevelsCtx::new(
        users,
        int(&content["users_default"], 0),
        notifications,
        RoomPowerLevelsRules::new(&rules.authorization, creators),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_read_from_the_relation() {
        let p = Pdu::parse(
            "$e".try_into().unwrap(),
            r#"{"room_id":"!r:x","sender":"@a:x","origin_server_ts":1,"type":"m.room.message",
               "content":{"body":"hi","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}},
               "prev_events":[],"auth_events":[],"depth":1}"#,
        )
        .unwrap();
        assert_eq!(thread_of(&p).as_deref(), Some("$root"));
    }

    #[test]
    fn power_levels_default_sensibly() {
        let rules = ruma::RoomVersionId::V10.rules().unwrap();
        let ctx = power_levels_ctx(
            &serde_json::json!({"users": {"@a:x": 100}, "notifications": {"room": 75}}),
            &rules,
            Vec::new(),
        );
        let a = ruma::UserId::parse("@a:x").unwrap();
        assert_eq!(ctx.users.get(&*a).copied(), Int::new(100));
        assert_eq!(ctx.users_default, Int::from(0));
    }
}

//! Other servers' answers about rooms we are not in (`GET /_matrix/federation/v1/hierarchy`),
//! checked, then kept in memory for `[federation] hierarchy_cache_secs` so that a client
//! walking a large space, page after page, does not ask the same server again each time.
//! Both the answers and the room summaries they carry for children are bounded in number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::api::federation::space::get_hierarchy;
use ruma::room::{RoomSummary, RoomType};
use ruma::{OwnedRoomId, OwnedServerName, RoomId};

use super::Federation;
use crate::room::hierarchy::{SpaceChild, known_join_rule, space_children};

/// Answers kept, per (room, suggested_only).
const MAX_SPACES: usize = 2_000;
/// Child summaries kept (each answer carries those of its space's children).
const MAX_CHILD_SUMMARIES: usize = 20_000;
/// A room no server of its `via` could tell us about is not asked about again for this long.
const FAILURE_TTL: Duration = Duration::from_secs(60);
const MAX_FAILURES: usize = 2_000;
/// Servers of a child's `via` asked in turn, at most.
const VIA_TRIED: usize = 3;
/// Longest wait for one server's answer (shorter than other federation requests: a client
/// is waiting, and another server of the `via` list may answer instead).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A map whose entries live a fixed time after insertion and whose size is bounded: when it
/// is full, the oldest entry goes. With one lifetime for all, the oldest entries are also
/// the first to expire, so expiry and eviction are both a walk from the front of `order`.
pub(super) struct ExpiringMap<K, V> {
    ttl: Duration,
    capacity: usize,
    /// Value, expiry (`None`: never, for a lifetime too long to add to an `Instant`) and
    /// insertion number (the key of `order`).
    entries: HashMap<K, (V, Option<Instant>, u64)>,
    order: BTreeMap<u64, K>,
    next: u64,
}

impl<K: Eq + Hash + Clone, V> ExpiringMap<K, V> {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        ExpiringMap {
            ttl,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    pub(super) fn get(&self, key: &K, now: Instant) -> Option<&V> {
        let (value, expires, _) = self.entries.get(key)?;
        expires.is_none_or(|e| now < e).then_some(value)
    }

    pub(super) fn insert(&mut self, key: K, value: V, now: Instant) {
        self.remove(&key);
        self.purge(now);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.entries
            .insert(key, (value, now.checked_add(self.ttl), seq));
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let (value, _, seq) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    /// Live entries, oldest first.
    pub(super) fn iter(&self, now: Instant) -> impl Iterator<Item = (&K, &V)> {
        self.order.values().filter_map(move |k| {
            let (value, expires, _) = self.entries.get(k)?;
            expires.is_none_or(|e| now < e).then_some((k, value))
        })
    }

    fn purge(&mut self, now: Instant) {
        while let Some((&seq, key)) = self.order.first_key_value() {
            match self.entries.get(key) {
                Some((_, Some(expires), _)) if *expires <= now => {
                    let key = key.clone();
                    self.order.remove(&seq);
                    self.entries.remove(&key);
                }
                _ => break,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A room as another server described it to us.
#[derive(Debug)]
pub struct RemoteSpace {
    pub summary: RoomSummary,
    /// Its children in order (empty unless it is a space).
    pub children: Vec<SpaceChild>,
    /// Children that server says we may not see: not worth asking anyone about.
    pub inaccessible: HashSet<OwnedRoomId>,
}

/// The cache of other servers' answers.
pub struct RemoteSpaces {
    spaces: Mutex<ExpiringMap<(OwnedRoomId, bool), Arc<RemoteSpace>>>,
    /// Keyed by (parent, child): a server's word about a child is only taken for a child
    /// reached through that server's own space, so it cannot stand in for another's rooms.
    children: Mutex<ExpiringMap<(OwnedRoomId, OwnedRoomId), Arc<RoomSummary>>>,
    failures: Mutex<ExpiringMap<(OwnedRoomId, bool), ()>>,
}

impl RemoteSpaces {
    pub fn new(ttl: Duration) -> Self {
        RemoteSpaces {
            spaces: Mutex::new(ExpiringMap::new(ttl, MAX_SPACES)),
            children: Mutex::new(ExpiringMap::new(ttl, MAX_CHILD_SUMMARIES)),
            failures: Mutex::new(ExpiringMap::new(FAILURE_TTL.min(ttl), MAX_FAILURES)),
        }
    }
}

/// What one page may still spend on asking other servers: rooms asked about, and time.
#[derive(Debug)]
pub(super) struct AskBudget {
    pub left: usize,
    pub deadline: Instant,
}

/// What we learn about a room we are not in.
pub(super) enum Answer {
    Known(Arc<RemoteSpace>),
    /// No server could tell us (or none is named): the walk passes over it.
    Unknown,
    /// Finding out needs a request the budget no longer allows: try on a later page.
    NoBudget,
}

impl Federation {
    /// What another server says about `room_id`: the cached answer, or one asked of the
    /// servers of `via` (ours left out) in turn until one answers. Only a room that needs
    /// asking spends from `budget`.
    pub(super) async fn remote_space(
        &self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
        budget: &mut AskBudget,
    ) -> Answer {
        let cache = &self.hierarchy.remote;
        let key = (room_id.to_owned(), suggested_only);
        let now = Instant::now();
        if let Some(found) = cache.spaces.lock().get(&key, now) {
            return Answer::Known(found.clone());
        }
        if cache.failures.lock().get(&key, now).is_some() {
            return Answer::Unknown;
        }
        let ours = self.server_keys.server_name();
        let mut servers: Vec<&OwnedServerName> = Vec::new();
        for s in via {
            if s != ours && !servers.contains(&s) && servers.len() < VIA_TRIED {
                servers.push(s);
            }
        }
        if servers.is_empty() {
            return Answer::Unknown;
        }
        if budget.left == 0 || now >= budget.deadline {
            return Answer::NoBudget;
        }
        budget.left -= 1;
        for server in servers {
            let left = budget.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Answer::NoBudget;
            }
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            let answer =
                tokio::time::timeout(left.min(REQUEST_TIMEOUT), self.client.send(server, request))
                    .await;
            let response = match answer {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::info!(%server, %room_id, error = %e, "hierarchy request failed");
                    continue;
                }
                Err(_) => {
                    tracing::info!(%server, %room_id, "hierarchy request timed out");
                    continue;
                }
            };
            match accept(room_id, suggested_only, response) {
                Ok((space, child_summaries)) => {
                    let space = Arc::new(space);
                    let now = Instant::now();
                    cache.spaces.lock().insert(key, space.clone(), now);
                    let mut children = cache.children.lock();
                    for c in child_summaries {
                        children.insert((room_id.to_owned(), c.room_id.clone()), Arc::new(c), now);
                    }
                    return Answer::Known(space);
                }
                Err(why) => {
                    tracing::info!(%server, %room_id, why, "hierarchy answer refused");
                }
            }
        }
        cache.failures.lock().insert(key, (), Instant::now());
        Answer::Unknown
    }

    /// The summary another server gave of `child` in its answer about `parent` (without
    /// the child's own children).
    pub(super) fn remote_child(&self, parent: &RoomId, child: &RoomId) -> Option<Arc<RoomSummary>> {
        self.hierarchy
            .remote
            .children
            .lock()
            .get(&(parent.to_owned(), child.to_owned()), Instant::now())
            .cloned()
    }
}

/// Check an answer: it must be about the room asked for; children are taken from its child
/// events as for our own spaces, and summaries or inaccessible entries of rooms that are not
/// among them are dropped (a server speaks only for its space's children).
fn accept(
    room_id: &RoomId,
    suggested_only: bool,
    response: get_hierarchy::v1::Response,
) -> Result<(RemoteSpace, Vec<RoomSummary>), &'static str> {
    let mut summary = response.room.summary;
    if summary.room_id != room_id {
        return Err("the answer is about another room");
    }
    summary.join_rule = known_join_rule(summary.join_rule);
    let children = if summary.room_type == Some(RoomType::Space) {
        space_children(response.room.children_state, suggested_only)
    } else {
        Vec::new()
    };
    let ids: HashSet<&OwnedRoomId> = children.iter().map(|c| &c.room_id).collect();
    let inaccessible: HashSet<OwnedRoomId> = response
        .inaccessible_children
        .into_iter()
        .filter(|id| ids.contains(id))
        .collect();
    let child_summaries = response
        .children
        .into_iter()
        .filter(|c| ids.contains(&c.room_id) && !inaccessible.contains(&c.room_id))
        .map(|mut c| {
            c.join_rule = known_join_rule(c.join_rule);
            c
        })
        .collect();
    Ok((
        RemoteSpace {
            summary,
            children,
            inaccessible,
        },
        child_summaries,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::api::federation::space::SpaceHierarchyParentSummary;
    use ruma::room::JoinRuleSummary;
    use serde_json::json;

    fn summary(room_id: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut s = json!({
            "room_id": room_id, "num_joined_members": 1, "world_readable": false,
            "guest_can_join": false, "join_rule": "public",
        });
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    }

    fn answer(
        room: serde_json::Value,
        children: &[serde_json::Value],
        inaccessible: &[&str],
    ) -> get_hierarchy::v1::Response {
        let room: SpaceHierarchyParentSummary = serde_json::from_value(room).unwrap();
        let mut response = get_hierarchy::v1::Response::new(room);
        response.children = children
            .iter()
            .map(|c| serde_json::from_value(c.clone()).unwrap())
            .collect();
        response.inaccessible_children = inaccessible
            .iter()
            .map(|i| OwnedRoomId::try_from(*i).unwrap())
            .collect();
        response
    }

    fn child_event(state_key: &str, suggested: bool) -> serde_json::Value {
        json!({"type": "m.space.child", "state_key": state_key, "sender": "@a:x",
               "origin_server_ts": 1, "content": {"via": ["x"], "suggested": suggested}})
    }

    #[test]
    fn answers_speak_only_for_the_room_asked_and_its_children() {
        let space = RoomId::parse("!space:x").unwrap();
        let room = summary(
            "!space:x",
            json!({
                "room_type": "m.space",
                "children_state": [child_event("!a:x", true), child_event("!b:x", false), child_event("!hidden:x", false)],
            }),
        );
        let children = [
            summary("!a:x", json!({"join_rule": "made_up"})),
            summary("!b:x", json!({})),
            // Not a child of this space: a server cannot vouch for other rooms.
            summary("!elsewhere:x", json!({})),
        ];
        let (got, summaries) = accept(
            &space,
            false,
            answer(room.clone(), &children, &["!hidden:x", "!unrelated:x"]),
        )
        .unwrap();
        let ids: Vec<&str> = got.children.iter().map(|c| c.room_id.as_str()).collect();
        assert_eq!(ids, ["!a:x", "!b:x", "!hidden:x"]);
        assert_eq!(
            got.inaccessible,
            HashSet::from([OwnedRoomId::try_from("!hidden:x").unwrap()])
        );
        let ids: Vec<&str> = summaries.iter().map(|c| c.room_id.as_str()).collect();
        assert_eq!(ids, ["!a:x", "!b:x"]);
        // A join rule ruma cannot write back reads as invite.
        assert_eq!(summaries[0].join_rule, JoinRuleSummary::Invite);

        // suggested_only is applied to the children whatever the server sent.
        let (got, _) = accept(&space, true, answer(room.clone(), &children, &[])).unwrap();
        assert_eq!(got.children.len(), 1);

        // An answer about another room is refused; a room that is not a space has no children.
        let other = RoomId::parse("!other:x").unwrap();
        assert!(accept(&other, false, answer(room, &children, &[])).is_err());
        let plain = summary(
            "!space:x",
            json!({"children_state": [child_event("!a:x", false)]}),
        );
        let (got, summaries) = accept(&space, false, answer(plain, &children, &[])).unwrap();
        assert!(got.children.is_empty() && summaries.is_empty());
    }

    #[test]
    fn entries_expire_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new(Duration::from_secs(10), 3);
        m.insert("a", 1, t0);
        m.insert("b", 2, t0 + Duration::from_secs(1));
        m.insert("c", 3, t0 + Duration::from_secs(2));
        assert_eq!(m.get(&"a", t0 + Duration::from_secs(9)), Some(&1));
        assert_eq!(m.get(&"a", t0 + Duration::from_secs(10)), None, "expired");
        // Full: a fourth entry pushes out the oldest.
        m.insert("d", 4, t0 + Duration::from_secs(3));
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&"a", t0 + Duration::from_secs(3)), None);
        assert_eq!(m.get(&"b", t0 + Duration::from_secs(3)), Some(&2));
        // Re-inserting refreshes the entry's place and lifetime.
        m.insert("b", 5, t0 + Duration::from_secs(4));
        let keys: Vec<_> = m
            .iter(t0 + Duration::from_secs(4))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys, ["c", "d", "b"]);
        // Expired entries are dropped on the next insert.
        m.insert("e", 6, t0 + Duration::from_secs(12));
        assert_eq!(m.len(), 3, "c expired; d, b and e remain");
        assert_eq!(m.get(&"b", t0 + Duration::from_secs(12)), Some(&5));
        assert_eq!(m.remove(&"b"), Some(5));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_zero_lifetime_keeps_nothing_and_a_huge_one_never_expires() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new(Duration::ZERO, 3);
        m.insert(1, (), t0);
        assert!(m.get(&1, t0).is_none());
        let mut m = ExpiringMap::new(Duration::from_secs(u64::MAX), 3);
        m.insert(1, (), t0);
        assert!(m.get(&1, t0 + Duration::from_secs(1_000_000)).is_some());
    }
}

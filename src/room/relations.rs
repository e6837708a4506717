//! Relations as clients read them: the children of an event (`/relations`), a room's
//! threads (`/threads`), and the aggregations bundled into every event served to a client
//! (`unsigned.m.relations`: a thread's summary, the latest edit, references). The relation
//! rows themselves are written by the append path (`persist`), for local and federated
//! events alike.

use std::collections::HashMap;

use ruma::{DeviceId, EventId, RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use super::pdu::client_format;
use super::timeline::{At, MAX_PAGE, TopoToken, parse_event_id};
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::Result;

/// How many levels below an event `/relations?recurse=true` follows, as Synapse does.
pub const RECURSION_DEPTH: i32 = 3;

/// What a client asks of `/relations`.
#[derive(Debug, Clone, Default)]
pub struct RelationsQuery {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<At>,
    pub to: Option<At>,
    pub forward: bool,
    pub limit: Option<i64>,
    pub recurse: bool,
}

/// A page of an event's children.
pub struct RelationsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<TopoToken>,
    pub prev_batch: Option<TopoToken>,
    /// How deep the server followed relations, when the client asked it to recurse.
    pub recursion_depth: Option<i32>,
}

/// A page of a room's threads: their roots, latest activity first.
pub struct ThreadsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<TopoToken>,
}

/// Who reads events: a user, and the device they read from when known (that device's own
/// events then carry the client transaction IDs it sent them with, as clients match their
/// local echoes by them).
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    pub user: &'a UserId,
    pub device: Option<&'a DeviceId>,
}

impl<'a> From<&'a UserId> for Reader<'a> {
    fn from(user: &'a UserId) -> Self {
        Reader { user, device: None }
    }
}

impl<'a> From<&'a ruma::OwnedUserId> for Reader<'a> {
    fn from(user: &'a ruma::OwnedUserId) -> Self {
        Reader { user, device: None }
    }
}

impl<'a> From<&'a crate::account::AuthedUser> for Reader<'a> {
    fn from(a: &'a crate::account::AuthedUser) -> Self {
        Reader {
            user: &a.user_id,
            device: Some(&a.device_id),
        }
    }
}

/// How many children or threads a page holds when the client does not say.
const DEFAULT_LIMIT: i64 = 50;

impl Rooms {
    /// The children of `event_id` that `viewer` may see, one page in topological order.
    /// The parent must be an event the viewer may see (else 404, as for an unknown one).
    pub async fn relations(
        &self,
        reader: impl Into<Reader<'_>>,
        room_id: &RoomId,
        event_id: &EventId,
        q: &RelationsQuery,
    ) -> Result<RelationsPage> {
        let reader = reader.into();
        let viewer = reader.user;
        // 403 outside the room (as Synapse checks first), then the parent answers like
        // `/event` would: 404 when hidden.
        let room = self.readable_room(room_id, viewer).await?;
        self.event(viewer, room_id, event_id).await?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_PAGE);
        let start = match q.from {
            Some(at) => self.position(room_id, at, q.forward).await?,
            None if q.forward => TopoToken::START,
            None => TopoToken::END,
        };
        let to = match q.to {
            Some(at) => Some(self.position(room_id, at, !q.forward).await?),
            None => None,
        };
        let depth = if q.recurse { RECURSION_DEPTH } else { 1 };
        let filter = db::relations::ChildFilter {
            rel_type: q.rel_type.as_deref(),
            event_type: q.event_type.as_deref(),
            depth,
        };
        let rows = db::relations::children_page(
            self.reads(),
            room.room_nid,
            event_id.as_str(),
            &filter,
            (start.depth, start.stream),
            q.forward,
            limit,
        )
        .await?;
        let full = rows.len() as i64 >= limit;
        let mut rows: Vec<StoredEvent> = rows.into_iter().map(|(e, _)| e).collect();
        let mut reached_to = false;
        if let Some(to) = to {
            let kept = rows
                .iter()
                .take_while(|e| {
                    let at = (e.depth, e.stream_ordering.unwrap_or(0));
                    match q.forward {
                        true => at < (to.depth, to.stream),
                        false => at >= (to.depth, to.stream),
                    }
                })
                .count();
            reached_to = kept < rows.len();
            rows.truncate(kept);
        }
        let next_batch = match (full && !reached_to, rows.last()) {
            (true, Some(last)) => Some(TopoToken::of(last)),
            _ => None,
        };
        let visible = self.filter_visible(&room, viewer, rows).await?;
        Ok(RelationsPage {
            chunk: self.to_client_for(reader, &room, &visible).await?,
            next_batch,
            prev_batch: q.from.map(|_| start),
            recursion_depth: q.recurse.then_some(depth),
        })
    }

    /// The threads of a room, latest activity first: their root events (with the thread's
    /// summary bundled), those the viewer may see. `participated`: only threads the viewer
    /// started or replied in. `from`: a `next_batch` of an earlier page.
    pub async fn threads(
        &self,
        reader: impl Into<Reader<'_>>,
        room_id: &RoomId,
        participated: bool,
        from: Option<TopoToken>,
        limit: Option<i64>,
    ) -> Result<ThreadsPage> {
        let reader = reader.into();
        let viewer = reader.user;
        let room = self.readable_room(room_id, viewer).await?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_PAGE);
        let before = from.unwrap_or(TopoToken::END);
        let threads = db::relations::threads_page(
            self.reads(),
            room.room_nid,
            participated.then_some(viewer.as_str()),
            (before.depth, before.stream),
            limit,
        )
        .await?;
        let next_batch = match threads.len() as i64 >= limit {
            true => threads.last().map(|t| TopoToken {
                depth: t.depth,
                stream: t.stream_ordering,
            }),
            false => None,
        };
        let ids: Vec<&str> = threads.iter().map(|t| t.root_id.as_str()).collect();
        let mut by_id: HashMap<String, StoredEvent> = db::events::by_ids(self.reads(), &ids)
            .await?
            .into_iter()
            .filter(|e| {
                e.room_nid == room.room_nid
                    && e.rejected_reason.is_none()
                    && !e.soft_failed
                    && !e.outlier
            })
            .map(|e| (e.event_id.clone(), e))
            .collect();
        // Roots in the order of their threads' activity; a root this server lacks is left
        // out (its thread is still reachable through /relations once it arrives).
        let roots: Vec<StoredEvent> = ids.iter().filter_map(|id| by_id.remove(*id)).collect();
        let visible = self.filter_visible(&room, viewer, roots).await?;
        Ok(ThreadsPage {
            chunk: self.to_client_for(reader, &room, &visible).await?,
            next_batch,
        })
    }

    /// Client-format events with their aggregations bundled, as `reader` is served them.
    pub(crate) async fn to_client_for(
        &self,
        reader: Reader<'_>,
        room: &RoomRow,
        events: &[StoredEvent],
    ) -> Result<Vec<Value>> {
        let bundles = self
            .bundles(reader.user, reader.device, events.iter())
            .await?;
        let mut client = self.to_client(room, events).await?;
        bundles.apply(events, &mut client);
        Ok(client)
    }

    /// The aggregations of `events` (of any rooms) for `viewer`, in two queries whatever
    /// their number (a third when a thread's latest reply has been edited): thread
    /// summaries with their latest reply, the latest edit, references. With the viewer's
    /// `device`, the events that device sent also get their client transaction ID (one
    /// more query, only when there are such events).
    pub(crate) async fn bundles<'a>(
        &self,
        viewer: &UserId,
        device: Option<&DeviceId>,
        events: impl Iterator<Item = &'a StoredEvent> + Clone,
    ) -> Result<Bundles> {
        let own: Vec<i64> = match device {
            Some(_) => events
                .clone()
                .filter(|e| e.sender == viewer.as_str())
                .map(|e| e.event_nid)
                .collect(),
            None => Vec::new(),
        };
        let mut bundles = self.bundles_of(viewer, events, true).await?;
        if let (Some(device), false) = (device, own.is_empty()) {
            bundles.txn_ids =
                db::events::transaction_ids(self.reads(), viewer.as_str(), device.as_str(), &own)
                    .await?
                    .into_iter()
                    .collect();
        }
        if !bundles.latest.is_empty() {
            // The latest reply of each thread comes with its own latest edit.
            let latest: Vec<StoredEvent> = bundles.latest.values().cloned().collect();
            let edits = self.bundles_of(viewer, latest.iter(), false).await?;
            bundles.nest(&edits);
        }
        Ok(bundles)
    }

    /// One level of [`Rooms::bundles`]; `threads`: whether thread summaries are wanted.
    async fn bundles_of<'a>(
        &self,
        viewer: &UserId,
        events: impl Iterator<Item = &'a StoredEvent>,
        threads: bool,
    ) -> Result<Bundles> {
        // A redacted event has lost its relations' meaning: nothing is bundled with it.
        let parents: Vec<db::relations::Parent<'_>> = events
            .filter(|e| e.redacted_by.is_none())
            .map(|e| db::relations::Parent {
                event_id: &e.event_id,
                sender: &e.sender,
                event_type: &e.event_type,
            })
            .collect();
        let mut out = Bundles::default();
        if parents.is_empty() {
            return Ok(out);
        }
        let senders: HashMap<&str, &str> = parents.iter().map(|p| (p.event_id, p.sender)).collect();
        let agg = db::relations::aggregations(self.reads(), &parents, viewer.as_str()).await?;
        let mut nids: Vec<i64> = agg.edits.values().copied().collect();
        if threads {
            nids.extend(agg.threads.values().map(|t| t.2));
        }
        if nids.is_empty() && agg.references.is_empty() {
            return Ok(out);
        }
        let related: HashMap<i64, StoredEvent> = match nids.is_empty() {
            true => HashMap::new(),
            false => db::events::by_nids(self.reads(), &nids)
                .await?
                .into_iter()
                .map(|e| (e.event_nid, e))
                .collect(),
        };
        // The related events are neither redacted nor rejected (the query leaves those
        // out): their client form needs no room version.
        let client = |nid: &i64| -> Result<Option<Value>> {
            match related.get(nid) {
                Some(e) => Ok(Some(client_format(
                    &parse_event_id(&e.event_id)?,
                    &e.json,
                    None,
                    None,
                )?)),
                None => Ok(None),
            }
        };
        for (parent, nid) in &agg.edits {
            if let Some(edit) = client(nid)? {
                out.entry(parent).insert("m.replace".into(), edit);
            }
        }
        if threads {
            for (root, (count, participated, nid)) in &agg.threads {
                let Some(latest) = client(nid)? else { continue };
                if let Some(e) = related.get(nid) {
                    out.latest.insert(root.clone(), e.clone());
                }
                let started = senders.get(root.as_str()) == Some(&viewer.as_str());
                out.entry(root).insert(
                    "m.thread".into(),
                    json!({
                        "latest_event": latest,
                        "count": count,
                        "current_user_participated": *participated || started,
                    }),
                );
            }
        }
        for (parent, ids) in agg.references {
            let chunk: Vec<Value> = ids.into_iter().map(|id| json!({"event_id": id})).collect();
            out.entry(&parent)
                .insert("m.reference".into(), json!({ "chunk": chunk }));
        }
        Ok(out)
    }
}

/// Aggregations to bundle into served events: per event ID, its `m.relations` object.
#[derive(Default)]
pub struct Bundles {
    by_event: HashMap<String, serde_json::Map<String, Value>>,
    /// The latest reply of each thread root bundled, as stored.
    latest: HashMap<String, StoredEvent>,
    /// Client transaction IDs of the viewing device's own events, by event number.
    txn_ids: HashMap<i64, String>,
}

impl Bundles {
    fn entry(&mut self, event_id: &str) -> &mut serde_json::Map<String, Value> {
        self.by_event.entry(event_id.to_owned()).or_default()
    }

    /// Put `inner`'s aggregations into the thread summaries' latest replies.
    fn nest(&mut self, inner: &Bundles) {
        for (root, latest) in &self.latest {
            let (Some(relations), Some(summary)) = (
                inner.by_event.get(&latest.event_id),
                self.by_event.get_mut(root),
            ) else {
                continue;
            };
            if let Some(unsigned) = summary
                .get_mut("m.thread")
                .and_then(|t| t.get_mut("latest_event"))
                .and_then(|e| e.get_mut("unsigned"))
                .and_then(Value::as_object_mut)
            {
                unsigned.insert("m.relations".into(), Value::Object(relations.clone()));
            }
        }
    }

    /// Add each event's aggregations to its client form (`client[i]` is `events[i]`'s).
    pub fn apply(&self, events: &[StoredEvent], client: &mut [Value]) {
        if self.by_event.is_empty() && self.txn_ids.is_empty() {
            return;
        }
        for (e, c) in events.iter().zip(client.iter_mut()) {
            let Some(unsigned) = c.get_mut("unsigned").and_then(Value::as_object_mut) else {
                continue;
            };
            if let Some(relations) = self.by_event.get(&e.event_id) {
                unsigned.insert("m.relations".into(), Value::Object(relations.clone()));
            }
            if let Some(txn_id) = self.txn_ids.get(&e.event_nid) {
                unsigned.insert("transaction_id".into(), Value::String(txn_id.clone()));
            }
        }
    }
}

//! The client's space hierarchy (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`): a
//! depth-first walk from a space we are in, through our own rooms (summarised here, a batch
//! at a time) and other servers' rooms (asked of a server in the child event's `via`, the
//! answers cached), returned a page at a time.
//!
//! The walk, as in the spaces proposal and Synapse:
//! 1. The root must be a room we are in that the user may see (checked on every page).
//! 2. Take the next room off the stack; a room already processed in this walk is skipped,
//!    so each room appears once over all pages, and loops end.
//! 3. Summarise it: from our own state when we are in it, else from the summary its parent
//!    space's server gave of it (enough for a room that is not a space, or at `max_depth`),
//!    else by asking a server of its `via` list.
//! 4. Mark it processed. Leave it out if the user may not see it (its children unwalked).
//! 5. Otherwise add it to the page and, above `max_depth`, push its children in reverse
//!    order (the first child is walked next), except those its server called inaccessible.
//!
//! Every page and every walk is bounded by the constants below, whatever the request asks.
//! A page ends at `limit` rooms or at a bound; `next_batch` then names the rest of the walk,
//! kept in memory for [`WALK_TTL`] (a token can be used again, e.g. on a retry).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use ruma::api::client::space::SpaceHierarchyRoomsChunk;
use ruma::room::{RoomSummary, RoomType};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};

use super::Federation;
use super::hierarchy_remote::{Answer, AskBudget, ExpiringMap, RemoteSpaces};
use crate::error::{Error, Result};
use crate::room::Rooms;
use crate::room::hierarchy::{SpaceChild, SpaceRoom, Viewer};

/// Rooms per page when the client names no limit, and the most it may ask for.
pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 100;
/// How deep a walk goes when the client names no `max_depth`, and the deepest it may ask.
pub const MAX_DEPTH: u64 = 10;
/// Rooms one page looks at, shown or not.
const MAX_LOOKED_AT: usize = 250;
/// Rooms one page asks other servers about, and how long it may spend asking.
const MAX_ASKED: usize = 10;
const ASKING_BUDGET: Duration = Duration::from_secs(20);
/// Rooms one walk processes over all its pages; it ends there.
const MAX_WALK: usize = 5_000;
/// Rooms waiting on a walk's stack; children beyond it are left out.
const MAX_STACK: usize = 2_000;
/// Servers of a child's `via` kept to ask.
const VIA_KEPT: usize = 3;
/// Our rooms summarised in one batch.
const MAX_BATCH: usize = 100;
/// How long a `next_batch` token stays valid, how many are kept, and how many of one user's.
const WALK_TTL: Duration = Duration::from_secs(600);
const MAX_WALKS: usize = 512;
const MAX_WALKS_PER_USER: usize = 8;

/// What the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct HierarchyQuery<'a> {
    pub room_id: &'a RoomId,
    pub from: Option<&'a str>,
    pub limit: Option<u64>,
    pub max_depth: Option<u64>,
    pub suggested_only: bool,
}

/// One page of the hierarchy.
#[derive(Debug)]
pub struct HierarchyPage {
    pub rooms: Vec<SpaceHierarchyRoomsChunk>,
    pub next_batch: Option<String>,
}

/// A room waiting to be walked.
#[derive(Debug, Clone)]
struct Pending {
    room_id: OwnedRoomId,
    via: Vec<OwnedServerName>,
    /// The room whose child event named it (`None` for the root).
    parent: Option<OwnedRoomId>,
    /// The root is at 0.
    depth: u64,
}

/// A walk between pages.
#[derive(Debug, Clone)]
struct Walk {
    user: OwnedUserId,
    root: OwnedRoomId,
    suggested_only: bool,
    /// As the client gave it: a token is only good for the same value.
    max_depth: Option<u64>,
    /// Rooms still to walk; the next is last.
    stack: Vec<Pending>,
    /// Rooms processed, shown or not.
    seen: HashSet<OwnedRoomId>,
}

/// The remote answers cache and the walks between pages.
pub struct HierarchyState {
    pub(super) remote: RemoteSpaces,
    walks: Mutex<ExpiringMap<String, Walk>>,
}

impl HierarchyState {
    pub fn new(cache_ttl: Duration) -> Self {
        HierarchyState {
            remote: RemoteSpaces::new(cache_ttl),
            walks: Mutex::new(ExpiringMap::new(WALK_TTL, MAX_WALKS)),
        }
    }
}

/// A room found by the walk: its summary, its children and those of them not to walk.
type Found = (RoomSummary, Vec<SpaceChild>, HashSet<OwnedRoomId>);

impl Federation {
    /// One page of the hierarchy under `q.room_id`, as `user` may see it.
    #[tracing::instrument(name = "hierarchy", skip_all, fields(room_id = %q.room_id))]
    pub async fn hierarchy(
        &self,
        rooms: &Rooms,
        user: &UserId,
        q: HierarchyQuery<'_>,
    ) -> Result<HierarchyPage> {
        let limit = match q.limit {
            None => DEFAULT_LIMIT,
            Some(0) => return Err(Error::invalid_param("limit must be greater than zero")),
            Some(n) => n.min(MAX_LIMIT),
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let depth_cap = q.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
        let mut walk = match q.from {
            Some(token) => self.resume(token, user, &q)?,
            None => Walk {
                user: user.to_owned(),
                root: q.room_id.to_owned(),
                suggested_only: q.suggested_only,
                max_depth: q.max_depth,
                stack: vec![Pending {
                    room_id: q.room_id.to_owned(),
                    via: Vec::new(),
                    parent: None,
                    depth: 0,
                }],
                seen: HashSet::new(),
            },
        };
        let viewer = Viewer::User(user);
        // 1. The root, checked on every page: whoever lost access since stops here.
        let root = rooms
            .space_rooms(&[q.room_id.to_owned()], viewer, q.suggested_only, true)
            .await?
            .remove(q.room_id)
            .filter(|r| r.accessible)
            .ok_or_else(|| {
                Error::forbidden("You may not view this room, or this server is not in it")
            })?;
        let mut local: HashMap<OwnedRoomId, Option<SpaceRoom>> = HashMap::new();
        local.insert(q.room_id.to_owned(), Some(root));

        let mut budget = AskBudget {
            left: MAX_ASKED,
            deadline: Instant::now() + ASKING_BUDGET,
        };
        let mut out = Vec::new();
        let mut looked_at = 0;
        while out.len() < limit {
            // 2. The next room not yet processed.
            let Some(next) = walk.stack.pop() else { break };
            if walk.seen.contains(&next.room_id) {
                continue;
            }
            if walk.seen.len() >= MAX_WALK {
                tracing::info!(rooms = walk.seen.len(), "hierarchy walk cut at its bound");
                walk.stack.clear();
                break;
            }
            if looked_at == MAX_LOOKED_AT {
                walk.stack.push(next);
                break;
            }
            looked_at += 1;
            // 3. Its summary.
            if !local.contains_key(&next.room_id) {
                let want = (limit - out.len()).clamp(1, MAX_BATCH);
                prefetch(
                    rooms,
                    &walk,
                    &next,
                    &mut local,
                    want,
                    viewer,
                    q.suggested_only,
                )
                .await?;
            }
            let found: Option<Found> = match local.remove(&next.room_id).flatten() {
                Some(room) => room
                    .accessible
                    .then(|| (room.summary, room.children, HashSet::new())),
                None => {
                    let at_bottom = next.depth >= depth_cap;
                    let known = next
                        .parent
                        .as_deref()
                        .and_then(|parent| self.remote_child(parent, &next.room_id))
                        .filter(|s| at_bottom || s.room_type != Some(RoomType::Space));
                    let remote = match known {
                        Some(s) => Some(((*s).clone(), Vec::new(), HashSet::new())),
                        None => match self
                            .remote_space(&next.room_id, &next.via, q.suggested_only, &mut budget)
                            .await
                        {
                            Answer::Known(s) => Some((
                                s.summary.clone(),
                                s.children.clone(),
                                s.inaccessible.clone(),
                            )),
                            Answer::Unknown => None,
                            Answer::NoBudget => {
                                walk.stack.push(next);
                                break;
                            }
                        },
                    };
                    match remote {
                        Some(r) if rooms.user_may_see(user, &r.0).await? => Some(r),
                        _ => None,
                    }
                }
            };
            // 4. Processed, shown or not.
            walk.seen.insert(next.room_id.clone());
            let Some((summary, children, inaccessible)) = found else {
                continue;
            };
            // 5. Shown; its children walked next.
            if next.depth < depth_cap {
                let walkable: Vec<&SpaceChild> = children
                    .iter()
                    .filter(|c| {
                        !walk.seen.contains(&c.room_id) && !inaccessible.contains(&c.room_id)
                    })
                    .take(MAX_STACK.saturating_sub(walk.stack.len()))
                    .collect();
                walk.stack
                    .extend(walkable.into_iter().rev().map(|c| Pending {
                        room_id: c.room_id.clone(),
                        via: c.via.iter().take(VIA_KEPT).cloned().collect(),
                        parent: Some(next.room_id.clone()),
                        depth: next.depth + 1,
                    }));
            }
            let children_state = children.into_iter().map(|c| c.event).collect();
            out.push(SpaceHierarchyRoomsChunk::new(summary, children_state));
        }
        walk.stack.retain(|p| !walk.seen.contains(&p.room_id));
        let next_batch = (!walk.stack.is_empty()).then(|| self.save_walk(walk));
        Ok(HierarchyPage {
            rooms: out,
            next_batch,
        })
    }

    /// The walk a `next_batch` token names, if it belongs to this same request.
    fn resume(&self, token: &str, user: &UserId, q: &HierarchyQuery<'_>) -> Result<Walk> {
        let well_formed = token.len() == 22
            && URL_SAFE_NO_PAD
                .decode(token)
                .is_ok_and(|bytes| bytes.len() == 16);
        if !well_formed {
            return Err(Error::invalid_param("Invalid pagination token"));
        }
        let walks = self.hierarchy.walks.lock();
        let walk = walks
            .get(&token.to_owned(), Instant::now())
            .ok_or_else(|| Error::invalid_param("Unknown or expired pagination token"))?;
        if walk.user != user || walk.root != q.room_id {
            return Err(Error::invalid_param(
                "The pagination token is for another room",
            ));
        }
        if walk.suggested_only != q.suggested_only || walk.max_depth != q.max_depth {
            return Err(Error::invalid_param(
                "suggested_only and max_depth cannot change while paginating",
            ));
        }
        Ok(walk.clone())
    }

    /// Keep a walk for its next page; returns its token.
    fn save_walk(&self, walk: Walk) -> String {
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let now = Instant::now();
        let mut walks = self.hierarchy.walks.lock();
        // One user's walks cannot crowd out everyone else's: their oldest make room.
        let theirs: Vec<String> = walks
            .iter(now)
            .filter(|(_, w)| w.user == walk.user)
            .map(|(k, _)| k.clone())
            .collect();
        let excess = (theirs.len() + 1).saturating_sub(MAX_WALKS_PER_USER);
        for old in &theirs[..excess] {
            walks.remove(old);
        }
        walks.insert(token.clone(), walk, now);
        token
    }
}

/// Summarise `next` and the rooms waiting above it on the stack (up to `want`), in one
/// batch: after a space, those are its children. Rooms we are not in are recorded as `None`.
async fn prefetch(
    rooms: &Rooms,
    walk: &Walk,
    next: &Pending,
    local: &mut HashMap<OwnedRoomId, Option<SpaceRoom>>,
    want: usize,
    viewer: Viewer<'_>,
    suggested_only: bool,
) -> Result<()> {
    let mut ids = vec![next.room_id.clone()];
    for p in walk.stack.iter().rev() {
        if ids.len() >= want {
            break;
        }
        if !walk.seen.contains(&p.room_id)
            && !local.contains_key(&p.room_id)
            && !ids.contains(&p.room_id)
        {
            ids.push(p.room_id.clone());
        }
    }
    let mut found = rooms
        .space_rooms(&ids, viewer, suggested_only, true)
        .await?;
    for id in ids {
        let room = found.remove(&id);
        local.insert(id, room);
    }
    Ok(())
}

//! The state side of a write: new state groups (deltas on the group an event stands on,
//! capped chains, snapshots where a key goes away) and the current state a batch leaves.

use std::collections::HashMap;

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;

use crate::db::{self, rooms::RoomRow};
use crate::error::Result;
use crate::room::pdu::membership_of;
use crate::room::write::{Checked, Current, StateChange};

/// The room's current state as a batch moves it, event by event: its state group, the
/// entries to set (the last of each key winning) and the keys removed.
pub(super) struct CurrentState {
    pub(super) group: Option<i64>,
    pub(super) changes: Vec<StateChange>,
    pub(super) removed_keys: Vec<i64>,
}

impl CurrentState {
    /// Apply one accepted live event, `own` being its state key number and the state group
    /// after it.
    pub(super) async fn apply(
        &mut self,
        tx: &mut sqlx::PgConnection,
        room_nid: i64,
        ev: &Checked<'_>,
        event_nid: i64,
        (state_key_nid, state_after): (Option<i64>, Option<i64>),
    ) -> Result<()> {
        let own = state_key_nid.map(|sk| StateChange {
            state_key_nid: sk,
            event_nid,
            member: (ev.pdu.kind == TimelineEventType::RoomMember)
                .then(|| {
                    ev.pdu
                        .state_key
                        .clone()
                        .map(|k| (k, membership_of(&ev.pdu.content)))
                })
                .flatten(),
        });
        match &ev.current {
            Current::Keep => {}
            Current::Extend { also } => {
                // The event's own entry comes last, so it wins over the state before it.
                self.changes.extend(also.iter().cloned());
                self.changes.extend(own);
                self.group = state_after;
            }
            Current::Resolved {
                changes: resolved,
                removed,
            } => {
                let entries: Vec<(i64, i64)> = resolved
                    .iter()
                    .map(|c| (c.state_key_nid, c.event_nid))
                    .collect();
                if !removed.is_empty() {
                    // A delta cannot remove a key: the whole new state as a snapshot.
                    self.group = Some(
                        snapshot_without(&mut *tx, room_nid, self.group, &entries, removed).await?,
                    );
                    self.changes.retain(|c| !removed.contains(&c.state_key_nid));
                    self.removed_keys.extend(removed.iter().copied());
                } else if !entries.is_empty() {
                    self.group =
                        Some(new_state_group(&mut *tx, room_nid, self.group, &entries).await?);
                }
                self.changes.extend(resolved.iter().cloned());
            }
        }
        Ok(())
    }
}

/// Make the accumulated changes the room's current state, the last change of each key (and
/// of each member) winning, and `group` its state group.
pub(super) async fn apply_state_changes(
    tx: &mut sqlx::PgConnection,
    room: &RoomRow,
    changes: Vec<StateChange>,
    group: Option<i64>,
) -> Result<()> {
    if !changes.is_empty() {
        let mut by_key: HashMap<i64, i64> = HashMap::new();
        let mut members: HashMap<String, (MembershipState, i64)> = HashMap::new();
        for c in changes {
            by_key.insert(c.state_key_nid, c.event_nid);
            if let Some((user, membership)) = c.member {
                members.insert(user, (membership, c.event_nid));
            }
        }
        let entries: Vec<(i64, i64)> = by_key.into_iter().collect();
        db::state::set_current_many(&mut *tx, room.room_nid, &entries).await?;
        let members: Vec<(&str, &MembershipState, i64)> = members
            .iter()
            .map(|(u, (m, e))| (u.as_str(), m, *e))
            .collect();
        if !members.is_empty() {
            db::rooms::set_memberships(&mut *tx, room.room_nid, &members).await?;
        }
    }
    if let Some(group) = group
        && Some(group) != room.state_group
    {
        db::rooms::set_state_group(&mut *tx, room.room_nid, group).await?;
    }
    Ok(())
}

/// The state of `group` with `entries` set and `removed` gone, as a new snapshot group.
async fn snapshot_without(
    tx: &mut sqlx::PgConnection,
    room_nid: i64,
    group: Option<i64>,
    entries: &[(i64, i64)],
    removed: &[i64],
) -> Result<i64> {
    let mut all: HashMap<i64, i64> = match group {
        Some(g) => db::state::load(&mut *tx, g)
            .await?
            .into_iter()
            .map(|r| (r.0, r.1))
            .collect(),
        None => HashMap::new(),
    };
    all.extend(entries.iter().copied());
    for k in removed {
        all.remove(k);
    }
    let all: Vec<(i64, i64)> = all.into_iter().collect();
    Ok(db::state::create_group(tx, room_nid, None, &all).await?)
}

/// A new state group: `prev` plus `entries`, as a delta unless the chain is at its cap.
pub(crate) async fn new_state_group(
    tx: &mut sqlx::PgConnection,
    room_nid: i64,
    prev: Option<i64>,
    entries: &[(i64, i64)],
) -> Result<i64> {
    Ok(new_state_group_on(tx, room_nid, prev, None, entries)
        .await?
        .0)
}

/// [`new_state_group`], with `prev`'s chain length if known (a group made in the same
/// transaction); returns the new group and its chain length.
pub(super) async fn new_state_group_on(
    tx: &mut sqlx::PgConnection,
    room_nid: i64,
    prev: Option<i64>,
    known: Option<(i64, i32)>,
    entries: &[(i64, i64)],
) -> Result<(i64, i32)> {
    let Some(prev) = prev else {
        let group = db::state::create_group(tx, room_nid, None, entries).await?;
        return Ok((group, 0));
    };
    let len = match known {
        Some((g, len)) if g == prev => len,
        _ => db::state::chain_len(&mut *tx, prev).await?,
    };
    if len + 1 < db::state::MAX_CHAIN_LEN {
        let group = db::state::create_group(tx, room_nid, Some((prev, len)), entries).await?;
        return Ok((group, len + 1));
    }
    // The chain is at its cap: write the whole state as a new snapshot.
    let mut all: HashMap<i64, i64> = db::state::load(&mut *tx, prev)
        .await?
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect();
    all.extend(entries.iter().copied());
    let all: Vec<(i64, i64)> = all.into_iter().collect();
    let group = db::state::create_group(tx, room_nid, None, &all).await?;
    Ok((group, 0))
}

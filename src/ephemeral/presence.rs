//! Presence, kept in memory.
//!
//! Why not Postgres: presence is the chattiest data a server has (every sync touches it) and
//! is only a hint; after a restart users show as offline until their next sync or presence
//! update, which sets it again. Like typing, each visible change takes the next value of one
//! serial that sync tokens carry.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ruma::presence::PresenceState;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

#[derive(Default)]
pub struct PresenceMap {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    serial: u64,
    users: HashMap<OwnedUserId, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    state: PresenceState,
    status_msg: Option<String>,
    /// Last time the user was seen active (set online, by hand or by syncing).
    last_active: Instant,
    /// The serial of the last change clients should hear about.
    changed: u64,
}

/// A user's presence as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceView {
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    pub currently_active: bool,
    pub last_active_ago: Option<Duration>,
}

impl PresenceView {
    fn offline() -> Self {
        PresenceView {
            presence: PresenceState::Offline,
            status_msg: None,
            currently_active: false,
            last_active_ago: None,
        }
    }

    /// The `m.presence` event for `user`.
    pub fn event(&self, user: &UserId) -> Value {
        let mut content = json!({
            "presence": self.presence.as_str(),
            "currently_active": self.currently_active,
        });
        if let Some(ago) = self.last_active_ago {
            content["last_active_ago"] = json!(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX));
        }
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = json!(msg);
        }
        json!({"type": "m.presence", "sender": user, "content": content})
    }
}

impl Entry {
    fn view(&self, now: Instant) -> PresenceView {
        PresenceView {
            presence: self.state.clone(),
            status_msg: self.status_msg.clone(),
            currently_active: self.state == PresenceState::Online,
            last_active_ago: Some(now.saturating_duration_since(self.last_active)),
        }
    }
}

/// Presence that changed since a position, and the position it brings a reader to.
#[derive(Debug, Default)]
pub struct PresenceChanges {
    pub position: u64,
    pub users: Vec<(OwnedUserId, PresenceView)>,
}

impl PresenceMap {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single insert, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set presence and, when `status_msg` is `Some`, the status message (`Some(None)`
    /// clears it). Returns whether anything clients see changed.
    pub fn set(
        &self,
        user: &UserId,
        presence: PresenceState,
        status_msg: Option<Option<String>>,
        now: Instant,
    ) -> bool {
        let mut state = self.state();
        let next = state.serial + 1;
        let entry = state.users.entry(user.to_owned()).or_insert(Entry {
            state: PresenceState::Offline,
            status_msg: None,
            last_active: now,
            changed: 0,
        });
        let msg = status_msg.unwrap_or_else(|| entry.status_msg.clone());
        let changed = entry.changed == 0 || entry.state != presence || entry.status_msg != msg;
        if presence == PresenceState::Online {
            // Being online is activity; a refreshed timestamp alone wakes nobody.
            entry.last_active = now;
        }
        entry.state = presence;
        entry.status_msg = msg;
        if changed {
            entry.changed = next;
            state.serial = next;
        }
        changed
    }

    /// The user's presence (offline if never seen).
    pub fn get(&self, user: &UserId, now: Instant) -> PresenceView {
        self.state()
            .users
            .get(user)
            .map_or_else(PresenceView::offline, |e| e.view(now))
    }

    /// Everyone whose presence changed after `since` (everyone known on an initial sync, or
    /// for a token from before a restart). The caller filters by who may see whom.
    pub fn changed_since(&self, since: Option<u64>, now: Instant) -> PresenceChanges {
        let state = self.state();
        let since = since.filter(|s| *s <= state.serial);
        let users = state
            .users
            .iter()
            .filter(|(_, e)| since.is_none_or(|s| e.changed > s))
            .map(|(u, e)| (u.clone(), e.view(now)))
            .collect();
        PresenceChanges {
            position: state.serial,
            users,
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[test]
    fn only_visible_changes_bump() {
        let p = PresenceMap::default();
        let bob = user_id!("@bob:x");
        let now = Instant::now();
        assert_eq!(p.get(bob, now).presence, PresenceState::Offline);
        assert!(p.set(bob, PresenceState::Online, None, now));
        assert!(!p.set(bob, PresenceState::Online, None, now));
        assert!(p.set(bob, PresenceState::Online, Some(Some("hi".into())), now));
        // A sync-driven update keeps the message.
        assert!(p.set(bob, PresenceState::Unavailable, None, now));
        let view = p.get(bob, now);
        assert_eq!(view.status_msg.as_deref(), Some("hi"));
        assert!(!view.currently_active);
        let c = p.changed_since(Some(2), now);
        assert_eq!(c.position, 3);
        assert_eq!(c.users.len(), 1);
        assert!(p.changed_since(Some(3), now).users.is_empty());
        assert_eq!(p.changed_since(Some(9), now).users.len(), 1);
        let event = view.event(bob);
        assert_eq!(event["content"]["presence"], "unavailable");
    }
}

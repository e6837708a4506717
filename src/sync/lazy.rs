//! Which member events each device was sent under lazy loading, so that an incremental sync
//! does not send a member again that the device already has (unless the filter asks,
//! `include_redundant_members`). Synapse keeps the same record in memory per device, bounded;
//! a device whose record was dropped (restart, idle, too many entries) gets those members
//! again, which is redundant but never wrong.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

/// Member events remembered per device (oldest forgotten first).
const PER_DEVICE: usize = 2_000;
/// A device not synced for this long is forgotten.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// How often idle devices are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct LazySent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<(OwnedUserId, OwnedDeviceId), Sent>,
    swept: Option<Instant>,
}

struct Sent {
    used: Instant,
    /// (room number, member's user ID) → the member event ID the device has.
    members: HashMap<(i64, String), String>,
    order: VecDeque<(i64, String)>,
}

impl LazySent {
    /// Forget what the device was sent: a sync without a token starts it afresh.
    pub fn reset(&self, user: &UserId, device: &DeviceId) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.devices.remove(&(user.to_owned(), device.to_owned()));
        }
    }

    /// Of the member events (room, member, event ID), those the device does not have.
    pub fn unsent<'a, T>(
        &self,
        user: &UserId,
        device: &DeviceId,
        members: impl Iterator<Item = (i64, &'a str, &'a str, T)>,
    ) -> Vec<T> {
        let Ok(inner) = self.inner.lock() else {
            return members.map(|m| m.3).collect();
        };
        let sent = inner.devices.get(&(user.to_owned(), device.to_owned()));
        members
            .filter(|(room, member, event_id, _)| {
                sent.and_then(|s| s.members.get(&(*room, (*member).to_owned())))
                    .is_none_or(|have| have != event_id)
            })
            .map(|m| m.3)
            .collect()
    }

    /// Record that the device now has these member events (room, member, event ID).
    pub fn record<'a>(
        &self,
        user: &UserId,
        device: &DeviceId,
        members: impl Iterator<Item = (i64, &'a str, &'a str)>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        if inner
            .swept
            .is_none_or(|t| now.duration_since(t) > SWEEP_EVERY)
        {
            inner.swept = Some(now);
            inner
                .devices
                .retain(|_, s| now.duration_since(s.used) < IDLE);
        }
        let sent = inner
            .devices
            .entry((user.to_owned(), device.to_owned()))
            .or_insert_with(|| Sent {
                used: now,
                members: HashMap::new(),
                order: VecDeque::new(),
            });
        sent.used = now;
        for (room, member, event_id) in members {
            let key = (room, member.to_owned());
            if sent
                .members
                .insert(key.clone(), event_id.to_owned())
                .is_none()
            {
                sent.order.push_back(key);
            }
        }
        while sent.order.len() > PER_DEVICE {
            if let Some(old) = sent.order.pop_front() {
                sent.members.remove(&old);
            }
        }
    }
}

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
/// Member events remembered in all: past this, the devices that synced least recently are
/// forgotten first. An entry is about 200 bytes (room number, member ID twice, event ID), so
/// this holds the record under 64 MiB whatever the number of devices.
const MAX_ENTRIES: usize = 320_000;
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
    /// Entries over all devices.
    entries: usize,
    swept: Option<Instant>,
}

impl Inner {
    fn count(&mut self) {
        self.entries = self.devices.values().map(|s| s.order.len()).sum();
    }

    /// Forget the least recently synced devices (not `keep`) until the bound holds.
    fn bound(&mut self, keep: &(OwnedUserId, OwnedDeviceId)) {
        while self.entries > MAX_ENTRIES {
            let oldest = self
                .devices
                .iter()
                .filter(|(k, _)| *k != keep)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else {
                return;
            };
            if let Some(gone) = self.devices.remove(&oldest) {
                self.entries -= gone.order.len();
            }
        }
    }
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
            inner.count();
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
            inner.count();
        }
        let key = (user.to_owned(), device.to_owned());
        let before = inner.devices.get(&key).map_or(0, |s| s.order.len());
        let sent = inner.devices.entry(key.clone()).or_insert_with(|| Sent {
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
        let after = sent.order.len();
        inner.entries = inner.entries + after - before;
        inner.bound(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_stays_within_its_bound() {
        let lazy = LazySent::default();
        let user = ruma::user_id!("@u:x");
        let devices = MAX_ENTRIES / PER_DEVICE + 3;
        for d in 0..devices {
            let device: OwnedDeviceId = format!("D{d}").into();
            let members: Vec<(i64, String, String)> = (0..PER_DEVICE + 10)
                .map(|m| (1, format!("@m{m}:x"), format!("$e{m}")))
                .collect();
            lazy.record(
                user,
                &device,
                members.iter().map(|(r, m, e)| (*r, m.as_str(), e.as_str())),
            );
        }
        let inner = lazy.inner.lock().expect("lock");
        let held: usize = inner.devices.values().map(|s| s.order.len()).sum();
        assert_eq!(held, inner.entries);
        assert!(held <= MAX_ENTRIES, "{held} entries held");
        assert!(inner.devices.values().all(|s| s.order.len() <= PER_DEVICE));
        // The device that synced last is kept.
        let last: OwnedDeviceId = format!("D{}", devices - 1).into();
        assert!(inner.devices.contains_key(&(user.to_owned(), last)));
    }
}

//! When and from where each device was last seen: `GET /devices`, `/admin/whois` and clients'
//! session lists ("last active") show it. Every authenticated request sees its device, but
//! a device's row is written at most once per [`INTERVAL`], in the background: a write per
//! request would cost more than most requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

/// How often a busy device's row is written.
pub const INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Devices remembered at most (about 150 bytes each: some 15 MiB at most). When full, those
/// written longer than [`INTERVAL`] ago are forgotten; if none is, all are (each is then
/// written once more).
const MAX_DEVICES: usize = 100_000;

pub struct LastSeen {
    written: Mutex<Written>,
    /// Devices remembered at most ([`MAX_DEVICES`]).
    max: usize,
}

impl Default for LastSeen {
    fn default() -> Self {
        LastSeen {
            written: Mutex::default(),
            max: MAX_DEVICES,
        }
    }
}

/// Per user, per device, when its row was last written; looked up by reference, so a
/// request that is not due allocates nothing.
#[derive(Default)]
struct Written {
    users: HashMap<OwnedUserId, HashMap<OwnedDeviceId, Instant>>,
    devices: usize,
}

impl LastSeen {
    /// Whether the device's row is due to be written now; if so, it counts as written.
    pub fn due(&self, user: &UserId, device: &DeviceId, now: Instant) -> bool {
        // A panic while holding the lock leaves at worst a stale instant: ignore poisoning.
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let recent = |at: &Instant| now.saturating_duration_since(*at) < INTERVAL;
        if let Some(at) = w.users.get(user).and_then(|d| d.get(device)) {
            if recent(at) {
                return false;
            }
        } else if w.devices >= self.max {
            for devices in w.users.values_mut() {
                devices.retain(|_, at| recent(at));
            }
            w.users.retain(|_, devices| !devices.is_empty());
            w.devices = w.users.values().map(HashMap::len).sum();
            if w.devices >= self.max {
                w.users.clear();
                w.devices = 0;
            }
        }
        let devices = w.users.entry(user.to_owned()).or_default();
        let new = devices.insert(device.to_owned(), now).is_none();
        if new {
            w.devices += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_due_once_per_interval() {
        let seen = LastSeen::default();
        let user = OwnedUserId::try_from("@a:x").unwrap();
        let (d1, d2): (OwnedDeviceId, OwnedDeviceId) = ("D1".into(), "D2".into());
        let t = Instant::now();
        assert!(seen.due(&user, &d1, t));
        assert!(!seen.due(&user, &d1, t + Duration::from_secs(10)));
        assert!(seen.due(&user, &d2, t + Duration::from_secs(10)));
        assert!(seen.due(&user, &d1, t + INTERVAL));
    }

    #[test]
    fn the_devices_remembered_stay_within_the_bound() {
        let seen = LastSeen {
            written: Mutex::default(),
            max: 3,
        };
        let user = OwnedUserId::try_from("@a:x").unwrap();
        let t = Instant::now();
        for i in 0..3 {
            let d: OwnedDeviceId = format!("D{i}").into();
            assert!(seen.due(&user, &d, t));
        }
        // Full of recent devices: all are forgotten to make room.
        let d: OwnedDeviceId = "D3".into();
        assert!(seen.due(&user, &d, t));
        assert_eq!(seen.written.lock().unwrap().devices, 1);
        // Full again later: only the stale are forgotten.
        for i in 4..6 {
            let d: OwnedDeviceId = format!("D{i}").into();
            assert!(seen.due(&user, &d, t + INTERVAL));
        }
        let d: OwnedDeviceId = "D6".into();
        assert!(seen.due(&user, &d, t + INTERVAL));
        assert_eq!(seen.written.lock().unwrap().devices, 3);
        let d5: OwnedDeviceId = "D5".into();
        assert!(!seen.due(&user, &d5, t + INTERVAL));
    }
}

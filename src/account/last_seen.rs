//! When and from where each device was last seen: `GET /devices`, `/admin/whois` and clients'
//! session lists ("last active") show it. Every authenticated request sees its device, but
//! a device's row is written at most once per [`INTERVAL`], in the background: a write per
//! request would cost more than most requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{OwnedDeviceId, OwnedUserId};

/// How often a busy device's row is written.
pub const INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Devices remembered at most (about 150 bytes each: some 15 MiB at most). When full, those
/// written longer than [`INTERVAL`] ago are forgotten; if none is, all are (each is then
/// written once more).
const MAX_DEVICES: usize = 100_000;

#[derive(Default)]
pub struct LastSeen {
    written: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), Instant>>,
}

impl LastSeen {
    /// Whether the device's row is due to be written now; if so, it counts as written.
    pub fn due(&self, user: &OwnedUserId, device: &OwnedDeviceId, now: Instant) -> bool {
        // A panic while holding the lock leaves at worst a stale instant: ignore poisoning.
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let key = (user.clone(), device.clone());
        if written
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < INTERVAL)
        {
            return false;
        }
        if written.len() >= MAX_DEVICES {
            written.retain(|_, at| now.saturating_duration_since(*at) < INTERVAL);
            if written.len() >= MAX_DEVICES {
                written.clear();
            }
        }
        written.insert(key, now);
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
}

//! Wakes waiting /sync requests for news that is not a room event: to-device messages and
//! device-key changes (and whatever else later shares it).
//!
//! A watch channel rather than `Notify`: a sync subscribes before it reads, so a wake-up
//! that lands between the read and the wait is not lost.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct SyncNotifier {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for SyncNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncNotifier {
    pub fn new() -> Self {
        SyncNotifier {
            tx: Arc::new(watch::channel(0).0),
        }
    }

    /// Wake every waiting sync; each re-reads and goes back to sleep if nothing is for it.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Resolve when either the event stream or the notifier moves; `Err` when a sender is gone.
pub async fn either_changed(
    events: &mut watch::Receiver<i64>,
    notes: &mut watch::Receiver<u64>,
) -> Result<(), watch::error::RecvError> {
    tokio::select! {
        r = events.changed() => r,
        r = notes.changed() => r,
    }
}

//! Room events for the notifier: each time the event stream's safe position moves, the feed
//! learns which rooms the newly committed events are in (and whom membership events are
//! about), for every waiting sync together, and the notifier wakes only those concerned.
//!
//! The append path tells the stream what each committed position holds, so the common case
//! costs no query between a commit and the wake-up it causes. When that record is incomplete
//! (it is bounded, and a feed may start or fall behind after it dropped entries) the range is
//! read from Postgres instead, which also covers every writer of the stream; several
//! processes over one database will read it that way (with LISTEN/NOTIFY in place of the
//! in-process watch channel).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::db;
use crate::notify::{StreamEvent, SyncNotifier};
use crate::room::stream::StreamPositions;

/// Most events read per advance. A bigger jump (a large batch from another server) is told
/// to every waiting sync as "read everything again" instead.
const MAX_EVENTS_PER_READ: usize = 10_000;

/// Longest pause between retries when the database fails.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Start the feed for `notifier`, once: the first caller starts it, the others return.
pub fn ensure_started(db: &PgPool, stream: &Arc<StreamPositions>, notifier: &SyncNotifier) {
    if notifier.published().is_some() {
        return;
    }
    let mut rx = stream.subscribe();
    let start = *rx.borrow_and_update();
    if notifier.start_at(start) {
        tokio::spawn(run(db.clone(), stream.clone(), rx, notifier.clone(), start));
    }
}

async fn run(
    db: PgPool,
    stream: Arc<StreamPositions>,
    mut rx: watch::Receiver<i64>,
    notifier: SyncNotifier,
    start: i64,
) {
    let mut published = start;
    let mut delay = Duration::from_millis(50);
    loop {
        let upto = *rx.borrow_and_update();
        if upto > published {
            let limit = i64::try_from(MAX_EVENTS_PER_READ + 1).unwrap_or(i64::MAX);
            // Events this process committed are told by the append path; the database is
            // read only when that record is incomplete.
            let read = match stream.take_told(published, upto) {
                Some(told) => Ok(told),
                None => db::sync::stream_events(&db, published, upto, limit).await,
            };
            match read {
                Ok(rows) => {
                    let overflow = rows.len() > MAX_EVENTS_PER_READ;
                    let events: Vec<StreamEvent> = rows
                        .into_iter()
                        .take(MAX_EVENTS_PER_READ)
                        .map(|(position, room_nid, member)| StreamEvent {
                            position,
                            room_nid,
                            member,
                        })
                        .collect();
                    notifier.publish_events(&events, upto, overflow);
                    published = upto;
                    delay = Duration::from_millis(50);
                }
                Err(e) => {
                    if db.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "reading the event stream for sync wake-ups failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    continue;
                }
            }
        }
        // Ends when the stream is gone (the server is shutting down).
        if rx.changed().await.is_err() {
            return;
        }
    }
}

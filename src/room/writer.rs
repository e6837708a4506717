//! Group commit across rooms. Plain batches (new local messages, see `persist::is_plain`)
//! of different rooms are written together: one task takes every batch waiting, joins them
//! into one statement and commits them with one round trip and one WAL flush, while the next
//! batches gather behind it. Within a room, batches already gather behind its lock
//! (`send.rs`); this does the same for sends spread over many rooms.
//!
//! The task owns the write, so a client that hangs up while its send is being stored cannot
//! leave a half-told stream: the positions of a written batch are marked committed by the
//! task that wrote them.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::Instrument;

use super::stream::InFlight;
use crate::db::append::{LinkRows, link_rows};
use crate::db::lease::Leases;

/// Most rooms joined into one statement.
const MAX_ROOMS: usize = 64;

/// One room's plain batch, ready to write.
pub struct Write {
    pub room_nid: i64,
    pub rows: LinkRows,
    /// The batch's stream positions, committed once it is written.
    pub positions: Vec<InFlight>,
}

struct Job {
    write: Write,
    done: oneshot::Sender<Result<(), sqlx::Error>>,
}

pub struct PlainWriter {
    db: Leases,
    ours: String,
    /// Told when a write queued something for other servers.
    outbox: Arc<Notify>,
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl PlainWriter {
    pub fn new(db: Leases, ours: String, outbox: Arc<Notify>) -> PlainWriter {
        PlainWriter {
            db,
            ours,
            outbox,
            queue: OnceLock::new(),
        }
    }

    /// Store the batch (with others waiting at the same moment); nothing of it is written
    /// if this fails.
    pub async fn write(&self, write: Write) -> Result<(), sqlx::Error> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(
                self.db.clone(),
                self.ours.clone(),
                self.outbox.clone(),
                rx,
            ));
            tx
        });
        let (done, answer) = oneshot::channel();
        if queue.send(Job { write, done }).is_err() {
            return Err(sqlx::Error::PoolClosed);
        }
        answer.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

/// The writing task: everything waiting goes in the next statement.
async fn run(db: Leases, ours: String, outbox: Arc<Notify>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_ROOMS
            && let Ok(job) = rx.try_recv()
        {
            jobs.push(job);
        }
        let span = tracing::debug_span!("plain_write", rooms = jobs.len());
        if write_jobs(&db, &ours, jobs).instrument(span).await {
            outbox.notify_one();
        }
    }
}

/// Write the jobs' batches; whether anything was queued for other servers.
async fn write_jobs(db: &Leases, ours: &str, jobs: Vec<Job>) -> bool {
    if jobs.len() > 1 {
        let mut all = LinkRows::default();
        for j in &jobs {
            all.append(&j.write.rows);
        }
        match link_rows(db, ours, &all).await {
            Ok(queued) => {
                for job in jobs {
                    finish(job, Ok(()));
                }
                return queued > 0;
            }
            // One room's batch may be stale (its tip moved, a retried transaction): each
            // alone, so that only its own fails.
            Err(e) => {
                tracing::debug!(error = %e, "joint write failed; writing each room alone");
            }
        }
    }
    let mut any = false;
    for job in jobs {
        let result = link_rows(db, ours, &job.write.rows).await;
        any |= matches!(result, Ok(q) if q > 0);
        finish(job, result.map(|_| ()));
    }
    any
}

fn finish(job: Job, result: Result<(), sqlx::Error>) {
    if result.is_ok() {
        let room = job.write.room_nid;
        for p in job.write.positions {
            p.committed(room, None);
        }
    }
    let _ = job.done.send(result);
}

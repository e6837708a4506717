//! The outbound queue: one worker per destination with anything queued, one transaction in
//! flight per destination, up to 50 PDUs and 100 EDUs each. The queue lives in Postgres
//! (written in the same transaction as the event), so a restart or an outage loses nothing:
//! a destination that comes back receives everything it missed, in order. A destination that
//! fails is retried with exponential backoff up to a configured cap; any request it sends us
//! proves it is back and retries at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::api::federation::transactions::send_transaction_message;
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName};
use serde_json::value::RawValue;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::client::FederationClient;
use crate::db;
use crate::error::Result;

const MAX_PDUS: i64 = 50;
const MAX_EDUS: i64 = 100;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Destination {
    in_flight: bool,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
}

pub struct Sender {
    db: PgPool,
    client: Arc<FederationClient>,
    ours: OwnedServerName,
    max_backoff: Duration,
    /// How often the queue is looked at even without a wake-up.
    idle_check: Duration,
    wake: Notify,
    destinations: Mutex<HashMap<String, Destination>>,
}

impl Sender {
    pub fn new(
        db: PgPool,
        client: Arc<FederationClient>,
        ours: OwnedServerName,
        max_backoff: Duration,
        idle_check: Duration,
    ) -> Arc<Self> {
        Arc::new(Sender {
            db,
            client,
            ours,
            max_backoff: max_backoff.max(FIRST_BACKOFF),
            idle_check,
            wake: Notify::new(),
            destinations: Mutex::new(HashMap::new()),
        })
    }

    /// Something was queued: look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// `server` sent us a request, so it is up: retry it at once if it was backed off.
    pub fn destination_alive(&self, server: &ServerName) {
        let mut d = self.destinations.lock();
        if let Some(dest) = d.get_mut(server.as_str())
            && dest.retry_at.is_some()
        {
            dest.retry_at = None;
            dest.backoff = None;
            drop(d);
            self.wake();
        }
    }

    /// Queue an EDU for some destinations and send it soon.
    pub async fn queue_edu(
        &self,
        destinations: &[&str],
        edu_type: &str,
        content: &serde_json::Value,
    ) -> Result<()> {
        let destinations: Vec<&str> = destinations
            .iter()
            .copied()
            .filter(|d| *d != self.ours.as_str())
            .collect();
        if destinations.is_empty() {
            return Ok(());
        }
        let edu = serde_json::json!({ "edu_type": edu_type, "content": content }).to_string();
        db::federation::enqueue_edu(&self.db, &destinations, &edu).await?;
        self.wake();
        Ok(())
    }

    /// Run until the process ends: wake when events are queued (`events`, told by the
    /// append path only when a write queued some), on queued EDUs and when retries fall due,
    /// and start a worker for each destination that has work.
    pub fn start(self: &Arc<Self>, events: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                this.dispatch().await;
                let next_retry = this.next_retry_in();
                tokio::select! {
                    _ = stop.changed() => return,
                    () = events.notified() => {}
                    () = this.wake.notified() => {}
                    () = tokio::time::sleep(next_retry) => {}
                }
            }
        });
    }

    fn next_retry_in(&self) -> Duration {
        let now = Instant::now();
        self.destinations
            .lock()
            .values()
            .filter_map(|d| d.retry_at)
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(self.idle_check)
            .min(self.idle_check)
    }

    async fn dispatch(self: &Arc<Self>) {
        let pending = match db::federation::pending_destinations(&self.db).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the federation queue");
                return;
            }
        };
        let now = Instant::now();
        for dest in pending {
            {
                let mut all = self.destinations.lock();
                let d = all.entry(dest.clone()).or_default();
                if d.in_flight || d.retry_at.is_some_and(|t| t > now) {
                    continue;
                }
                d.in_flight = true;
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.drain(&dest).await;
                if let Some(d) = this.destinations.lock().get_mut(&dest) {
                    d.in_flight = false;
                }
                // Events queued while this worker ran are picked up on the next pass.
                this.wake();
            });
        }
    }

    /// Send a destination's queue, transaction after transaction, until it is empty or the
    /// destination fails.
    async fn drain(&self, dest: &str) {
        let Ok(server) = OwnedServerName::try_from(dest) else {
            tracing::warn!(
                destination = dest,
                "dropping queue for an invalid server name"
            );
            if let Err(e) = db::federation::clear_destination(&self.db, dest).await {
                tracing::warn!(error = %e, "cannot clear the federation queue");
            }
            return;
        };
        loop {
            match self.send_one(&server).await {
                Ok(true) => {
                    if let Some(d) = self.destinations.lock().get_mut(dest) {
                        d.backoff = None;
                        d.retry_at = None;
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    let mut all = self.destinations.lock();
                    let d = all.entry(dest.to_owned()).or_default();
                    let backoff = d
                        .backoff
                        .map_or(FIRST_BACKOFF, |b| (b * 2).min(self.max_backoff));
                    d.backoff = Some(backoff);
                    d.retry_at = Some(Instant::now() + backoff);
                    tracing::info!(destination = dest, error = %e, retry_in = ?backoff, "transaction failed");
                    return;
                }
            }
        }
    }

    /// Send the next transaction; false when there was nothing to send.
    #[tracing::instrument(name = "federation_transaction", skip(self), fields(destination = %server))]
    async fn send_one(&self, server: &ServerName) -> std::result::Result<bool, String> {
        let mut conn = self.db.acquire().await.map_err(|e| e.to_string())?;
        let batch = db::federation::next_batch(&mut conn, server.as_str(), MAX_PDUS, MAX_EDUS)
            .await
            .map_err(|e| e.to_string())?;
        drop(conn);
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(false);
        };
        // Rows leave the queue only once answered, and new rows always sort after old ones,
        // so a retry of the same rows carries the same transaction ID.
        let txn_id = OwnedTransactionId::from(format!(
            "{}_{}_{}",
            first.position,
            last.position,
            batch.len()
        ));
        let mut pdus: Vec<Box<RawValue>> = Vec::new();
        let mut edus = Vec::new();
        for q in &batch {
            if let Some(json) = &q.pdu {
                match RawValue::from_string(json.clone()) {
                    Ok(raw) => pdus.push(raw),
                    Err(e) => {
                        tracing::warn!(position = q.position, error = %e, "unreadable queued PDU dropped")
                    }
                }
            } else if let Some(edu) = &q.edu {
                match RawValue::from_string(edu.clone()) {
                    Ok(raw) => edus.push(Raw::from_json(raw)),
                    Err(e) => {
                        tracing::warn!(position = q.position, error = %e, "unreadable queued EDU dropped")
                    }
                }
            }
        }
        let (n_pdus, n_edus) = (pdus.len(), edus.len());
        let mut request = send_transaction_message::v1::Request::new(
            txn_id.clone(),
            self.ours.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = edus;
        let response = self
            .client
            .send(server, request)
            .await
            .map_err(|e| e.to_string())?;
        for (event_id, result) in &response.pdus {
            if let Err(e) = result {
                tracing::info!(%event_id, error = %e, "destination refused a PDU");
            }
        }
        let positions: Vec<i64> = batch.iter().map(|q| q.position).collect();
        db::federation::remove(&self.db, &positions)
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(%txn_id, pdus = n_pdus, edus = n_edus, "transaction sent");
        Ok(true)
    }
}

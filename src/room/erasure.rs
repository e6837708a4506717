//! Erased users (deactivated with `erase: true`): their events stay in the graph, but are
//! served redacted to users who were not in the room when they were sent and to other
//! servers, as Synapse serves them (see `visibility`).
//!
//! The set is small (erasure is rare and never undone) and read on every page of events,
//! so it is held in memory: grown by each erasure here, and read again from the table at
//! most a minute after it was last read, so that another process's erasures take effect
//! here within a minute.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ruma::UserId;

use super::Rooms;
use crate::db;
use crate::error::{Error, Result};

/// How stale the set may be before it is read again.
const REFRESH: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct ErasedUsers {
    /// When the set was last read from the table. A reader that finds it fresh takes no
    /// lock but this one's read side; one stale reader at a time reads the table.
    loaded: RwLock<Option<Instant>>,
    reload: tokio::sync::Mutex<()>,
    users: RwLock<HashSet<String>>,
}

impl ErasedUsers {
    fn fresh(&self) -> Result<bool> {
        let loaded = self
            .loaded
            .read()
            .map_err(|_| Error::internal("erased users lock poisoned"))?;
        Ok(loaded.is_some_and(|at| at.elapsed() < REFRESH))
    }
}

impl Rooms {
    /// Erase `user`: from now on their events come redacted to later members and to other
    /// servers. Called when the account is deactivated with `erase: true`.
    pub async fn erase_user(&self, user: &UserId) -> Result<()> {
        self.erased_loaded().await?;
        let now = i64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
        db::erasure::mark(self.db(), user.as_str(), now).await?;
        self.erased
            .users
            .write()
            .map_err(|_| Error::internal("erased users lock poisoned"))?
            .insert(user.to_string());
        tracing::info!(%user, "user erased");
        Ok(())
    }

    /// Which of these senders are erased.
    pub(crate) async fn erased_among<'a>(
        &self,
        senders: impl Iterator<Item = &'a str>,
    ) -> Result<HashSet<String>> {
        self.erased_loaded().await?;
        let users = self
            .erased
            .users
            .read()
            .map_err(|_| Error::internal("erased users lock poisoned"))?;
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(senders
            .filter(|s| users.contains(*s))
            .map(str::to_owned)
            .collect())
    }

    async fn erased_loaded(&self) -> Result<()> {
        if self.erased.fresh()? {
            return Ok(());
        }
        let _reloading = self.erased.reload.lock().await;
        // Another reader may have read the table while this one waited.
        if self.erased.fresh()? {
            return Ok(());
        }
        let all = db::erasure::all(self.db()).await?;
        self.erased
            .users
            .write()
            .map_err(|_| Error::internal("erased users lock poisoned"))?
            .extend(all);
        *self
            .erased
            .loaded
            .write()
            .map_err(|_| Error::internal("erased users lock poisoned"))? = Some(Instant::now());
        Ok(())
    }
}

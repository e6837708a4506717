//! Event numbers taken from Postgres's sequence a block at a time, so that a batch of new
//! local events knows its numbers before it is written and can be written in one statement
//! (see `persist::persist_plain`). Numbers taken and not used leave gaps, which nothing
//! minds: event numbers only need to be unique.

use std::collections::VecDeque;

use parking_lot::Mutex;
use sqlx::PgPool;

use crate::db;
use crate::error::{Error, Result};

/// How many numbers one refill takes.
const BLOCK: usize = 256;

#[derive(Default)]
pub struct EventNids {
    free: Mutex<VecDeque<i64>>,
}

impl EventNids {
    /// `n` unused event numbers.
    pub async fn take(&self, db: &PgPool, n: usize) -> Result<Vec<i64>> {
        // Concurrent takers may drain a refill before this one uses it; a few refills
        // always suffice.
        for _ in 0..8 {
            {
                let mut free = self.free.lock();
                if free.len() >= n {
                    return Ok(free.drain(..n).collect());
                }
            }
            let block = db::append::nid_block(db, n.max(BLOCK)).await?;
            self.free.lock().extend(block);
        }
        Err(Error::internal("could not take event numbers"))
    }
}

//! Connections lent for one statement at a time, without the pool's bookkeeping.
//!
//! sqlx's pool pings Postgres every time a connection goes back to it (a round trip and a
//! wake-up of the backend per statement, with no way to turn it off): on the hottest reads
//! that is as much work as the statement itself. A connection lent from here goes back only
//! when its statement finished and the protocol is known to be in step (success, or an
//! error Postgres answered the statement with); after anything else (a broken socket, a
//! session Postgres ended, a request dropped half way through) it is closed instead. That is what the ping guards against, without
//! paying for it when nothing went wrong.
//!
//! `&Leases` is an executor like `&PgPool`, so every function under `db` taking an
//! `impl PgExecutor` runs on it unchanged. Transactions stay on the pool.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::postgres::{
    PgConnectOptions, PgDatabaseError, PgQueryResult, PgRow, PgSeverity, PgStatement, PgTypeInfo,
};
use sqlx::{
    ConnectOptions, Connection, Describe, Either, Error, Execute, Executor, PgConnection, Postgres,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A set of connections to one database, at most `max` open at once, opened on first use.
#[derive(Clone)]
pub struct Leases(Arc<Inner>);

struct Inner {
    options: PgConnectOptions,
    idle: parking_lot::Mutex<Vec<PgConnection>>,
    permits: Arc<Semaphore>,
}

/// One lent connection. Dropped without [`Lease::settle`], the connection is closed.
pub struct Lease {
    conn: Option<PgConnection>,
    home: Leases,
    _permit: OwnedSemaphorePermit,
}

impl Leases {
    pub fn new(options: PgConnectOptions, max: usize) -> Leases {
        Leases(Arc::new(Inner {
            options,
            idle: parking_lot::Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1))),
        }))
    }

    /// A connection: an idle one, or a new one if none is idle and fewer than `max` are
    /// lent; otherwise waits for one to come back. Gives up after
    /// [`super::ACQUIRE_TIMEOUT`], as the pool does, so a stuck database fails requests
    /// instead of holding them forever.
    pub async fn lease(&self) -> Result<Lease, Error> {
        tokio::time::timeout(super::ACQUIRE_TIMEOUT, self.lease_now())
            .await
            .map_err(|_| Error::PoolTimedOut)?
    }

    async fn lease_now(&self) -> Result<Lease, Error> {
        let permit = self
            .0
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::PoolClosed)?;
        let idle = self.0.idle.lock().pop();
        let conn = match idle {
            Some(c) => c,
            None => self.0.options.connect().await?,
        };
        Ok(Lease {
            conn: Some(conn),
            home: self.clone(),
            _permit: permit,
        })
    }

    /// Open up to `n` connections now, side by side, so that the first requests do not wait
    /// for them. One that fails to open is left for the first request to open.
    pub async fn open(&self, n: usize) {
        let n = n.min(self.0.permits.available_permits());
        let opened = futures::future::join_all((0..n).map(|_| self.0.options.connect())).await;
        let mut live = Vec::with_capacity(n);
        for result in opened {
            match result {
                Ok(conn) => live.push(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "could not open a database connection ahead of use")
                }
            }
        }
        self.0.idle.lock().extend(live);
    }

    /// Lend no more, and close the idle connections politely (lent ones close when they
    /// come back).
    pub async fn close(&self) {
        self.0.permits.close();
        let idle = std::mem::take(&mut *self.0.idle.lock());
        for conn in idle {
            let _ = conn.close().await;
        }
    }

    /// Connections waiting to be lent (for tests).
    pub fn idle(&self) -> usize {
        self.0.idle.lock().len()
    }
}

impl Lease {
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until it is settled")
    }

    /// Give the connection back if `result` shows the statement ran to its end: success,
    /// or an error the database answered with (the connection then waits for the next
    /// statement as usual). Any other failure may have left a reply half read: the
    /// connection is closed. When the connection is dead (its socket failed, or Postgres
    /// ended the session, as it does to every client when it restarts), the idle ones most
    /// likely are too: they are closed with it, which costs one failed statement instead of
    /// one per idle connection.
    pub fn settle<T>(mut self, result: &Result<T, Error>) {
        match result {
            Err(e) if session_ended(e) => self.home.0.idle.lock().clear(),
            Ok(_) | Err(Error::Database(_)) | Err(Error::RowNotFound) => {
                if !self.home.0.permits.is_closed()
                    && let Some(conn) = self.conn.take()
                {
                    self.home.0.idle.lock().push(conn);
                }
            }
            Err(_) => {}
        }
    }
}

/// Whether `e` means the connection is gone: its socket failed, or Postgres ended the
/// session (an error of severity FATAL or PANIC is the last thing a session sends).
fn session_ended(e: &Error) -> bool {
    match e {
        Error::Io(_) => true,
        Error::Database(d) => d
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|d| matches!(d.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        _ => false,
    }
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases")
            .field("idle", &self.0.idle.lock().len())
            .field("available", &self.0.permits.available_permits())
            .finish()
    }
}

/// Runs `$run` (an expression over the connection named `$conn`) on a lent connection and
/// settles the lease by its result.
macro_rules! on_lease {
    ($leases:expr, |$conn:ident| $run:expr) => {{
        let leases = $leases.clone();
        Box::pin(async move {
            let mut lease = leases.lease().await?;
            let $conn = lease.conn();
            let result = $run.await;
            lease.settle(&result);
            result
        })
    }};
}

impl<'p> Executor<'p> for &'_ Leases {
    type Database = Postgres;

    /// The whole result is read before it is handed on, so the connection goes back as soon
    /// as the statement is done; the statements run here return a page of rows at most.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let all: BoxFuture<'e, Result<Vec<_>, Error>> =
            on_lease!(self, |conn| conn.fetch_many(query).try_collect::<Vec<_>>());
        stream::once(all)
            .map_ok(|rows| stream::iter(rows.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        on_lease!(self, |conn| conn.fetch_optional(query))
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, Error>> {
        on_lease!(self, |conn| conn.prepare_with(sql, parameters))
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, Error>> {
        on_lease!(self, |conn| conn.describe(sql))
    }
}

//! All SQL lives under this module. Functions take an executor (`impl PgExecutor`) or a
//! `&mut Transaction` so that callers compose transactions; nothing here knows about HTTP.

pub mod account_data;
pub mod append;
pub mod devices;
pub mod directory;
pub mod e2e;
pub mod embedded;
pub mod erasure;
pub mod events;
pub mod federation;
pub mod filters;
pub mod graph;
pub mod lease;
pub mod media;
pub mod openid;
pub mod planner;
pub mod push;
pub mod reads;
pub mod receipts;
pub mod redactions;
pub mod relations;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod sliding;
pub mod spaces;
pub mod state;
pub mod sync;
pub mod uiaa;
pub mod user_directory;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// The schema migrations, embedded in the binary and applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement may wait for a connection before it fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Begin a transaction on a connection of `pool`, in a way a caller dropped half way (a
/// request whose client went away) cannot undo. `Pool::begin` of sqlx 0.8 sends BEGIN
/// before it counts the transaction, so dropped while Postgres answers, it hands the pool
/// back a connection inside an open transaction: every statement later run on it stays
/// uncommitted, its locks held, until some unrelated COMMIT (or is lost with the
/// connection). Here BEGIN runs in a task of its own, which finishes whatever happens to
/// the caller; a transaction nobody takes is then dropped, and rolled back, as usual.
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
}

/// Open a pool to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500));
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // By default every checkout of an idle connection first pings the server: a second
        // round trip for every statement run on the pool, the largest share of a send's or a
        // page's time. A connection that broke while idle fails its statement instead, which
        // the caller reports like any database error, and the pool drops it.
        .test_before_acquire(false)
        .connect_with(options)
        .await
}

/// Whether the database answers a trivial statement.
pub async fn ping(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(db).await.map(|_| ())
}

/// Connections for short reads beside `db` (see [`lease`]), as many as `db` may open.
pub fn read_leases(db: &PgPool) -> lease::Leases {
    let max = db.options().get_max_connections() as usize;
    lease::Leases::new((*db.connect_options()).clone(), max)
}

/// The one connection plain batches of new messages are written on (`room::writer`, a
/// single task). That statement is large (a dozen data-modifying CTEs over parameter
/// arrays) and Postgres would plan each execution afresh, which costs more than running it;
/// it looks rows up by key only, so one generic plan serves every execution. Everything else
/// stays on `db`, where Postgres chooses per statement: the append path's transactions ran at
/// half the speed with generic plans (measured with the load tool: federation ingest and
/// room creation), and reads may need plans that follow the values. Connects on first use.
pub fn write_lease(db: &PgPool) -> lease::Leases {
    let options = (*db.connect_options())
        .clone()
        .options([("plan_cache_mode", "force_generic_plan")]);
    lease::Leases::new(options, 1)
}

/// Bring the schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether `e` is a unique violation of the named constraint.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}

//! The test database harness: every test gets a fresh, migrated, empty database of its own.
//!
//! The server is `TEST_POSTGRES_URL` (an admin URL) when set. Otherwise it is a test cluster
//! under the cargo target directory, started by whichever test process needs it first and then
//! shared by all test processes until `scripts/test` stops it (a plain `cargo test` leaves it
//! running for the next run). The schema is migrated once per set of migrations into a template
//! database, and each test's database is a copy of that template, which takes a fraction of a
//! second. The same idea as Synapse's template database and Dendrite's
//! `PrepareDBConnectionString`.
//!
//! Every `#[tokio::test]` has a runtime of its own and sqlx pools are bound to the runtime that
//! made them, so nothing here keeps a pool across calls: only strings live in statics.

// Each test binary uses its own subset of the harness.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal;
use nix::unistd::{Pid, Uid};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;
use trellis::db::embedded::ManagedPostgres;

/// Serialises template creation among all processes sharing the server.
const TEMPLATE_LOCK_KEY: i64 = 0x7472_656c_6c69_7301;
/// Where the harness records the test cluster it started, for `scripts/test` to stop it.
const CLUSTER_POINTER: &str = "test-pg.dir";

struct Server {
    admin_url: String,
    /// Our own test cluster (as opposed to `TEST_POSTGRES_URL`): only then may this harness
    /// drop databases left by earlier test processes, because only then are all users local.
    managed: bool,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A fresh, migrated, empty database for one test: its URL.
pub async fn fresh_database() -> String {
    let server = server().await;
    let template = TEMPLATE.get_or_init(|| prepare_template(server)).await;
    // The pid lets a later process tell which databases are abandoned.
    let name = format!("test_{}_{:016x}", std::process::id(), rand::random::<u64>());
    let mut admin = PgConnection::connect(&server.admin_url)
        .await
        .expect("connect to the test Postgres server");
    // Nobody connects to the template (ALLOW_CONNECTIONS false), so concurrent copies of it
    // never meet "source database is being accessed by other users".
    sqlx::query(&format!(
        r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#
    ))
    .execute(&mut admin)
    .await
    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = admin.close().await;
    with_database(&server.admin_url, &name)
}

/// A superuser URL for the `postgres` database of the test server.
pub async fn admin_url() -> String {
    server().await.admin_url.clone()
}

async fn server() -> &'static Server {
    SERVER.get_or_init(start_server).await
}

async fn start_server() -> Server {
    if let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") {
        return Server {
            admin_url,
            managed: false,
        };
    }
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&target_tmp).expect("create the cargo target tmp dir");
    let dir = cluster_dir(&target_tmp);

    // One process starts the cluster; the others wait here and then find it running.
    let lock_path = target_tmp.join("test-pg.lock");
    let lock = tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
        Flock::lock(file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock {}: {e}", lock_path.display()))
    })
    .await
    .expect("lock task");
    let pg = ManagedPostgres::start_for_tests(&dir)
        .await
        .unwrap_or_else(|e| panic!("cannot start the test Postgres in {}: {e}", dir.display()));
    let admin_url = pg.url("postgres");
    // Leave it running for the rest of this process and for the test processes after it.
    std::mem::forget(pg);
    let canonical = fs::canonicalize(&dir).unwrap_or(dir);
    fs::write(
        target_tmp.join(CLUSTER_POINTER),
        canonical.to_string_lossy().as_bytes(),
    )
    .expect("record the test cluster directory");
    drop(lock);
    Server {
        admin_url,
        managed: true,
    }
}

/// `<target>/tmp/pg`, unless Postgres could not work there: as root the cluster runs as
/// another user, who must be able to pass through every parent directory (a checkout under
/// /root does not allow that), and a Unix socket path must stay under 108 bytes. Then a
/// directory in the system temp dir, named after the target dir so each checkout has its own.
fn cluster_dir(target_tmp: &Path) -> PathBuf {
    let preferred = target_tmp.join("pg");
    let socket_len = preferred.join(".s.PGSQL.5432").as_os_str().len();
    let reachable = !Uid::effective().is_root()
        || target_tmp
            .ancestors()
            .all(|dir| fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
    if reachable && socket_len <= 100 {
        return preferred;
    }
    let digest = Sha256::digest(target_tmp.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!("trellis-test-pg-{}", &hex::encode(digest)[..12]))
}

/// Migrates the template database for the current migrations, once per process; every
/// process sharing the server agrees on it through an advisory lock.
async fn prepare_template(server: &Server) -> String {
    let template = format!("trellis_tpl_{}", migrations_hash());
    // Built under another name and renamed when complete, so a half-migrated template left by
    // a killed process is never copied.
    let building = format!("{template}_wip");
    let mut admin = PgConnection::connect(&server.admin_url)
        .await
        .expect("connect to the test Postgres server");
    if server.managed {
        drop_abandoned_databases(&mut admin).await;
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .expect("take the template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .expect("look for the template database");
    if !exists {
        for sql in [
            format!(r#"DROP DATABASE IF EXISTS "{building}""#),
            format!(r#"CREATE DATABASE "{building}""#),
        ] {
            sqlx::query(&sql)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let pool = trellis::db::connect(&with_database(&server.admin_url, &building), 2)
            .await
            .expect("connect to the template database");
        trellis::db::migrate(&pool)
            .await
            .expect("migrate the template database");
        // No session may remain on a database that is renamed or copied. Pool::close can miss
        // a connection that is being returned to the pool at that moment (sqlx 0.8), so end
        // whatever is left; only this process, holding the lock, uses the database.
        pool.close().await;
        drop(pool);
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&building)
        .execute(&mut admin)
        .await
        .expect("end sessions on the template database");
        for sql in [
            format!(r#"ALTER DATABASE "{building}" RENAME TO "{template}""#),
            format!(r#"ALTER DATABASE "{template}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"#),
        ] {
            sqlx::query(&sql)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .expect("release the template lock");
    let _ = admin.close().await;
    template
}

/// A short hash of the migrations compiled into trellis, the ones `migrate` applies: a template
/// is never reused once a migration changes.
fn migrations_hash() -> String {
    let mut hasher = Sha256::new();
    for migration in trellis::db::MIGRATOR.iter() {
        hasher.update(migration.version.to_le_bytes());
        hasher.update(&migration.checksum);
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

/// Drops the test databases of test processes that have exited, so that repeated `cargo test`
/// runs do not fill the disk (each database holds a few MB of catalogs).
async fn drop_abandoned_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 'test\_%'")
            .fetch_all(&mut *admin)
            .await
            .expect("list test databases");
    for name in names {
        let Some(pid) = name
            .split('_')
            .nth(1)
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if signal::kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
            continue;
        }
        // Another process may be dropping the same one: IF EXISTS, and errors do not matter.
        let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}""#))
            .execute(&mut *admin)
            .await;
    }
}

/// `url` with its database (the URL path) replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

//! The managed Postgres: with no `database.url`, Trellis runs a Postgres cluster of its own under
//! the data directory, from the Postgres server binaries installed on the machine.
//!
//! The cluster listens only on a Unix socket inside its own directory (mode 0700) and trusts
//! local connections: only the user that owns the cluster (and root) can reach that socket, and
//! no TCP port is opened. Postgres refuses to run as root, so when Trellis runs as root the
//! cluster runs as the `postgres` system user, or `nobody` when there is none.
//!
//! The postmaster runs in its own process group so that a Ctrl-C in a terminal reaches only
//! Trellis, which then finishes its requests before stopping the database.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};

use setup::{
    Binaries, RunAs, check_reachable, choose_run_as, find_binaries, initdb, read_cluster_version,
    resolve_dir,
};

mod setup;

/// Only names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;
/// The cluster's superuser, fixed so the URL does not depend on which OS user ran initdb.
const SUPERUSER: &str = "postgres";
/// The database Trellis itself uses.
const DATABASE: &str = "trellis";
/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
const LOG_FILE: &str = "postgres.log";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Fast shutdown ends sessions and writes a checkpoint; give the checkpoint time to finish.
const FAST_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Immediate shutdown (SIGQUIT) skips the checkpoint; the next start replays the WAL.
const IMMEDIATE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the managed Postgres could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "Postgres server binaries (initdb, postgres) were not found on PATH or in \
         /usr/lib/postgresql/*/bin. Install them with `apt-get install postgresql` \
         (Debian/Ubuntu), or set database.url to use an existing server."
    )]
    BinariesNotFound,
    #[error(
        "the Postgres cluster in {dir} was created by Postgres {cluster}, but only Postgres \
         {found} server binaries were found. Install the Postgres {cluster} server binaries \
         (`apt-get install postgresql-{cluster}` on Debian/Ubuntu), or upgrade the cluster with \
         pg_upgrade."
    )]
    VersionMismatch {
        dir: PathBuf,
        cluster: String,
        found: String,
    },
    #[error(
        "{0} exists and is not empty, but it is not a Postgres cluster (it has no PG_VERSION); \
         move it away or choose another data directory"
    )]
    NotACluster(PathBuf),
    #[error("the Postgres directory {0:?} is not a valid UTF-8 path")]
    NonUtf8Path(PathBuf),
    #[error(
        "the Postgres socket path {path} is {len} bytes long, more than the {MAX_SOCKET_PATH} \
         a Unix socket allows; choose a shorter data directory or set database.url"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error(
        "Postgres refuses to run as root, and neither a `postgres` nor a `nobody` user exists \
         to run it; create a `postgres` system user or run Trellis as an unprivileged user"
    )]
    NoUnprivilegedUser,
    #[error(
        "the Postgres cluster in {0} is owned by root, but Postgres refuses to run as root; \
         give it to the user that should run Postgres (e.g. `chown -R postgres: {0}`)"
    )]
    OwnedByRoot(PathBuf),
    #[error(
        "Postgres runs as user {user} (it refuses to run as root), but {user} cannot reach \
         {path}: {blocker} is not searchable by that user. Allow it (e.g. `chmod o+x {blocker}`) \
         or put the data directory elsewhere."
    )]
    NotReachable {
        user: String,
        path: PathBuf,
        blocker: PathBuf,
    },
    #[error("initdb failed ({status}):\n{output}")]
    Initdb { status: ExitStatus, output: String },
    #[error("Postgres exited during startup ({status}); the end of {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "Postgres did not accept connections within {}s (last error: {last_error}); \
         the end of {log}:\n{tail}", START_TIMEOUT.as_secs()
    )]
    StartTimeout {
        last_error: String,
        log: PathBuf,
        tail: String,
    },
    #[error("Postgres (pid {0}) is still running after SIGKILL")]
    StillRunning(i32),
    #[error("cannot create the database {database}: {source}")]
    CreateDatabase {
        database: String,
        source: sqlx::Error,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Os { context: String, source: Errno },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

fn os_error(context: impl Into<String>) -> impl FnOnce(Errno) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Os { context, source }
}

/// Settings that differ between a real server and a test cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Production,
    /// Durability off (tests never need the data after a crash) and room for many pools.
    Tests,
}

/// A running Postgres cluster managed by Trellis. Dropping it without [`ManagedPostgres::stop`]
/// still shuts the server down (blocking the current thread for up to a few seconds).
pub struct ManagedPostgres {
    /// Canonical path of the cluster (its PGDATA); also holds the socket.
    dir: PathBuf,
    /// `None` once stopped.
    postmaster: Option<Postmaster>,
    /// How it was started, to start it again the same way.
    profile: Profile,
}

enum Postmaster {
    /// Started by us: a child process to reap.
    Child { child: Child, pid: Pid },
    /// Found already running on this directory (left by an earlier process) and taken over.
    Adopted(Pid),
}

impl Postmaster {
    fn pid(&self) -> Pid {
        match self {
            Postmaster::Child { pid, .. } | Postmaster::Adopted(pid) => *pid,
        }
    }

    /// `Some(description of how it ended)` once the postmaster is gone.
    fn exit_status(&mut self) -> Result<Option<String>, EmbeddedError> {
        match self {
            Postmaster::Child { child, .. } => child
                .try_wait()
                .map(|status| status.map(|s| s.to_string()))
                .map_err(io_error("cannot check on the Postgres process")),
            Postmaster::Adopted(pid) => {
                Ok(process_gone(*pid).then(|| "exit status unknown".to_string()))
            }
        }
    }

    /// Polls until the process is gone or `timeout` passes; true when gone.
    fn wait_exit(&mut self, timeout: Duration) -> Result<bool, EmbeddedError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exit_status()?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Whether `pid` no longer runs. A zombie counts as gone: its parent may be another handle in
/// this process that has not reaped it yet, or an init that does not reap.
fn process_gone(pid: Pid) -> bool {
    match signal::kill(pid, None) {
        Err(Errno::ESRCH) => true,
        Ok(()) | Err(_) => is_zombie(pid),
    }
}

fn is_zombie(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name, which may itself hold ')'.
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(false)
}

impl ManagedPostgres {
    /// Initialise (first start: initdb) and start a Postgres cluster whose data lives in `dir`
    /// (e.g. data_dir/postgres), listening only on a Unix socket inside `dir`, never on TCP.
    /// Waits until it accepts connections and creates the database `trellis` if it is missing.
    /// A postmaster already running on `dir` (left by a process that was killed) is taken over.
    pub async fn start(dir: &Path) -> Result<ManagedPostgres, EmbeddedError> {
        Self::launch(dir, Profile::Production).await
    }

    /// [`ManagedPostgres::start`] tuned for tests: fsync, synchronous_commit and
    /// full_page_writes off, and max_connections = 400.
    pub async fn start_for_tests(dir: &Path) -> Result<ManagedPostgres, EmbeddedError> {
        Self::launch(dir, Profile::Tests).await
    }

    /// A sqlx connection URL for `database` over the cluster's Unix socket.
    pub fn url(&self, database: &str) -> String {
        // The port is explicit so that a PGPORT in the environment cannot rename the socket.
        format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{}?host={}&sslmode=disable",
            percent_encode(database, false),
            percent_encode(&self.dir.to_string_lossy(), true),
        )
    }

    /// Fast shutdown (SIGINT to the postmaster), escalating to SIGQUIT and then SIGKILL if it
    /// does not exit in time.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        let Some(postmaster) = self.postmaster.take() else {
            return Ok(());
        };
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || shutdown(postmaster, &dir))
            .await
            .map_err(|e| EmbeddedError::Io {
                context: "the Postgres shutdown task failed".into(),
                source: io::Error::other(e),
            })?
    }

    async fn launch(dir: &Path, profile: Profile) -> Result<ManagedPostgres, EmbeddedError> {
        let dir = resolve_dir(dir)?;
        if dir.to_str().is_none() {
            return Err(EmbeddedError::NonUtf8Path(dir));
        }
        let socket = dir.join(format!(".s.PGSQL.{PORT}"));
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(EmbeddedError::SocketPathTooLong { path: socket, len });
        }

        let cluster_version = read_cluster_version(&dir)?;
        let binaries = find_binaries(&dir, cluster_version.as_deref()).await?;
        let run_as = choose_run_as(&dir, cluster_version.is_some())?;
        if cluster_version.is_none() {
            initdb(&binaries, &dir, run_as.as_ref(), profile).await?;
        }

        let mut pg = match inspect_lock(&dir)? {
            Lock::Running(pid) => {
                tracing::info!(
                    dir = %dir.display(),
                    pid = pid.as_raw(),
                    "taking over the Postgres already running on this directory"
                );
                ManagedPostgres {
                    dir,
                    postmaster: Some(Postmaster::Adopted(pid)),
                    profile,
                }
            }
            lock => {
                if let Some(user) = &run_as {
                    check_reachable(&binaries.postgres, user, &dir).await?;
                }
                let stale_pid = match lock {
                    Lock::StalePid(pid) => Some(pid),
                    Lock::Free | Lock::Running(_) => None,
                };
                spawn_postmaster(&binaries, dir, run_as.as_ref(), profile, stale_pid)?
            }
        };
        // From here on an error drops `pg`, which stops the server again.
        pg.wait_ready().await?;
        pg.ensure_database(DATABASE).await?;
        tracing::info!(
            dir = %pg.dir.display(),
            pid = pg.pid().map_or(0, Pid::as_raw),
            "managed Postgres is ready"
        );
        Ok(pg)
    }

    fn pid(&self) -> Option<Pid> {
        self.postmaster.as_ref().map(Postmaster::pid)
    }

    /// What is wrong with the cluster, if anything: its postmaster has exited, or its socket
    /// is gone (nothing could connect any more, though Postgres runs on).
    pub fn fault(&mut self) -> Result<Option<String>, EmbeddedError> {
        let Some(postmaster) = self.postmaster.as_mut() else {
            return Ok(Some("not running".to_owned()));
        };
        if let Some(status) = postmaster.exit_status()? {
            return Ok(Some(format!("the postmaster exited ({status})")));
        }
        let socket = self.dir.join(format!(".s.PGSQL.{PORT}"));
        match socket.try_exists() {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(format!("its socket {} is gone", socket.display()))),
            Err(e) => Ok(Some(format!("its socket cannot be checked: {e}"))),
        }
    }

    /// Start the cluster again after [`ManagedPostgres::fault`] found it broken: what is
    /// left of the old server is stopped, and a new one started as at first.
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        if let Some(postmaster) = self.postmaster.take() {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || shutdown(postmaster, &dir))
                .await
                .map_err(|e| EmbeddedError::Io {
                    context: "the Postgres shutdown task failed".into(),
                    source: io::Error::other(e),
                })??;
        }
        let mut fresh = Self::launch(&self.dir, self.profile).await?;
        self.postmaster = fresh.postmaster.take();
        Ok(())
    }

    fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    async fn wait_ready(&mut self) -> Result<(), EmbeddedError> {
        let log = self.dir.join(LOG_FILE);
        let options = self.connect_options("postgres");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(postmaster) = self.postmaster.as_mut()
                && let Some(status) = postmaster.exit_status()?
            {
                self.postmaster = None;
                return Err(EmbeddedError::Exited {
                    status,
                    tail: log_tail(&log),
                    log,
                });
            }
            let last_error =
                match tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, options.connect()).await {
                    Ok(Ok(conn)) => {
                        // Closing politely only spares a line in the server log.
                        let _ = conn.close().await;
                        return Ok(());
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connection attempt timed out".to_string(),
                };
            if Instant::now() >= deadline {
                return Err(EmbeddedError::StartTimeout {
                    last_error,
                    tail: log_tail(&log),
                    log,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn ensure_database(&self, database: &str) -> Result<(), EmbeddedError> {
        let error = |source| EmbeddedError::CreateDatabase {
            database: database.to_string(),
            source,
        };
        let mut conn = self
            .connect_options("postgres")
            .connect()
            .await
            .map_err(error)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await
                .map_err(error)?;
        if !exists {
            let sql = format!("CREATE DATABASE {}", quote_identifier(database));
            match sqlx::query(&sql).execute(&mut conn).await {
                Ok(_) => tracing::info!(database, "created database"),
                // Another process sharing this cluster created it first.
                Err(e) if is_duplicate_database(&e) => {}
                Err(e) => return Err(error(e)),
            }
        }
        let _ = conn.close().await;
        Ok(())
    }
}

impl Drop for ManagedPostgres {
    fn drop(&mut self) {
        if let Some(postmaster) = self.postmaster.take()
            && let Err(e) = shutdown(postmaster, &self.dir)
        {
            tracing::error!(error = %e, dir = %self.dir.display(), "cannot stop managed Postgres");
        }
    }
}

/// Stops the postmaster: fast shutdown first, then immediate, then SIGKILL.
fn shutdown(mut postmaster: Postmaster, dir: &Path) -> Result<(), EmbeddedError> {
    let pid = postmaster.pid();
    tracing::info!(dir = %dir.display(), pid = pid.as_raw(), "stopping managed Postgres");
    let steps = [
        (Signal::SIGINT, FAST_SHUTDOWN_TIMEOUT),
        (Signal::SIGQUIT, IMMEDIATE_SHUTDOWN_TIMEOUT),
        (Signal::SIGKILL, KILL_TIMEOUT),
    ];
    for (sig, timeout) in steps {
        if postmaster.exit_status()?.is_some() {
            break;
        }
        if sig != Signal::SIGINT {
            tracing::warn!(pid = pid.as_raw(), signal = %sig, "Postgres did not stop in time");
        }
        match signal::kill(pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(os_error(format!("cannot signal Postgres (pid {pid})"))(e)),
        }
        if postmaster.wait_exit(timeout)? {
            tracing::info!(pid = pid.as_raw(), "managed Postgres stopped");
            return Ok(());
        }
    }
    if postmaster.exit_status()?.is_some() {
        Ok(())
    } else {
        Err(EmbeddedError::StillRunning(pid.as_raw()))
    }
}

/// What `dir/postmaster.pid` says about the cluster.
enum Lock {
    /// No lock, or one Postgres can judge by itself (its pid is dead, or not ours to inspect).
    Free,
    /// A postmaster is working in `dir`.
    Running(Pid),
    /// The recorded pid is alive but is not a postmaster of this cluster: a zombie left by a
    /// killed postmaster, or a reused pid (common in containers). Postgres would take it for a
    /// live server, so it is told to ignore that pid.
    StalePid(Pid),
}

fn inspect_lock(dir: &Path) -> Result<Lock, EmbeddedError> {
    let path = dir.join("postmaster.pid");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lock::Free),
        Err(e) => return Err(io_error(format!("cannot read {}", path.display()))(e)),
    };
    let pid = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0);
    let Some(pid) = pid.map(Pid::from_raw) else {
        // Empty or torn: a crash before the postmaster wrote it, so no server and no shared
        // memory to protect, but Postgres refuses to start over such a file.
        tracing::info!(path = %path.display(), "removing an unreadable postmaster.pid");
        fs::remove_file(&path).map_err(io_error(format!("cannot remove {}", path.display())))?;
        return Ok(Lock::Free);
    };
    if matches!(signal::kill(pid, None), Err(Errno::ESRCH)) {
        return Ok(Lock::Free);
    }
    if is_zombie(pid) {
        return Ok(Lock::StalePid(pid));
    }
    match fs::read_link(format!("/proc/{pid}/cwd")) {
        // A postmaster works in its data directory.
        Ok(cwd) if cwd == dir => Ok(Lock::Running(pid)),
        Ok(_) => Ok(Lock::StalePid(pid)),
        // Another user's process, or no /proc: let Postgres judge.
        Err(_) => Ok(Lock::Free),
    }
}

fn spawn_postmaster(
    binaries: &Binaries,
    dir: PathBuf,
    run_as: Option<&RunAs>,
    profile: Profile,
    stale_pid: Option<Pid>,
) -> Result<ManagedPostgres, EmbeddedError> {
    let log_path = dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_error(format!("cannot open {}", log_path.display())))?;
    if let Some(user) = run_as {
        // Only tidiness: Postgres writes through the descriptor it inherits.
        let _ = std::os::unix::fs::fchown(&log, Some(user.uid.as_raw()), Some(user.gid.as_raw()));
    }
    let stderr = log
        .try_clone()
        .map_err(io_error(format!("cannot open {}", log_path.display())))?;

    let mut command = Command::new(&binaries.postgres);
    command.arg("-D").arg(&dir);
    for setting in server_settings(&dir, profile) {
        command.arg("-c").arg(setting);
    }
    command
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0);
    if let Some(user) = run_as {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    if let Some(pid) = stale_pid {
        // The variable pg_ctl uses for the same purpose: Postgres then skips its liveness test
        // for this pid, yet still refuses to start while orphaned backends of the old server
        // hold its shared memory, which deleting the lock files would not preserve.
        tracing::info!(
            pid = pid.as_raw(),
            "postmaster.pid names a process that is not Postgres"
        );
        command.env("PG_GRANDPARENT_PID", pid.to_string());
    }
    tracing::info!(
        dir = %dir.display(),
        version = %binaries.version,
        log = %log_path.display(),
        "starting managed Postgres"
    );
    let child = command.spawn().map_err(io_error(format!(
        "cannot run {}",
        binaries.postgres.display()
    )))?;
    let pid = i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|e| EmbeddedError::Io {
            context: "unexpected Postgres pid".into(),
            source: io::Error::other(e),
        })?;
    Ok(ManagedPostgres {
        dir,
        postmaster: Some(Postmaster::Child { child, pid }),
        profile,
    })
}

/// Settings given on the command line rather than written to postgresql.conf, so that they hold
/// whatever the file says and change with the profile from one start to the next.
fn server_settings(dir: &Path, profile: Profile) -> Vec<String> {
    // unix_socket_directories is a list: quote the path so commas and spaces in it survive.
    let socket_dir = format!("\"{}\"", dir.to_string_lossy().replace('"', "\"\""));
    let mut settings = vec![
        "listen_addresses=".to_string(),
        format!("unix_socket_directories={socket_dir}"),
        "unix_socket_permissions=0700".to_string(),
        format!("port={PORT}"),
        // Everything goes to stderr, which is postgres.log.
        "logging_collector=off".to_string(),
        "log_destination=stderr".to_string(),
    ];
    if profile == Profile::Tests {
        settings.extend(
            [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "max_connections=400",
            ]
            .map(String::from),
        );
    }
    settings
}

/// The last lines of the log, for error messages.
fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 4096;
    const MAX_LINES: usize = 30;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(MAX_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            // The first line was cut in the middle.
            lines.remove(0);
        }
        let skip = lines.len().saturating_sub(MAX_LINES);
        Ok(lines[skip..].join("\n"))
    };
    read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
}

fn is_duplicate_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04"))
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;

//! Tests of the managed Postgres: start, stop and restart over stale lock files, zombie pids and a server already running; refused data directories.
use super::*;

use std::os::unix::fs::PermissionsExt;

use nix::unistd::Uid;
use sqlx::PgPool;

fn assert_gone(pid: Pid) {
    assert!(process_gone(pid), "postmaster {pid} still running");
}

#[test]
fn url_is_parsed_by_sqlx() {
    let pg = ManagedPostgres {
        dir: PathBuf::from("/tmp/a dir,with?odd&chars"),
        postmaster: None,
        profile: Profile::Tests,
    };
    let options: PgConnectOptions = pg.url("my db").parse().expect("valid URL");
    assert_eq!(
        options.get_socket().map(PathBuf::as_path),
        Some(Path::new("/tmp/a dir,with?odd&chars"))
    );
    assert_eq!(options.get_database(), Some("my db"));
    assert_eq!(options.get_username(), SUPERUSER);
    assert_eq!(options.get_port(), PORT);
}

/// A directory the cluster user can reach even when the tests run as root (a bare tempdir
/// is 0700 and owned by root).
fn searchable_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    tmp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_persists_across_restarts() {
    let tmp = searchable_tempdir();
    // A missing directory: initialised under a temporary name, then renamed.
    let dir = tmp.path().join("postgres");

    let pg = ManagedPostgres::start_for_tests(&dir).await.expect("start");
    assert!(dir.join("PG_VERSION").exists());
    let pool = PgPool::connect(&pg.url("trellis")).await.expect("connect");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("select");
    assert_eq!(one, 1);
    sqlx::query("CREATE TABLE kept (note TEXT)")
        .execute(&pool)
        .await
        .expect("create");
    sqlx::query("INSERT INTO kept VALUES ('still here')")
        .execute(&pool)
        .await
        .expect("insert");
    pool.close().await;
    let pid = pg.pid().expect("running");
    pg.stop().await.expect("stop");
    assert_gone(pid);
    assert!(!dir.join("postmaster.pid").exists());

    // Second start: the production profile, no initdb.
    let pg = ManagedPostgres::start(&dir).await.expect("restart");
    let pool = PgPool::connect(&pg.url("trellis")).await.expect("connect");
    let note: String = sqlx::query_scalar("SELECT note FROM kept")
        .fetch_one(&pool)
        .await
        .expect("select");
    assert_eq!(note, "still here");
    pool.close().await;
    let pid = pg.pid().expect("running");
    pg.stop().await.expect("stop");
    assert_gone(pid);
    assert!(fs::read_to_string(dir.join(LOG_FILE)).is_ok_and(|log| !log.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_the_server() {
    // An existing empty directory: initialised in place.
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("start");
    let pid = pg.pid().expect("running");
    drop(pg);
    assert_gone(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_over_stale_lock_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("start");
    pg.stop().await.expect("stop");
    // What a crash leaves when the pid has since gone to another process.
    let mut unrelated = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid_file = format!("{}\n{}\n", unrelated.id(), tmp.path().display());
    fs::write(tmp.path().join("postmaster.pid"), &pid_file).expect("write");
    fs::write(tmp.path().join(format!(".s.PGSQL.{PORT}.lock")), &pid_file).expect("write");
    fs::write(tmp.path().join(format!(".s.PGSQL.{PORT}")), "").expect("write");

    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("restart over stale lock files");
    let pool = PgPool::connect(&pg.url("trellis")).await.expect("connect");
    pool.close().await;
    pg.stop().await.expect("stop");
    let _ = unrelated.kill();
    let _ = unrelated.wait();
}

/// A killed postmaster whose parent has not reaped it still answers kill(pid, 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_over_a_zombie_pid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("start");
    pg.stop().await.expect("stop");
    let mut zombie = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = Pid::from_raw(i32::try_from(zombie.id()).expect("pid"));
    while !is_zombie(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid_file = format!("{pid}\n{}\n", tmp.path().display());
    fs::write(tmp.path().join("postmaster.pid"), pid_file).expect("write");
    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("restart over a zombie's pid");
    pg.stop().await.expect("stop");
    let _ = zombie.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_over_an_empty_lock_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("start");
    pg.stop().await.expect("stop");
    fs::write(tmp.path().join("postmaster.pid"), "").expect("write");
    let pg = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("restart over an empty postmaster.pid");
    pg.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_a_running_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("start");
    let second = ManagedPostgres::start_for_tests(tmp.path())
        .await
        .expect("second start");
    let pid = first.pid().expect("running");
    assert_eq!(second.pid(), Some(pid));
    second.stop().await.expect("stop");
    assert_gone(pid);
    // Dropping the first handle finds the server gone and does nothing.
    drop(first);
}

#[tokio::test]
async fn non_empty_directory_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("precious.txt"), "keep me").expect("write");
    match ManagedPostgres::start_for_tests(tmp.path()).await {
        Err(EmbeddedError::NotACluster(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("initialised a non-empty directory"),
    }
    assert!(tmp.path().join("precious.txt").exists());
}

#[tokio::test]
async fn unreachable_directory_is_reported_when_root() {
    if !Uid::effective().is_root() {
        return;
    }
    // A root-owned 0700 directory: the cluster user cannot pass through it.
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    let dir = tmp.path().join("postgres");
    match ManagedPostgres::start_for_tests(&dir).await {
        Err(EmbeddedError::NotReachable { blocker, .. }) => {
            assert_eq!(blocker, fs::canonicalize(tmp.path()).expect("canonical"));
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started in an unreachable directory"),
    }
    assert!(!dir.exists());
}

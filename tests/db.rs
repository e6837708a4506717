//! The database layer's own machinery: connections lent for one statement (`db::lease`),
//! the planner statistics kept up with a young database (`planner_stats`), and the typed
//! values rows are decoded into (memberships, room versions).

mod common;

use std::time::Duration;

use common::db::fresh_database;
use trellis::db::lease::Leases;

async fn backend(leases: &Leases) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(leases)
        .await
        .expect("pg_backend_pid")
}

/// End every other session on the test database, as Postgres does when it restarts.
async fn terminate_others(url: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .await
    .expect("terminate");
    admin.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_goes_back_only_after_a_finished_statement() {
    let url = fresh_database().await;
    let leases = Leases::new(url.parse().expect("url"), 2);
    assert_eq!(leases.idle(), 0, "nothing is opened before it is needed");

    // A statement that succeeds: the connection goes back and serves the next one.
    let first = backend(&leases).await;
    assert_eq!(leases.idle(), 1);
    assert_eq!(backend(&leases).await, first);

    // An error the database answered with leaves the connection in step: kept.
    let err = sqlx::query("SELECT 1 / 0")
        .execute(&leases)
        .await
        .expect_err("division by zero");
    assert!(matches!(err, sqlx::Error::Database(_)), "{err}");
    assert_eq!(leases.idle(), 1);
    assert_eq!(backend(&leases).await, first, "kept after a database error");

    // A statement abandoned half way (the request was dropped): the connection may still
    // have its reply coming, so it is closed, and the next statement gets a new one.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        sqlx::query("SELECT pg_sleep(5)").execute(&leases),
    )
    .await;
    assert!(abandoned.is_err(), "pg_sleep(5) finished within 200 ms");
    assert_eq!(
        leases.idle(),
        0,
        "the abandoned connection is not lent again"
    );
    let second = backend(&leases).await;
    assert_ne!(second, first);

    // Postgres ends its sessions (as when it restarts): the next statement fails on its
    // dead connection, the other idle ones are closed with it, and the one after that
    // opens a live connection.
    let (a, b) = (
        leases.lease().await.expect("a"),
        leases.lease().await.expect("b"),
    );
    a.settle(&Ok::<(), sqlx::Error>(()));
    b.settle(&Ok::<(), sqlx::Error>(()));
    assert_eq!(leases.idle(), 2);
    terminate_others(&url).await;
    let err = sqlx::query("SELECT 1")
        .execute(&leases)
        .await
        .expect_err("a connection whose session Postgres ended");
    // Either the session's last words (FATAL 57P01) or a broken socket, by timing.
    assert!(
        matches!(&err, sqlx::Error::Io(_))
            || matches!(&err, sqlx::Error::Database(d) if d.code().as_deref() == Some("57P01")),
        "{err:?}"
    );
    assert_eq!(
        leases.idle(),
        0,
        "idle connections closed with the dead one"
    );
    backend(&leases).await;

    // Rows come back whole and in order through the executor.
    let rows: Vec<i64> = sqlx::query_scalar("SELECT generate_series(1, 500)::bigint")
        .fetch_all(&leases)
        .await
        .expect("series");
    assert_eq!(rows, (1..=500).collect::<Vec<i64>>());

    // At most `max` lent at once: a third waits until one comes back.
    let a = leases.lease().await.expect("a");
    let b = leases.lease().await.expect("b");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), leases.lease())
            .await
            .is_err(),
        "a third lease while two are out"
    );
    drop(a);
    let c = tokio::time::timeout(Duration::from_secs(5), leases.lease())
        .await
        .expect("a lease once one came back")
        .expect("c");
    drop((b, c));

    // Closed: nothing more is lent.
    leases.close().await;
    assert_eq!(leases.idle(), 0);
    assert!(matches!(
        leases.lease().await.err(),
        Some(sqlx::Error::PoolClosed)
    ));
}

/// A table that grew from nothing is analysed at once; one already analysed is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_growing_from_nothing_are_analysed() {
    let url = fresh_database().await;
    let pool = trellis::db::connect(&url, 2).await.expect("pool");
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query(
        "INSERT INTO event_ids (event_id) SELECT '$grown' || g FROM generate_series(1, 2000) g",
    )
    .execute(&mut *conn)
    .await
    .expect("insert");
    // The statistics collector hears of the rows when the session reports them.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush");
    drop(conn);
    let reltuples = || async {
        sqlx::query_scalar::<_, f32>("SELECT reltuples FROM pg_class WHERE relname = 'event_ids'")
            .fetch_one(&pool)
            .await
            .expect("reltuples")
    };
    assert!(reltuples().await < 2000.0, "analysed before the check");

    let analysed = trellis::planner_stats::analyze_outgrown(&pool)
        .await
        .expect("analyse");
    assert!(analysed.iter().any(|t| t == "event_ids"), "{analysed:?}");
    assert_eq!(reltuples().await, 2000.0);

    // Nothing changed since: nothing to do.
    let again = trellis::planner_stats::analyze_outgrown(&pool)
        .await
        .expect("analyse");
    assert!(!again.iter().any(|t| t == "event_ids"), "{again:?}");
}

/// Trellis on a database it does not manage (`database.url`), whose server stops and comes
/// back: requests meanwhile fail with 503 at once, and Trellis uses the database again once
/// it is back, without a restart of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_database_that_restarts_is_used_again() {
    use common::server::TestServer;
    use serde_json::json;
    use std::time::Instant;
    use trellis::db::embedded::ManagedPostgres;

    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dir.path().join("pg");
    let pg = ManagedPostgres::start_for_tests(&cluster)
        .await
        .expect("start a Postgres of the test's own");
    let url = pg.url("trellis");
    let s = TestServer::start_with(|c| c.database.url = Some(url)).await;
    let alice = s.register("alice", "password-long-enough").await;
    let room = s.create_room(&alice, json!({})).await;
    let send = |txn: String| {
        let (s, alice, room) = (&s, &alice, &room);
        async move {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
            s.put(
                &path,
                Some(&alice.token),
                &json!({"msgtype": "m.text", "body": txn}),
            )
            .await
        }
    };
    assert_eq!(send("before".to_owned()).await.0, 200);

    pg.stop().await.expect("stop Postgres");
    let asked = Instant::now();
    let (status, body) = send("while-down".to_owned()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
    // Failing fast is the point: well under the pool's 30 s wait for a connection.
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(s.get("/health", None).await.0, 503);

    let pg = ManagedPostgres::start_for_tests(&cluster)
        .await
        .expect("start Postgres again");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let (status, body) = send(format!("after{n}")).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the database was not used again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.get("/health", None).await.0, 200);
    drop(s);
    pg.stop().await.expect("stop Postgres");
}

/// A transparent proxy to the test Postgres on a Unix socket of its own that, once armed,
/// holds back the server's answers from the first statement holding `BEGIN` on (so the
/// moment between BEGIN's arrival and its answer's stands still) and tells when it has
/// passed that statement on.
struct Proxy {
    /// The test database's connection options, through the proxy.
    options: sqlx::postgres::PgConnectOptions,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    begins: std::sync::Arc<tokio::sync::Notify>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    async fn start(url: &str) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let dir = tempfile::Builder::new()
            .prefix("pgproxy")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let port = upstream.get_port();
        let listener = tokio::net::UnixListener::bind(dir.path().join(format!(".s.PGSQL.{port}")))
            .expect("bind the proxy socket");
        let (held, held_rx) = tokio::sync::watch::channel(false);
        let held = std::sync::Arc::new(held);
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let begins = std::sync::Arc::new(tokio::sync::Notify::new());
        let (up, seen, arm, hold) = (
            upstream.clone(),
            begins.clone(),
            armed.clone(),
            held.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server: Box<dyn Duplex> = match up.get_socket() {
                    Some(dir) => Box::new(
                        tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                            .await
                            .expect("upstream socket"),
                    ),
                    None => Box::new(
                        tokio::net::TcpStream::connect((up.get_host(), port))
                            .await
                            .expect("upstream tcp"),
                    ),
                };
                let (mut client_r, mut client_w) = tokio::io::split(client);
                let (mut server_r, mut server_w) = tokio::io::split(server);
                let (seen, arm, hold) = (seen.clone(), arm.clone(), hold.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_r.read(&mut buf).await {
                        let begin = buf[..n].windows(5).any(|w| w == b"BEGIN");
                        // Held before BEGIN goes on, so its answer cannot slip through.
                        if begin && arm.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            hold.send_replace(true);
                        }
                        if server_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if begin {
                            seen.notify_one();
                        }
                    }
                });
                let mut held_rx = held_rx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = server_r.read(&mut buf).await {
                        if held_rx.wait_for(|held| !held).await.is_err()
                            || client_w.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Proxy {
            options: upstream.socket(dir.path()),
            armed,
            held,
            begins,
            _dir: dir,
        }
    }

    /// Hold answers from the next BEGIN on.
    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Let the held answers through.
    fn release(&self) {
        self.held.send_replace(false);
    }
}

trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Duplex for T {}

/// A caller dropped while its BEGIN was under way (a request whose client went away) must
/// not hand the pool back a connection inside an open transaction: sqlx 0.8's
/// `Pool::begin` did, and every statement later run on that connection stayed
/// uncommitted, its locks held, until some unrelated COMMIT. matrix-rust-sdk cancels
/// sliding sync long-polls all the time (a room opened, the app sent to the background),
/// and Trellis's log showed "there is already a transaction in progress".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_dropped_half_way_leaves_no_transaction_open() {
    let url = fresh_database().await;
    let proxy = Proxy::start(&url).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(proxy.options.clone())
        .await
        .expect("pool through the proxy");
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .expect("the pool's one connection");

    // BEGIN reaches Postgres, its answer does not reach the caller, and the caller is gone.
    proxy.arm();
    let mut begin = Box::pin(trellis::db::begin(&pool));
    tokio::select! {
        _ = &mut begin => panic!("BEGIN was answered while answers are held"),
        _ = proxy.begins.notified() => {}
    }
    drop(begin);
    proxy.release();

    // The pool's one connection serves the next statement, then must be idle, not idle in
    // a transaction left open.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("a statement after the dropped BEGIN");
    let mut admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&url).await.expect("connect")
    };
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .expect("state");
    assert_eq!(state.as_deref(), Some("idle"));
}

/// Memberships and room versions are decoded once, as their rows are read: a stored value
/// ruma does not name reads back unchanged (as `_Custom`), never as an error or a panic, and
/// a room version this server has no rules for is an error only where rules are asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_memberships_and_versions_decode_at_the_row() {
    use ruma::events::room::member::MembershipState;
    use trellis::db::{events, reads, rooms, sync};

    let url = fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let mut tx = pool.begin().await.expect("begin");
    let room_nid = rooms::insert(&mut tx, "!r:x", "org.example.unknown")
        .await
        .expect("insert room")
        .expect("new room");
    let nids = events::intern_ids(&mut tx, &["$m"]).await.expect("intern");
    let event_nid = nids["$m"];
    let row = events::NewEvent::new(event_nid, room_nid, "m.room.member", "@u:x", 1, 1, "{}");
    assert!(events::insert(&mut tx, &row, Some(1)).await.expect("event"));
    let custom = MembershipState::from("org.example.custom");
    rooms::set_membership(&mut tx, room_nid, "@u:x", &custom, event_nid)
        .await
        .expect("membership");
    tx.commit().await.expect("commit");

    let stored: String =
        sqlx::query_scalar("SELECT membership FROM room_members WHERE room_nid = $1")
            .bind(room_nid)
            .fetch_one(&pool)
            .await
            .expect("stored");
    assert_eq!(
        stored, "org.example.custom",
        "the stored text is the value's own"
    );
    let read = rooms::membership(&pool, room_nid, "@u:x")
        .await
        .expect("read");
    assert_eq!(
        read.as_ref().map(MembershipState::as_str),
        Some("org.example.custom")
    );
    assert_ne!(read, Some(MembershipState::Join));
    let members = rooms::members(&pool, room_nid).await.expect("members");
    assert_eq!(members, vec![("@u:x".to_owned(), custom.clone())]);
    let at = reads::membership_at(&pool, room_nid, "@u:x")
        .await
        .expect("membership_at")
        .expect("a row");
    assert_eq!(at.membership, custom);
    let user_rooms = sync::user_rooms(&pool, "@u:x").await.expect("user_rooms");
    assert_eq!(user_rooms.len(), 1);
    assert_eq!(user_rooms[0].membership, custom);

    let (room, membership) = rooms::with_membership(&pool, "!r:x", "@u:x")
        .await
        .expect("with_membership")
        .expect("the room");
    assert_eq!(membership, Some(custom));
    assert_eq!(room.room_version.as_str(), "org.example.unknown");
    let err = room.rules().expect_err("no rules for an unknown version");
    assert!(err.to_string().contains("has no rules"), "{err}");
}

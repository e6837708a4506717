//! The test database harness itself: each test gets a database of its own, already migrated.

mod common;

use common::db::{fresh_database, with_database};
use sqlx::{Connection, PgConnection};

async fn applied_migrations(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .expect("read _sqlx_migrations")
}

async fn database_name(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(conn)
        .await
        .expect("current_database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_databases_are_distinct_and_migrated() {
    let first = fresh_database().await;
    let second = fresh_database().await;
    assert_ne!(first, second);

    let expected = i64::try_from(trellis::db::MIGRATOR.iter().count()).expect("count");
    assert!(expected > 0);
    let mut a = PgConnection::connect(&first).await.expect("connect");
    let mut b = PgConnection::connect(&second).await.expect("connect");
    assert_eq!(applied_migrations(&mut a).await, expected);
    assert_eq!(applied_migrations(&mut b).await, expected);

    assert_ne!(database_name(&mut a).await, database_name(&mut b).await);

    // What one test writes, the other does not see.
    sqlx::query("CREATE TABLE harness_probe (x INT)")
        .execute(&mut a)
        .await
        .expect("create");
    let seen: Option<String> = sqlx::query_scalar("SELECT to_regclass('harness_probe')::text")
        .fetch_one(&mut b)
        .await
        .expect("to_regclass");
    assert_eq!(seen, None);

    // Migrating again is a no-op: the template carries the migration history.
    let pool = trellis::db::connect(&first, 1).await.expect("pool");
    trellis::db::migrate(&pool).await.expect("migrate again");
    pool.close().await;

    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// Another runtime in the same process: nothing runtime-bound may survive in the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_every_test_runtime() {
    let url = fresh_database().await;
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    assert!(applied_migrations(&mut conn).await > 0);
    conn.close().await.expect("close");
}

#[test]
fn database_is_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@localhost:5432/postgres?host=/a/b", "x"),
        "postgres://u@localhost:5432/x?host=/a/b"
    );
    assert_eq!(
        with_database("postgres://u:p@db.example", "x"),
        "postgres://u:p@db.example/x"
    );
    assert_eq!(
        with_database("postgres://u@/postgres?host=/run/pg", "x"),
        "postgres://u@/x?host=/run/pg"
    );
}

//! Hot paths over a stored room graph, against a real Postgres (the test cluster the
//! integration tests use): state resolution of two forks with 1,000 and 10,000 conflicted
//! state events, and the /backfill and /get_missing_events walks over a 100,000-event room.

#[path = "../tests/common/dag.rs"]
mod dag;
#[path = "../tests/common/db.rs"]
mod test_db;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dag::Dag;
use ruma::{OwnedEventId, OwnedUserId, RoomVersionId};
use serde_json::json;
use sqlx::PgPool;
use tokio::runtime::Runtime;
use trellis::db;
use trellis::room::Rooms;
use trellis::room::remote::Incoming;
use trellis::room::state_res::{self, KeyMap};

/// Whether criterion measures (`cargo bench`) rather than smoke-runs each benchmark once
/// (`cargo test --benches`): the rooms are only built at full size for measuring.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The benchmarks' room: version 10, on bench.test, made by @creator.
fn room() -> (Dag, OwnedUserId) {
    let dag = Dag::new("bench.test", RoomVersionId::V10);
    let creator = dag.user("creator");
    (dag, creator)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh migrated database and a `Rooms` over it.
async fn open(dag: &Dag) -> (PgPool, Rooms) {
    let url = test_db::fresh_database().await;
    let pool = db::connect(&url, 4).await.expect("connect");
    let keys = dag::server_keys("bench.test");
    let rooms = Rooms::new(pool.clone(), Arc::new(keys), 0);
    rooms
        .ensure_room(&dag.room_id, &dag.version)
        .await
        .expect("room");
    (pool, rooms)
}

async fn event_nids(pool: &PgPool, events: &[&Incoming]) -> HashMap<OwnedEventId, i64> {
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    db::graph::nids_of(pool, &ids)
        .await
        .expect("nids")
        .into_iter()
        .map(|(id, nid)| (OwnedEventId::try_from(id).expect("event ID"), nid))
        .collect()
}

/// A state by numbers from events: (type, state_key) numbered through the store.
async fn key_map(pool: &PgPool, events: &[&Incoming]) -> KeyMap {
    let nids = event_nids(pool, events).await;
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e.pdu.kind.to_string(),
                e.pdu.state_key.clone().unwrap_or_default(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(t, k)| (t.as_str(), k.as_str()))
        .collect();
    let mut conn = pool.acquire().await.expect("connection");
    let keys = db::state::intern_keys(&mut conn, &pairs)
        .await
        .expect("keys");
    events
        .iter()
        .zip(&kinds)
        .map(|(e, k)| (keys[k], nids[&e.event_id]))
        .collect()
}

fn state_resolution(c: &mut Criterion) {
    let rt = runtime();
    let sizes: &[usize] = if measuring() { &[1_000, 10_000] } else { &[20] };
    let mut group = c.benchmark_group("state resolution of two forks");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for &n in sizes {
        let (mut dag, creator) = room();
        dag.base(&creator);
        // The same users join on both forks with different display names: every member
        // entry is conflicted.
        let on_base = dag.head();
        let mut forks = Vec::new();
        for name in ["fork a", "fork b"] {
            dag.fork(&on_base);
            for i in 0..n {
                let user = dag.user(&format!("u{i}"));
                dag.state(
                    &user,
                    "m.room.member",
                    user.as_str(),
                    json!({"membership": "join", "displayname": name}),
                );
            }
            forks.push(dag.head());
        }
        let f = &dag;
        let (pool, forks) = rt.block_on(async {
            let (pool, rooms) = open(f).await;
            rooms
                .store_outliers(&f.room_id, f.events())
                .await
                .expect("store");
            let mut maps = Vec::new();
            for fork in &forks {
                maps.push(key_map(&pool, &f.state_events(fork).iter().collect::<Vec<_>>()).await);
            }
            (pool, maps)
        });
        group.bench_function(format!("{n} conflicted members"), |bench| {
            bench.iter(|| {
                let resolved = rt
                    .block_on(state_res::resolve(&pool, &dag.rules, &forks, None))
                    .expect("resolved");
                assert_eq!(resolved.map.len(), n + 4);
            })
        });
    }
    group.finish();
}

/// A room of `n` messages after the base events, stored as timeline events; every 50th
/// event has a sibling that the next event merges. Returns the room number and the event
/// numbers in order.
async fn long_room(
    dag: &mut Dag,
    creator: &OwnedUserId,
    pool: &PgPool,
    n: usize,
) -> (i64, Vec<i64>) {
    dag.base(creator);
    let first = dag.events().len();
    for i in 0..n {
        let before = (i % 50 == 49).then(|| dag.head());
        dag.message(creator, &format!("message {i}"));
        if let Some(before) = before {
            // A sibling on the same parents, merged by the next event.
            let main = dag.head();
            dag.fork(&before);
            dag.message(creator, &format!("side {i}"));
            let side = dag.head();
            dag.merge(&[main, side]);
        }
    }
    let events = &dag.events()[first..];
    let room = db::rooms::by_id(pool, dag.room_id.as_str())
        .await
        .expect("room")
        .expect("room row");
    let mut tx = pool.begin().await.expect("transaction");
    let mut order = Vec::with_capacity(events.len());
    for chunk in events.chunks(5_000) {
        let mut ids: Vec<&str> = Vec::new();
        for e in chunk {
            ids.push(e.event_id.as_str());
            ids.extend(e.pdu.prev_events.iter().map(|p| p.as_str()));
            ids.extend(e.pdu.auth_events.iter().map(|p| p.as_str()));
        }
        let (nids, _) = db::append::number(&mut tx, &ids, 0).await.expect("numbers");
        let positions = db::append::position_block(&mut *tx, chunk.len())
            .await
            .expect("positions");
        let mut links = db::append::Links::default();
        let rows: Vec<db::events::NewEvent<'_>> = chunk
            .iter()
            .map(|e| {
                let nid = nids[e.event_id.as_str()];
                links
                    .prev_edges
                    .extend(e.pdu.prev_events.iter().map(|p| (nid, nids[p.as_str()])));
                links
                    .auth_edges
                    .extend(e.pdu.auth_events.iter().map(|p| (nid, nids[p.as_str()])));
                order.push(nid);
                db::events::NewEvent::new(
                    nid,
                    room.room_nid,
                    "m.room.message",
                    creator.as_str(),
                    0,
                    e.pdu.depth,
                    &e.json,
                )
            })
            .collect();
        let positions: Vec<Option<i64>> = positions.into_iter().map(Some).collect();
        db::events::insert_many(&mut tx, &rows, &positions)
            .await
            .expect("insert");
        db::append::link(&mut *tx, room.room_nid, "bench.test", &links)
            .await
            .expect("edges");
    }
    tx.commit().await.expect("commit");
    (room.room_nid, order)
}

fn walks(c: &mut Criterion) {
    let rt = runtime();
    let n = if measuring() { 100_000 } else { 500 };
    let (mut dag, creator) = room();
    let (pool, room_nid, order) = rt.block_on(async {
        let (pool, _rooms) = open(&dag).await;
        let (room_nid, order) = long_room(&mut dag, &creator, &pool, n).await;
        // As a running server does for tables that grew from nothing (`planner_stats`):
        // without statistics the walks' plans depend on when autovacuum happens to run.
        for table in ["events", "event_edges", "event_ids"] {
            db::planner::analyze(&pool, table).await.expect("analyze");
        }
        (pool, room_nid, order)
    });
    let newest = order[order.len() - 1];
    let middle = order[order.len() / 2];
    let back = |k: usize| order[order.len().saturating_sub(k + 1)];
    let mut group = c.benchmark_group(format!("graph walks over a {n}-event room"));
    group.bench_function("/backfill 100 from the newest event", |b| {
        b.iter(|| {
            let got = rt
                .block_on(db::graph::backfill(&pool, room_nid, &[newest], 100))
                .expect("walk");
            assert_eq!(got.len(), 100);
        })
    });
    group.bench_function("/backfill 100 from the middle", |b| {
        b.iter(|| {
            let got = rt
                .block_on(db::graph::backfill(&pool, room_nid, &[middle], 100))
                .expect("walk");
            assert_eq!(got.len(), 100);
        })
    });
    group.bench_function("/get_missing_events 10 over a gap of 30", |b| {
        b.iter(|| {
            let got = rt
                .block_on(db::graph::missing_events(
                    &pool,
                    room_nid,
                    &[back(30)],
                    &[newest],
                    0,
                    10,
                ))
                .expect("walk");
            assert_eq!(got.len(), 10);
        })
    });
    group.bench_function("/get_missing_events 100 with nothing in common", |b| {
        b.iter(|| {
            let got = rt
                .block_on(db::graph::missing_events(
                    &pool,
                    room_nid,
                    &[],
                    &[newest],
                    0,
                    100,
                ))
                .expect("walk");
            assert_eq!(got.len(), 100);
        })
    });
    group.finish();
}

criterion_group!(benches, state_resolution, walks);
criterion_main!(benches);

//! The write path against the database: what one append writes (the event row, its edges,
//! the state group and current state of a state event, the forward extremities it
//! replaces, membership rows, the outbound federation queue, the client transaction ID),
//! and that a write failing half way leaves nothing of the event behind. Each test reads the
//! rows back from its own fresh database; no server runs.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::dag::{self, Dag};
use common::db::fresh_database;
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::json;
use sqlx::PgPool;
use trellis::db;
use trellis::room::Rooms;
use trellis::room::create::{CreateRoom, Preset};
use trellis::room::pdu::NewContent;
use trellis::room::remote::Outcome;
use trellis::room::write::TxnRef;

const HERE: &str = "here.test";
const REMOTE: &str = "remote.test";

/// A fresh database, the domain over it (as server `here.test`), and a public room made
/// there by @alice.
struct Room {
    url: String,
    pool: PgPool,
    rooms: Rooms,
    room_id: OwnedRoomId,
    alice: OwnedUserId,
    room_nid: i64,
}

async fn room() -> Room {
    let url = fresh_database().await;
    let pool = db::connect(&url, 4).await.expect("connect");
    let rooms = Rooms::new(pool.clone(), Arc::new(dag::server_keys(HERE)), 0);
    let alice = user("alice", HERE);
    let room_id = rooms
        .create_room(
            &alice,
            CreateRoom {
                preset: Some(Preset::PublicChat),
                ..CreateRoom::default()
            },
        )
        .await
        .expect("create room");
    let room_nid = sqlx::query_scalar("SELECT room_nid FROM rooms WHERE room_id = $1")
        .bind(room_id.as_str())
        .fetch_one(&pool)
        .await
        .expect("room row");
    Room {
        url,
        pool,
        rooms,
        room_id,
        alice,
        room_nid,
    }
}

fn user(localpart: &str, server: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{localpart}:{server}")).expect("user ID")
}

fn topic(text: &str) -> NewContent {
    NewContent {
        kind: TimelineEventType::RoomTopic,
        state_key: Some(String::new()),
        content: serde_json::value::to_raw_value(&json!({"topic": text})).expect("content"),
        redacts: None,
    }
}

fn text(body: &str) -> NewContent {
    NewContent {
        kind: TimelineEventType::RoomMessage,
        state_key: None,
        content: serde_json::value::to_raw_value(&json!({"msgtype": "m.text", "body": body}))
            .expect("content"),
        redacts: None,
    }
}

fn txn<'a>(txn_id: &'a str) -> Option<TxnRef<'a>> {
    Some(TxnRef {
        device_id: "DEVICE",
        txn_id,
    })
}

/// Everything an append of the room may touch, as rows read back.
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    events: Vec<String>,
    extremities: Vec<String>,
    current_state: BTreeMap<(String, String), String>,
    state_group: Option<i64>,
    state_groups: i64,
    members: BTreeMap<String, (String, String)>,
    outbox: Vec<(String, String)>,
    txns: Vec<(String, String)>,
    /// Edges from events that have no row: left by a write that did not finish.
    orphan_edges: i64,
}

/// The domain over the same database as `r`, as another process would hold it: its own
/// caches (the tips it remembers), its stream positions after those already taken.
async fn another_process(r: &Room) -> Rooms {
    let stream_max = db::events::max_stream_position(&r.pool)
        .await
        .expect("stream");
    Rooms::new(r.pool.clone(), Arc::new(dag::server_keys(HERE)), stream_max)
}

async fn rows(r: &Room) -> Rows {
    let p = &r.pool;
    let n = r.room_nid;
    let strings = |sql: &'static str| async move {
        sqlx::query_scalar::<_, String>(sql)
            .bind(n)
            .fetch_all(p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let current_state = sqlx::query_as::<_, (String, String, String)>(
        "SELECT k.event_type, k.state_key, i.event_id FROM current_state c
         JOIN state_keys k USING (state_key_nid) JOIN event_ids i ON i.event_nid = c.event_nid
         WHERE c.room_nid = $1",
    )
    .bind(n)
    .fetch_all(p)
    .await
    .expect("current state")
    .into_iter()
    .map(|(t, k, id)| ((t, k), id))
    .collect();
    let members = sqlx::query_as::<_, (String, String, String)>(
        "SELECT m.user_id, m.membership, i.event_id FROM room_members m
         JOIN event_ids i ON i.event_nid = m.event_nid WHERE m.room_nid = $1",
    )
    .bind(n)
    .fetch_all(p)
    .await
    .expect("members")
    .into_iter()
    .map(|(u, m, id)| (u, (m, id)))
    .collect();
    let pairs = |sql: &'static str| async move {
        sqlx::query_as::<_, (String, String)>(sql)
            .bind(n)
            .fetch_all(p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    Rows {
        events: strings(
            "SELECT i.event_id FROM events e JOIN event_ids i USING (event_nid)
             WHERE e.room_nid = $1 ORDER BY e.stream_ordering",
        )
        .await,
        extremities: strings(
            "SELECT i.event_id FROM forward_extremities f JOIN event_ids i USING (event_nid)
             WHERE f.room_nid = $1 ORDER BY 1",
        )
        .await,
        current_state,
        state_group: sqlx::query_scalar("SELECT state_group FROM rooms WHERE room_nid = $1")
            .bind(n)
            .fetch_one(p)
            .await
            .expect("room"),
        state_groups: sqlx::query_scalar("SELECT count(*) FROM state_groups WHERE room_nid = $1")
            .bind(n)
            .fetch_one(p)
            .await
            .expect("state groups"),
        members,
        outbox: pairs(
            "SELECT o.destination, i.event_id FROM federation_outbox o
             JOIN events e USING (event_nid) JOIN event_ids i USING (event_nid)
             WHERE e.room_nid = $1 ORDER BY o.position",
        )
        .await,
        txns: pairs(
            "SELECT t.txn_id, i.event_id FROM event_txn_ids t
             JOIN event_ids i USING (event_nid) WHERE t.room_nid = $1 ORDER BY 1",
        )
        .await,
        orphan_edges: sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM event_edges x
                     WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_nid = x.event_nid))
                  + (SELECT count(*) FROM event_auth_edges x
                     WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_nid = x.event_nid))",
        )
        .fetch_one(p)
        .await
        .expect("edges"),
    }
}

/// State groups numbered so far, written or not: a write that made one and then failed
/// moves this on and leaves no row, which shows the failure came half way through.
async fn state_groups_numbered(p: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT last_value FROM state_groups_state_group_seq")
        .fetch_one(p)
        .await
        .expect("sequence")
}

/// The stored event: (type, state key, stream ordering, state before, state after,
/// outlier).
async fn event_row(
    p: &PgPool,
    id: &OwnedEventId,
) -> (String, Option<String>, i64, Option<i64>, Option<i64>, bool) {
    sqlx::query_as(
        "SELECT e.event_type, k.state_key, e.stream_ordering, e.state_before, e.state_after,
                e.outlier
         FROM events e JOIN event_ids i USING (event_nid)
         LEFT JOIN state_keys k USING (state_key_nid) WHERE i.event_id = $1",
    )
    .bind(id.as_str())
    .fetch_one(p)
    .await
    .expect("event row")
}

/// The event's prev (`event_edges`) or auth (`event_auth_edges`) events, sorted.
async fn edges(p: &PgPool, table: &str, id: &OwnedEventId) -> Vec<String> {
    let column = match table {
        "event_edges" => "prev_event_nid",
        _ => "auth_event_nid",
    };
    sqlx::query_scalar(&format!(
        "SELECT t.event_id FROM {table} x
         JOIN event_ids f ON f.event_nid = x.event_nid
         JOIN event_ids t ON t.event_nid = x.{column}
         WHERE f.event_id = $1 ORDER BY 1"
    ))
    .bind(id.as_str())
    .fetch_all(p)
    .await
    .expect("edges")
}

fn sorted(ids: &[OwnedEventId]) -> Vec<String> {
    let mut out: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    out.sort();
    out
}

/// The signed PDU as stored.
async fn pdu_of(p: &PgPool, id: &OwnedEventId) -> serde_json::Value {
    let json: String = sqlx::query_scalar(
        "SELECT e.json FROM events e JOIN event_ids i USING (event_nid) WHERE i.event_id = $1",
    )
    .bind(id.as_str())
    .fetch_one(p)
    .await
    .expect("json");
    serde_json::from_str(&json).expect("JSON")
}

fn ids(v: &serde_json::Value) -> Vec<OwnedEventId> {
    serde_json::from_value(v.clone()).expect("event IDs")
}

/// A builder standing on the room's stored state and tip, signing for `remote.test`: the
/// events another server in the room would send next.
async fn remote_dag(r: &Room) -> Dag {
    let now = rows(r).await;
    let depth: i64 = sqlx::query_scalar("SELECT max(depth) FROM events WHERE room_nid = $1")
        .bind(r.room_nid)
        .fetch_one(&r.pool)
        .await
        .expect("depth");
    let version: String = sqlx::query_scalar("SELECT room_version FROM rooms WHERE room_nid = $1")
        .bind(r.room_nid)
        .fetch_one(&r.pool)
        .await
        .expect("version");
    let id = |s: &String| OwnedEventId::try_from(s.as_str()).expect("event ID");
    Dag::resume(
        r.room_id.as_str(),
        RoomVersionId::try_from(version.as_str()).expect("room version"),
        dag::server_keys(REMOTE),
        now.current_state
            .iter()
            .map(|(k, v)| (k.clone(), id(v)))
            .collect(),
        now.extremities.iter().map(id).collect(),
        depth + 1,
    )
}

/// A remote user's join, received as /send delivers it.
async fn remote_join(r: &Room, dag: &mut Dag, who: &OwnedUserId) -> OwnedEventId {
    let join = dag.join(who);
    let outcome = r
        .rooms
        .receive_pdu(&r.room_id, dag.event(&join), None)
        .await
        .expect("receive");
    assert_eq!(outcome, Outcome::Stored { soft_failed: false });
    join
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_event_writes_its_row_edges_state_group_current_state_and_extremity() {
    let r = room().await;
    let before = rows(&r).await;
    assert_eq!(before.extremities.len(), 1, "{before:?}");

    let id = r
        .rooms
        .send(&r.alice, &r.room_id, topic("written"), txn("t1"))
        .await
        .expect("send");
    let after = rows(&r).await;

    let (kind, state_key, ordering, state_before, state_after, outlier) =
        event_row(&r.pool, &id).await;
    assert_eq!(
        (kind.as_str(), state_key.as_deref()),
        ("m.room.topic", Some(""))
    );
    assert!(ordering > 0, "a live event has a positive stream position");
    assert!(!outlier);
    assert_eq!(state_before, before.state_group);
    assert_ne!(
        state_after, state_before,
        "a state event makes a state group"
    );

    // Edges: the previous tip as prev event, and exactly the auth events it was signed with.
    let pdu = pdu_of(&r.pool, &id).await;
    assert_eq!(edges(&r.pool, "event_edges", &id).await, before.extremities);
    let auth = ids(&pdu["auth_events"]);
    assert!(!auth.is_empty());
    assert_eq!(edges(&r.pool, "event_auth_edges", &id).await, sorted(&auth));

    // The new group is one delta on the old one, holding the topic.
    let (prev_group, entries): (Option<i64>, Vec<String>) = (
        sqlx::query_scalar("SELECT prev_group FROM state_groups WHERE state_group = $1")
            .bind(state_after)
            .fetch_one(&r.pool)
            .await
            .expect("group"),
        sqlx::query_scalar(
            "SELECT i.event_id FROM state_group_entries s JOIN event_ids i USING (event_nid)
             WHERE s.state_group = $1",
        )
        .bind(state_after)
        .fetch_all(&r.pool)
        .await
        .expect("entries"),
    );
    assert_eq!(prev_group, before.state_group);
    assert_eq!(entries, [id.to_string()]);
    assert_eq!(after.state_groups, before.state_groups + 1);

    // It is the room's state now, its only forward extremity, and the answer to its
    // transaction ID.
    assert_eq!(after.state_group, state_after);
    let mut expected = before.current_state.clone();
    expected.insert(("m.room.topic".into(), String::new()), id.to_string());
    assert_eq!(after.current_state, expected);
    assert_eq!(after.extremities, [id.to_string()]);
    assert_eq!(after.txns, [("t1".to_owned(), id.to_string())]);
    assert_eq!(after.events.last(), Some(&id.to_string()));
    assert_eq!(after.events.len(), before.events.len() + 1);
    assert_eq!(after.members, before.members);
    assert_eq!(after.orphan_edges, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_replaces_the_extremity_and_leaves_the_state_alone() {
    let r = room().await;
    let before = rows(&r).await;
    let id = r
        .rooms
        .send(&r.alice, &r.room_id, text("hello"), txn("m1"))
        .await
        .expect("send");
    let after = rows(&r).await;

    let (kind, state_key, ordering, state_before, state_after, _) = event_row(&r.pool, &id).await;
    assert_eq!((kind.as_str(), state_key), ("m.room.message", None));
    assert!(ordering > 0);
    assert_eq!(
        (state_before, state_after),
        (before.state_group, before.state_group)
    );
    assert_eq!(edges(&r.pool, "event_edges", &id).await, before.extremities);
    assert_eq!(
        edges(&r.pool, "event_auth_edges", &id).await,
        sorted(&ids(&pdu_of(&r.pool, &id).await["auth_events"]))
    );
    assert_eq!(after.extremities, [id.to_string()]);
    assert_eq!(after.txns, [("m1".to_owned(), id.to_string())]);
    assert_eq!(
        (after.current_state, after.state_group, after.state_groups),
        (
            before.current_state,
            before.state_group,
            before.state_groups
        ),
        "a message changes no state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_event_sets_the_membership_row_and_the_current_state() {
    let r = room().await;
    let bob = user("bob", HERE);
    let key = ("m.room.member".to_owned(), bob.to_string());

    let join = r
        .rooms
        .set_membership(&bob, &r.room_id, &bob, MembershipState::Join, None, None)
        .await
        .expect("join");
    let after = rows(&r).await;
    assert_eq!(
        after.members.get(bob.as_str()),
        Some(&("join".to_owned(), join.to_string()))
    );
    assert_eq!(after.current_state.get(&key), Some(&join.to_string()));

    let leave = r
        .rooms
        .set_membership(&bob, &r.room_id, &bob, MembershipState::Leave, None, None)
        .await
        .expect("leave");
    let after = rows(&r).await;
    assert_eq!(
        after.members.get(bob.as_str()),
        Some(&("leave".to_owned(), leave.to_string()))
    );
    assert_eq!(after.current_state.get(&key), Some(&leave.to_string()));
    assert_eq!(
        after.members.get(r.alice.as_str()).map(|m| m.0.as_str()),
        Some("join")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_events_are_queued_for_the_servers_of_remote_members_and_theirs_are_not() {
    let r = room().await;
    let mut dag = remote_dag(&r).await;
    let bob = dag.user("bob");

    // Bob's join came from his own server, which sends it to the others itself.
    let join = remote_join(&r, &mut dag, &bob).await;
    let after = rows(&r).await;
    assert_eq!(
        after.members.get(bob.as_str()),
        Some(&("join".to_owned(), join.to_string()))
    );
    assert_eq!(after.extremities, [join.to_string()]);
    assert_eq!(after.outbox, Vec::<(String, String)>::new());

    // Ours goes to bob's server, once, and never to ourselves; a state event as well as a
    // message (the two are written by different statements).
    let message = r
        .rooms
        .send(&r.alice, &r.room_id, text("to bob"), None)
        .await
        .expect("send");
    let topic = r
        .rooms
        .send(&r.alice, &r.room_id, topic("for bob too"), None)
        .await
        .expect("send");
    assert_eq!(
        rows(&r).await.outbox,
        [
            (REMOTE.to_owned(), message.to_string()),
            (REMOTE.to_owned(), topic.to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forks_become_two_extremities_a_merge_one_and_a_gap_stores_nothing() {
    let r = room().await;
    let mut dag = remote_dag(&r).await;
    let bob = dag.user("bob");
    remote_join(&r, &mut dag, &bob).await;

    let at = dag.head();
    let one = dag.message(&bob, "one");
    let a = dag.head();
    dag.fork(&at);
    let two = dag.message(&bob, "two");
    let b = dag.head();
    dag.merge(&[a, b]);
    let merged = dag.message(&bob, "merged");
    // A gap: the server is given the event after `hidden`, never `hidden` itself.
    let hidden = dag.message(&bob, "hidden");
    let after_gap = dag.message(&bob, "after the gap");

    for id in [&one, &two] {
        let outcome = r.rooms.receive_pdu(&r.room_id, dag.event(id), None).await;
        assert_eq!(
            outcome.expect("receive"),
            Outcome::Stored { soft_failed: false }
        );
    }
    assert_eq!(
        rows(&r).await.extremities,
        sorted(&[one.clone(), two.clone()])
    );

    let outcome = r
        .rooms
        .receive_pdu(&r.room_id, dag.event(&merged), None)
        .await;
    assert_eq!(
        outcome.expect("receive"),
        Outcome::Stored { soft_failed: false }
    );
    assert_eq!(
        edges(&r.pool, "event_edges", &merged).await,
        sorted(&[one, two])
    );
    let before = rows(&r).await;
    assert_eq!(before.extremities, [merged.to_string()]);

    let outcome = r
        .rooms
        .receive_pdu(&r.room_id, dag.event(&after_gap), None)
        .await;
    assert_eq!(
        outcome.expect("receive"),
        Outcome::Missing {
            prev: vec![hidden],
            auth: Vec::new()
        }
    );
    assert_eq!(
        rows(&r).await,
        before,
        "an event with a missing prev event stores nothing"
    );
}

/// A send built on the tip remembered in memory, after another process (here a second
/// `Rooms` over the same database) moved the room on: the write finds its expectation
/// false at its last statement, after the event row, the state group and the current state
/// were written in its transaction. None of that stays; the send is built again on the
/// stored tip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_stale_tip_leaves_nothing_and_is_built_again() {
    let r = room().await;
    let other = another_process(&r).await;
    // A message: this process remembers the tip it made.
    r.rooms
        .send(&r.alice, &r.room_id, text("first"), None)
        .await
        .expect("send");
    let moved = other
        .send(&r.alice, &r.room_id, text("from the other process"), None)
        .await
        .expect("send");
    let before = rows(&r).await;
    let numbered = state_groups_numbered(&r.pool).await;

    let id = r
        .rooms
        .send(&r.alice, &r.room_id, topic("on the stored tip"), None)
        .await
        .expect("send");
    let after = rows(&r).await;
    assert_eq!(
        edges(&r.pool, "event_edges", &id).await,
        [moved.to_string()],
        "built again on the tip the other process made"
    );
    assert_eq!(after.extremities, [id.to_string()]);
    assert_eq!(after.events.len(), before.events.len() + 1, "{after:?}");
    assert_eq!(
        after.state_groups,
        before.state_groups + 1,
        "the failed write's state group is gone"
    );
    assert_eq!(
        state_groups_numbered(&r.pool).await,
        numbered + 2,
        "the stale write made a group before it failed"
    );
    assert_eq!(after.orphan_edges, 0);
}

/// A state event reusing a client transaction ID (a retry of an earlier send, with other
/// content) on the remembered tip: the transaction ID row, written last, violates its key.
/// Nothing of the new event stays, and the retry is answered with the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_transaction_id_violating_its_key_leaves_nothing() {
    let r = room().await;
    let first = r
        .rooms
        .send(&r.alice, &r.room_id, text("first"), txn("same"))
        .await
        .expect("send");
    let before = rows(&r).await;
    let numbered = state_groups_numbered(&r.pool).await;
    let answer = r
        .rooms
        .send(&r.alice, &r.room_id, topic("a retry"), txn("same"))
        .await
        .expect("send");
    assert_eq!(answer, first);
    assert_eq!(rows(&r).await, before);
    assert_eq!(state_groups_numbered(&r.pool).await, numbered + 1);
}

/// A constraint the database enforces (added here to force the failure) refuses the last
/// statement of a member event's write in a room with a remote member: the event row, its
/// state group, the current state and the membership row written before it in the same
/// transaction are all gone, and the error reaches the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_violation_at_the_last_statement_leaves_nothing() {
    let r = room().await;
    let mut dag = remote_dag(&r).await;
    let bob = dag.user("bob");
    remote_join(&r, &mut dag, &bob).await;
    sqlx::query(
        "ALTER TABLE federation_outbox ADD CONSTRAINT test_refused
         CHECK (destination <> 'remote.test')",
    )
    .execute(&r.pool)
    .await
    .expect("constraint");
    let before = rows(&r).await;
    let numbered = state_groups_numbered(&r.pool).await;

    let carol = user("carol", HERE);
    let sent = r
        .rooms
        .set_membership(
            &carol,
            &r.room_id,
            &carol,
            MembershipState::Join,
            None,
            None,
        )
        .await;
    let err = format!(
        "{:?}",
        sent.expect_err("the write succeeded despite the constraint")
    );
    assert!(err.contains("test_refused"), "{err}");
    assert_eq!(rows(&r).await, before);
    assert_eq!(state_groups_numbered(&r.pool).await, numbered + 1);
}

/// The task storing a state event is dropped while its transaction waits on a row lock
/// (after the event row, state group, current state and membership rows, before the
/// edges and extremities): once its connection is gone, none of it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_before_commit_leaves_nothing() {
    use sqlx::Connection;
    let r = room().await;
    let before = rows(&r).await;
    let numbered = state_groups_numbered(&r.pool).await;
    let mut blocker = sqlx::PgConnection::connect(&r.url).await.expect("connect");
    let mut hold = blocker.begin().await.expect("begin");
    // Not FOR UPDATE: inserting an event takes a key-share lock on its room, which this
    // lets through; only setting the room's state group waits.
    sqlx::query("SELECT 1 FROM rooms WHERE room_nid = $1 FOR NO KEY UPDATE")
        .bind(r.room_nid)
        .execute(&mut *hold)
        .await
        .expect("lock the room row");

    let rooms = r.rooms.clone();
    let room_id = r.room_id.clone();
    let bob = user("bob", HERE);
    let task = tokio::spawn(async move {
        rooms
            .set_membership(&bob, &room_id, &bob, MembershipState::Join, None, None)
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&r.pool)
        .await
        .expect("activity");
        if let Some(q) = waiting {
            assert!(q.contains("UPDATE rooms"), "waiting elsewhere: {q}");
            break;
        }
        assert!(
            !task.is_finished(),
            "the write ended without waiting on the lock"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    hold.rollback().await.expect("release");
    // The dropped transaction's connection is closed with the pool: only then could a
    // half-written event have become visible.
    r.rooms.close().await;
    r.pool.close().await;

    let fresh = Room {
        pool: db::connect(&r.url, 2).await.expect("connect"),
        ..r
    };
    assert_eq!(rows(&fresh).await, before);
    assert_eq!(state_groups_numbered(&fresh.pool).await, numbered + 1);
}

/// A send refused on the tip this process remembers is built again on what is stored before
/// the refusal is believed: another process may have changed the room. Here bob joins
/// through the other process, and his first message through this one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_refused_on_a_remembered_tip_is_judged_again_on_the_stored_one() {
    let r = room().await;
    let other = another_process(&r).await;
    // A message: this process remembers the tip it made, where bob is not a member.
    r.rooms
        .send(&r.alice, &r.room_id, text("first"), None)
        .await
        .expect("send");
    let bob = user("bob", HERE);
    other
        .join(&bob, &r.room_id, None, &Default::default())
        .await
        .expect("bob joins through the other process");

    let id = r
        .rooms
        .send(&bob, &r.room_id, text("hello from bob"), None)
        .await
        .expect("bob's message is accepted");
    let after = rows(&r).await;
    assert_eq!(after.extremities, [id.to_string()]);
    assert_eq!(after.orphan_edges, 0);
    // Someone who is not a member is still refused, on the stored tip too.
    let carol = user("carol", HERE);
    assert!(
        r.rooms
            .send(&carol, &r.room_id, text("not a member"), None)
            .await
            .is_err()
    );
}

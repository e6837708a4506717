//! Relations: `/relations` pages (filters, recursion, tokens), `/threads`, and the
//! aggregations bundled into events wherever a client reads them, with events of local and
//! remote senders.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::federation::{eventually, membership};
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

static TXN: AtomicUsize = AtomicUsize::new(0);

/// Send an event of `kind` with `content` as `u`; its event ID.
async fn send(s: &TestServer, u: &User, room: &str, kind: &str, content: Value) -> String {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    let path = format!("/_matrix/client/v3/rooms/{room}/send/{kind}/t{txn}");
    let (status, res) = s.put(&path, u.t(), &content).await;
    assert_eq!(status, 200, "send {kind}: {res}");
    res["event_id"].as_str().unwrap().to_owned()
}

fn reply(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body,
           "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

fn edit(of: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("* {body}"),
           "m.new_content": {"msgtype": "m.text", "body": body},
           "m.relates_to": {"rel_type": "m.replace", "event_id": of}})
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap_or_else(|| panic!("chunk: {chunk}"))
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of a `/relations` path (with `query`), following `next_batch`.
async fn all_pages(s: &TestServer, u: &User, path: &str, query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = String::new();
    for _ in 0..50 {
        let (status, page) = s.get(&format!("{path}?{query}{from}"), u.t()).await;
        assert_eq!(status, 200, "{page}");
        out.extend(ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(t) => from = format!("&from={t}"),
            None => return out,
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn relations_are_paged_filtered_and_followed() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let root = s.send_text(&alice, &room, "root").await;
    let mut children = Vec::new();
    for i in 0..4 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        children.push(
            send(
                &s,
                who,
                &room,
                "m.room.message",
                reply(&root, &format!("r{i}")),
            )
            .await,
        );
    }
    children.push(send(&s, &alice, &room, "m.room.message", edit(&root, "root v2")).await);
    let reaction = send(
        &s,
        &bob,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
    )
    .await;
    children.push(reaction.clone());
    // A reaction to a thread reply: a grandchild of the root.
    let grandchild = send(
        &s,
        &alice,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": children[0], "key": "x"}}),
    )
    .await;
    s.send_text(&alice, &room, "unrelated").await;

    let path = format!("/_matrix/client/v1/rooms/{room}/relations/{}", enc(&root));
    // Newest first by default, in pages, to the end.
    let mut newest_first = children.clone();
    newest_first.reverse();
    assert_eq!(all_pages(&s, &bob, &path, "limit=2").await, newest_first);
    assert_eq!(all_pages(&s, &bob, &path, "limit=4&dir=f").await, children);
    // Filters by relation type, and by event type too.
    let (status, page) = s.get(&format!("{path}/m.thread"), bob.t()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page["chunk"]).len(), 4);
    let (_, page) = s
        .get(&format!("{path}/m.annotation/m.reaction"), bob.t())
        .await;
    assert_eq!(ids(&page["chunk"]), vec![reaction.clone()]);
    assert!(page.get("recursion_depth").is_none(), "{page}");
    let (_, page) = s
        .get(&format!("{path}/m.annotation/m.room.message"), bob.t())
        .await;
    assert_eq!(ids(&page["chunk"]), Vec::<String>::new());
    // Recursion reaches the reaction to a reply, and says how deep it looked.
    let (status, page) = s
        .get(&format!("{path}/m.annotation?recurse=true"), bob.t())
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        ids(&page["chunk"]),
        vec![grandchild.clone(), reaction.clone()]
    );
    assert_eq!(page["recursion_depth"], 3);

    // Tokens from /sync and /messages are positions here too.
    let sync = s.sync(&bob, "").await;
    let next_batch = sync["next_batch"].as_str().unwrap();
    let (status, page) = s
        .get(&format!("{path}?from={next_batch}&limit=1"), bob.t())
        .await;
    assert_eq!(status, 200, "{page}");
    // Back from the end: the newest direct child first.
    assert_eq!(ids(&page["chunk"]), vec![reaction.clone()]);
    let (_, msgs) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3"),
            bob.t(),
        )
        .await;
    let end = msgs["end"].as_str().unwrap();
    // Three events back from the end (unrelated, grandchild, reaction): the edit is next.
    let (_, page) = s.get(&format!("{path}?from={end}&limit=1"), bob.t()).await;
    assert_eq!(ids(&page["chunk"]), vec![children[4].clone()]);
    // `to` stops the page.
    let (_, page) = s.get(&format!("{path}?dir=f&to={end}"), bob.t()).await;
    assert_eq!(ids(&page["chunk"]), children[..5].to_vec());

    // Errors: unknown parent, bad token, a stranger to the room.
    assert_error(
        &s.get(
            &format!("/_matrix/client/v1/rooms/{room}/relations/{}", enc("$nope")),
            bob.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{path}?from=bogus"), bob.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    let carol = s.register("carol", "carol-password").await;
    let private = s.create_room(&alice, json!({})).await;
    let secret = s.send_text(&alice, &private, "secret").await;
    let (status, _) = s
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{private}/relations/{}",
                enc(&secret)
            ),
            carol.t(),
        )
        .await;
    assert_eq!(status, 403);
}

/// The `m.relations` bundled with event `id` in a list of client events.
fn bundled<'a>(events: &'a Value, id: &str) -> &'a Value {
    let e = events
        .as_array()
        .unwrap_or_else(|| panic!("events: {events}"))
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {events}"));
    &e["unsigned"]["m.relations"]
}

#[tokio::test]
async fn aggregations_are_bundled_wherever_events_are_read() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let root = s.send_text(&alice, &room, "root").await;
    let r1 = send(&s, &alice, &room, "m.room.message", reply(&root, "r1")).await;
    let r2 = send(&s, &alice, &room, "m.room.message", reply(&root, "r2")).await;
    let e1 = send(&s, &alice, &room, "m.room.message", edit(&root, "root v2")).await;
    let e2 = send(&s, &alice, &room, "m.room.message", edit(&root, "root v3")).await;
    // An edit by someone else is no edit of alice's message.
    send(&s, &bob, &room, "m.room.message", edit(&root, "hijacked")).await;
    let reference = send(
        &s,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see above",
               "m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
    )
    .await;
    // The latest reply is edited too: its edit comes with it in the summary.
    let r2_edit = send(&s, &alice, &room, "m.room.message", edit(&r2, "r2 v2")).await;

    let check = |rel: &Value, who_participated: bool| {
        assert_eq!(rel["m.thread"]["count"], 2, "{rel}");
        assert_eq!(
            rel["m.thread"]["current_user_participated"],
            who_participated
        );
        let latest = &rel["m.thread"]["latest_event"];
        assert_eq!(latest["event_id"], r2.as_str(), "{rel}");
        assert_eq!(
            latest["unsigned"]["m.relations"]["m.replace"]["event_id"],
            r2_edit.as_str(),
            "{rel}"
        );
        assert_eq!(rel["m.replace"]["event_id"], e2.as_str(), "{rel}");
        assert_eq!(
            rel["m.replace"]["content"]["m.new_content"]["body"],
            "root v3"
        );
        assert_eq!(
            rel["m.reference"]["chunk"],
            json!([{"event_id": reference}])
        );
    };

    // /event: the original content, the aggregations bundled.
    let (status, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["content"]["body"], "root");
    check(&ev["unsigned"]["m.relations"], true);
    // Bob started nothing and replied to nothing.
    let (_, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            bob.t(),
        )
        .await;
    check(&ev["unsigned"]["m.relations"], false);
    // /messages, /context, /sync.
    let (_, msgs) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            alice.t(),
        )
        .await;
    check(bundled(&msgs["chunk"], &root), true);
    let (_, ctx) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit=2",
                enc(&r1)
            ),
            alice.t(),
        )
        .await;
    let before = ctx["events_before"].clone();
    check(bundled(&before, &root), true);
    let sync = s.sync(&alice, "").await;
    check(
        bundled(&sync["rooms"]["join"][&room]["timeline"]["events"], &root),
        true,
    );

    // Redacting the latest edit brings the one before back.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{}/x1", enc(&e2)),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            alice.t(),
        )
        .await;
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.replace"]["event_id"],
        e1.as_str()
    );
    // Once bob replies, he has participated.
    send(&s, &bob, &room, "m.room.message", reply(&root, "r3")).await;
    let (_, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            bob.t(),
        )
        .await;
    assert_eq!(ev["unsigned"]["m.relations"]["m.thread"]["count"], 3);
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        true
    );
    // A redacted root has nothing bundled.
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/redact/{}/x2", enc(&root)),
        alice.t(),
        &json!({}),
    )
    .await;
    let (_, ev) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            alice.t(),
        )
        .await;
    assert!(ev["unsigned"].get("m.relations").is_none(), "{ev}");
}

#[tokio::test]
async fn threads_are_listed_by_latest_activity() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let t1 = s.send_text(&alice, &room, "thread one").await;
    let t2 = s.send_text(&alice, &room, "thread two").await;
    let t3 = s.send_text(&bob, &room, "thread three").await;
    s.send_text(&alice, &room, "no thread").await;
    send(&s, &alice, &room, "m.room.message", reply(&t2, "a")).await;
    send(&s, &alice, &room, "m.room.message", reply(&t1, "b")).await;
    send(&s, &bob, &room, "m.room.message", reply(&t2, "c")).await;
    send(&s, &alice, &room, "m.room.message", reply(&t3, "d")).await;

    let path = format!("/_matrix/client/v1/rooms/{room}/threads");
    let (status, page) = s.get(&path, alice.t()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        ids(&page["chunk"]),
        vec![t3.clone(), t2.clone(), t1.clone()]
    );
    assert!(page.get("next_batch").is_none(), "{page}");
    let summary = bundled(&page["chunk"], &t2);
    assert_eq!(summary["m.thread"]["count"], 2);
    // One at a time, following next_batch.
    let mut seen = Vec::new();
    let mut from = String::new();
    for _ in 0..5 {
        let (status, page) = s.get(&format!("{path}?limit=1{from}"), alice.t()).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(t) => from = format!("&from={t}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![t3.clone(), t2.clone(), t1.clone()]);
    // Bob started thread three and replied in thread two.
    let (_, page) = s
        .get(&format!("{path}?include=participated"), bob.t())
        .await;
    assert_eq!(ids(&page["chunk"]), vec![t3.clone(), t2.clone()]);
    // A new reply moves its thread to the front.
    send(&s, &bob, &room, "m.room.message", reply(&t1, "e")).await;
    let (_, page) = s.get(&path, bob.t()).await;
    assert_eq!(ids(&page["chunk"]), vec![t1, t3, t2]);

    assert_error(
        &s.get(&format!("{path}?include=some"), bob.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("{path}?from=x"), bob.t()).await,
        400,
        "M_INVALID_PARAM",
    );
    let carol = s.register("carol", "carol-password").await;
    let private = s.create_room(&alice, json!({})).await;
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{private}/threads"),
            carol.t(),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn replies_from_another_server_join_the_thread() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "threads"}),
        )
        .await;
    let root = a.send_text(&alice, &room, "root").await;
    b.join(&bob, &format!("#threads:{}", a.server_name())).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    let remote_reply = send(&b, &bob, &room, "m.room.message", reply(&root, "from b")).await;
    let path = format!("/_matrix/client/v1/rooms/{room}/relations/{}", enc(&root));
    eventually("A lists B's reply", || async {
        let (_, page) = a.get(&path, alice.t()).await;
        page["chunk"]
            .as_array()
            .is_some_and(|c| c.iter().any(|e| e["event_id"] == remote_reply.as_str()))
    })
    .await;
    let (_, ev) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            alice.t(),
        )
        .await;
    let thread = &ev["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 1, "{ev}");
    assert_eq!(thread["latest_event"]["sender"], bob.user_id.as_str());
    assert_eq!(thread["current_user_participated"], true);
    let (_, page) = a
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads"),
            alice.t(),
        )
        .await;
    assert_eq!(ids(&page["chunk"]), vec![root.clone()]);
    // And B, whose user replied, sees the same thread once it has the root (paging back
    // fetches the history it joined after).
    let (status, _) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            bob.t(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, ev) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&root)),
            bob.t(),
        )
        .await;
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.thread"]["count"], 1,
        "{ev}"
    );
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        true
    );
}

/// The migration that made `event_relations` fills it in for events stored before it, and an
/// event jsonb cannot read (a lone surrogate escape, which only another server could have
/// sent) is passed over rather than stopping the upgrade.
#[tokio::test]
async fn relations_of_events_stored_before_the_table_are_filled_in() {
    let s = TestServer::start().await;
    let (alice, _bob, room) = s.alice_and_bob_in_a_room().await;
    let root = s.send_text(&alice, &room, "root").await;
    let good = send(&s, &alice, &room, "m.room.message", reply(&root, "kept")).await;
    let odd = send(&s, &alice, &room, "m.room.message", reply(&root, "odd")).await;
    let db = common::media::db(&s).await;
    // As before the migration: no relation rows; and one event holding what jsonb refuses.
    sqlx::query("DELETE FROM event_relations")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET json = replace(json, '\"odd\"', '\"\\udc00\"')
         WHERE event_nid = (SELECT event_nid FROM event_ids WHERE event_id = $1)",
    )
    .bind(&odd)
    .execute(&db)
    .await
    .unwrap();
    let migration = include_str!("../migrations/0013_relations.sql");
    let backfill = &migration[migration
        .find("INSERT INTO event_relations")
        .expect("the migration fills the table in")..];
    sqlx::raw_sql(backfill).execute(&db).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.event_id, r.rel_type FROM event_relations r JOIN event_ids i USING (event_nid)",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows, vec![(good, "m.thread".to_owned())]);
}

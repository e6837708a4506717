//! Server-side search (`POST /search`) through the client API: rank and recent order, keys,
//! filters, paging with `next_batch` to the end, count, highlights, context with profiles,
//! groupings, history visibility (joined later, left), encrypted rooms, redactions, bad
//! input, and messages from another server's user.

mod common;

use std::collections::BTreeSet;

use common::federation::{eventually, membership};
use common::rooms::{Forger, public_room, raw, state_ids, timeline};
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

/// POST /search with `criteria` as the room_events category, from `next_batch` if given.
async fn search_raw(
    s: &TestServer,
    u: &User,
    criteria: Value,
    next_batch: Option<&str>,
) -> (u16, Value) {
    let path = match next_batch {
        Some(t) => format!("/_matrix/client/v3/search?next_batch={}", enc(t)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    s.post(
        &path,
        u.t(),
        &json!({"search_categories": {"room_events": criteria}}),
    )
    .await
}

/// The room_events answer of a search that must succeed.
async fn search(s: &TestServer, u: &User, criteria: Value) -> Value {
    let (status, body) = search_raw(s, u, criteria, None).await;
    assert_eq!(status, 200, "search: {body}");
    body["search_categories"]["room_events"].clone()
}

async fn search_from(s: &TestServer, u: &User, criteria: Value, next_batch: &str) -> Value {
    let (status, body) = search_raw(s, u, criteria, Some(next_batch)).await;
    assert_eq!(status, 200, "search: {body}");
    body["search_categories"]["room_events"].clone()
}

/// The body (or name, or topic) of each result, in order.
fn texts(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| {
                    let c = &x["result"]["content"];
                    c["body"]
                        .as_str()
                        .or(c["name"].as_str())
                        .or(c["topic"].as_str())
                        .unwrap_or("-")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn private_room(s: &TestServer, u: &User, extra: Value) -> String {
    let mut body = json!({"preset": "private_chat"});
    if let Some(obj) = extra.as_object() {
        for (k, v) in obj {
            body[k] = v.clone();
        }
    }
    s.create_room(u, body).await
}

async fn invite_and_join(s: &TestServer, inviter: &User, invitee: &User, room: &str) {
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            inviter.t(),
            &json!({"user_id": invitee.user_id}),
        )
        .await;
    assert_eq!(status, 200, "invite: {body}");
    s.join(invitee, room).await;
}

async fn set_state(s: &TestServer, u: &User, room: &str, kind: &str, content: Value) {
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
            u.t(),
            &content,
        )
        .await;
    assert_eq!(status, 200, "{kind}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rank_and_recent_order_keys_count_and_highlights() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let room = private_room(
        &s,
        &alice,
        json!({"name": "Tomato growers", "topic": "all about growing tomatoes"}),
    )
    .await;
    s.send_text(&alice, &room, "I love tomatoes").await;
    s.send_text(&alice, &room, "a tomato soup recipe").await;
    s.send_text(&alice, &room, "tomatoes tomatoes tomatoes everywhere")
        .await;
    s.send_text(&alice, &room, "nothing to see here").await;

    // Rank order, every key: the three messages, the topic and the name.
    let found = search(&s, &alice, json!({"search_term": "tomato"})).await;
    assert_eq!(found["count"], 5, "{found}");
    let got = texts(&found);
    assert_eq!(got.len(), 5, "{found}");
    assert_eq!(got[0], "tomatoes tomatoes tomatoes everywhere", "{got:?}");
    let ranks: Vec<f64> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().expect("rank"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    assert!(found.get("next_batch").is_none(), "{found}");
    // The words that matched, as stemming and prefixes found them.
    let highlights: BTreeSet<String> = strings(&found["highlights"]).into_iter().collect();
    assert_eq!(
        highlights,
        ["tomato", "tomatoes"].map(str::to_owned).into(),
        "{found}"
    );

    // Recent order: newest first.
    let found = search(
        &s,
        &alice,
        json!({"search_term": "tomato", "order_by": "recent"}),
    )
    .await;
    assert_eq!(
        texts(&found),
        [
            "tomatoes tomatoes tomatoes everywhere",
            "a tomato soup recipe",
            "I love tomatoes",
            "all about growing tomatoes",
            "Tomato growers",
        ]
    );

    // Keys narrow the search to bodies, topics or names.
    let body_only = search(
        &s,
        &alice,
        json!({"search_term": "tomato", "keys": ["content.body"], "order_by": "recent"}),
    )
    .await;
    assert_eq!(body_only["count"], 3);
    let topic_only = search(
        &s,
        &alice,
        json!({"search_term": "growing", "keys": ["content.topic"]}),
    )
    .await;
    assert_eq!(texts(&topic_only), ["all about growing tomatoes"]);
    assert_eq!(topic_only["results"][0]["result"]["type"], "m.room.topic");
    let name_only = search(
        &s,
        &alice,
        json!({"search_term": "growers", "keys": ["content.name"]}),
    )
    .await;
    assert_eq!(texts(&name_only), ["Tomato growers"]);
    // A word the name lacks finds nothing under that key.
    let none = search(
        &s,
        &alice,
        json!({"search_term": "love", "keys": ["content.name", "content.topic"]}),
    )
    .await;
    assert_eq!(none["count"], 0);
    assert!(texts(&none).is_empty());

    // Phrases, alternatives and exclusions, as a web search reads them.
    let phrase = search(&s, &alice, json!({"search_term": "\"soup recipe\""})).await;
    assert_eq!(texts(&phrase), ["a tomato soup recipe"]);
    let either = search(
        &s,
        &alice,
        json!({"search_term": "soup or see", "order_by": "recent"}),
    )
    .await;
    assert_eq!(
        texts(&either),
        ["nothing to see here", "a tomato soup recipe"]
    );
    let without = search(
        &s,
        &alice,
        json!({"search_term": "tomato -love -soup", "keys": ["content.body"]}),
    )
    .await;
    assert_eq!(texts(&without), ["tomatoes tomatoes tomatoes everywhere"]);
    // Stop words alone match nothing, and that is no error.
    let stop = search(&s, &alice, json!({"search_term": "the and of"})).await;
    assert_eq!(stop["count"], 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_rooms_senders_types_and_limit() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let bob = s.register("bob", "password").await;
    let r1 = private_room(&s, &alice, json!({"topic": "apple orchard"})).await;
    let r2 = private_room(&s, &alice, json!({})).await;
    invite_and_join(&s, &alice, &bob, &r1).await;
    invite_and_join(&s, &alice, &bob, &r2).await;
    s.send_text(&alice, &r1, "apple one").await;
    s.send_text(&bob, &r1, "apple two").await;
    s.send_text(&alice, &r2, "apple three").await;
    s.send_text(&bob, &r2, "apple four").await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{r2}/send/m.room.message/file"),
            bob.t(),
            &json!({"msgtype": "m.file", "body": "apple.pdf", "url": "mxc://example.org/abc"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let recent =
        |filter: Value| json!({"search_term": "apple", "order_by": "recent", "filter": filter});
    let all = search(&s, &alice, recent(json!({}))).await;
    assert_eq!(
        texts(&all),
        [
            "apple.pdf",
            "apple four",
            "apple three",
            "apple two",
            "apple one",
            "apple orchard"
        ]
    );
    let only_r1 = search(&s, &alice, recent(json!({"rooms": [r1]}))).await;
    assert_eq!(texts(&only_r1), ["apple two", "apple one", "apple orchard"]);
    assert_eq!(only_r1["count"], 3);
    let not_r1 = search(&s, &alice, recent(json!({"not_rooms": [r1]}))).await;
    assert_eq!(texts(&not_r1), ["apple.pdf", "apple four", "apple three"]);
    let bobs = search(&s, &alice, recent(json!({"senders": [bob.user_id]}))).await;
    assert_eq!(texts(&bobs), ["apple.pdf", "apple four", "apple two"]);
    let not_bobs = search(&s, &alice, recent(json!({"not_senders": [bob.user_id]}))).await;
    assert_eq!(
        texts(&not_bobs),
        ["apple three", "apple one", "apple orchard"]
    );
    let topics = search(&s, &alice, recent(json!({"types": ["m.room.t*"]}))).await;
    assert_eq!(texts(&topics), ["apple orchard"]);
    let no_topics = search(&s, &alice, recent(json!({"not_types": ["m.room.topic"]}))).await;
    assert_eq!(no_topics["count"], 5);
    let with_url = search(&s, &alice, recent(json!({"contains_url": true}))).await;
    assert_eq!(texts(&with_url), ["apple.pdf"]);
    let without_url = search(&s, &alice, recent(json!({"contains_url": false}))).await;
    assert_eq!(without_url["count"], 5);
    let two = search(&s, &alice, recent(json!({"limit": 2}))).await;
    assert_eq!(texts(&two), ["apple.pdf", "apple four"]);
    assert_eq!(two["count"], 6);
    assert!(two["next_batch"].is_string(), "{two}");
    // A room the user is not in is never searched, even when named.
    let carol = s.register("carol", "password").await;
    let theirs = search(&s, &carol, recent(json!({"rooms": [r1]}))).await;
    assert_eq!(theirs["count"], 0);
    assert!(texts(&theirs).is_empty());
    s.shutdown().await;
}

/// Every page from the first, following next_batch until it is absent.
async fn all_pages(s: &TestServer, u: &User, criteria: Value) -> (Vec<String>, Vec<Value>) {
    let mut texts_seen = Vec::new();
    let mut pages = Vec::new();
    let mut page = search(s, u, criteria.clone()).await;
    for _ in 0..100 {
        texts_seen.extend(texts(&page));
        pages.push(page.clone());
        match page["next_batch"].as_str() {
            Some(next) => page = search_from(s, u, criteria.clone(), next).await,
            None => return (texts_seen, pages),
        }
    }
    panic!("paging did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_next_batch_reaches_the_end_once() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let room = private_room(&s, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        // Ranks differ: later messages repeat the word more often, some share a rank.
        let body = format!("{} number {i}", "kiwi ".repeat(1 + i % 4).trim_end());
        s.send_text(&alice, &room, &body).await;
        sent.push(body);
    }
    s.send_text(&alice, &room, "banana").await;

    // Recent order: newest first, every match once.
    let criteria = json!({"search_term": "kiwi", "order_by": "recent", "filter": {"limit": 5}});
    let (got, pages) = all_pages(&s, &alice, criteria.clone()).await;
    let mut newest_first = sent.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);
    assert_eq!(pages.len(), 5);
    assert!(pages.iter().all(|p| p["count"] == 23), "{pages:?}");

    // A match that arrives between pages is not slipped into later pages.
    let first = search(&s, &alice, criteria.clone()).await;
    s.send_text(&alice, &room, "kiwi latecomer").await;
    let next = first["next_batch"].as_str().unwrap();
    let second = search_from(&s, &alice, criteria.clone(), next).await;
    assert_eq!(texts(&second), newest_first[5..10]);

    // Rank order: pages continue below the last rank returned, every match once, ranks
    // never rising from one page to the next.
    let criteria = json!({"search_term": "kiwi", "filter": {"limit": 4}});
    let first = search(&s, &alice, criteria.clone()).await;
    assert_eq!(first["count"], 24);
    s.send_text(&alice, &room, "kiwi kiwi kiwi kiwi kiwi kiwi newest")
        .await;
    let mut got = texts(&first);
    let mut ranks: Vec<f64> = Vec::new();
    let mut page = first;
    for _ in 0..100 {
        ranks.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["rank"].as_f64().unwrap()),
        );
        let Some(next) = page["next_batch"].as_str() else {
            break;
        };
        page = search_from(&s, &alice, criteria.clone(), next).await;
        got.extend(texts(&page));
    }
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    // The pages hold the matches that existed at the first page: not the one sent after.
    let mut expected = sent.clone();
    expected.push("kiwi latecomer".to_owned());
    let got_set: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), got_set.len(), "a result came twice: {got:?}");
    assert_eq!(got_set, expected.iter().collect(), "{got:?}");

    // Tokens are checked: garbage, and a rank token used for recent order.
    let (status, body) = search_raw(&s, &alice, criteria.clone(), Some("r1_zz_2")).await;
    assert_error(&(status, body), 400, "M_INVALID_PARAM");
    let rank_token = search(&s, &alice, criteria.clone()).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let recent = json!({"search_term": "kiwi", "order_by": "recent"});
    let answer = search_raw(&s, &alice, recent, Some(&rank_token)).await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_carries_events_around_and_profiles() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let bob = s.register("bob", "password").await;
    for (u, name) in [(&alice, "Alice Anders"), (&bob, "Bob Bauer")] {
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", enc(&u.user_id)),
                u.t(),
                &json!({"displayname": name}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let room = private_room(&s, &alice, json!({})).await;
    invite_and_join(&s, &alice, &bob, &room).await;
    s.send_text(&alice, &room, "first").await;
    s.send_text(&bob, &room, "second").await;
    s.send_text(&alice, &room, "the needle").await;
    s.send_text(&bob, &room, "fourth").await;
    s.send_text(&alice, &room, "fifth").await;

    let found = search(
        &s,
        &alice,
        json!({"search_term": "needle", "event_context": {
            "before_limit": 2, "after_limit": 1, "include_profile": true}}),
    )
    .await;
    let result = &found["results"][0];
    assert_eq!(result["result"]["content"]["body"], "the needle");
    let context = &result["context"];
    let bodies = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["content"]["body"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    assert_eq!(bodies(&context["events_before"]), ["second", "first"]);
    assert_eq!(bodies(&context["events_after"]), ["fourth"]);
    assert_eq!(
        context["profile_info"][&alice.user_id]["displayname"], "Alice Anders",
        "{context}"
    );
    assert_eq!(
        context["profile_info"][&bob.user_id]["displayname"],
        "Bob Bauer"
    );
    // The tokens continue /messages both ways.
    let (status, back) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={}",
                enc(context["start"].as_str().unwrap())
            ),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{back}");
    assert_ne!(back["chunk"][0]["content"]["body"], "first", "{back}");
    let (status, forward) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1&from={}",
                enc(context["end"].as_str().unwrap())
            ),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{forward}");
    assert_eq!(forward["chunk"][0]["content"]["body"], "fifth");

    // Without include_profile there is no profile_info; without context, no context.
    let plain = search(
        &s,
        &alice,
        json!({"search_term": "needle", "event_context": {"before_limit": 1, "after_limit": 0}}),
    )
    .await;
    assert!(plain["results"][0]["context"].get("profile_info").is_none());
    assert_eq!(
        bodies(&plain["results"][0]["context"]["events_before"]),
        ["second"]
    );
    let none = search(
        &s,
        &alice,
        json!({"search_term": "needle", "event_context": {"before_limit": 0, "after_limit": 0}}),
    )
    .await;
    assert!(none["results"][0].get("context").is_none(), "{none}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groupings_by_room_and_sender_with_their_own_next_batch() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let bob = s.register("bob", "password").await;
    let r1 = private_room(&s, &alice, json!({})).await;
    let r2 = private_room(&s, &alice, json!({})).await;
    invite_and_join(&s, &alice, &bob, &r1).await;
    let mut ids = std::collections::HashMap::new();
    for (u, room, body) in [
        (&alice, &r1, "plum a"),
        (&bob, &r1, "plum b"),
        (&alice, &r2, "plum c"),
        (&bob, &r1, "plum d"),
        (&alice, &r2, "plum e"),
    ] {
        ids.insert(body, s.send_text(u, room, body).await);
    }
    let criteria = json!({"search_term": "plum", "order_by": "recent",
        "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]}});
    let found = search(&s, &alice, criteria.clone()).await;
    let rooms = &found["groups"]["room_id"];
    assert_eq!(
        strings(&rooms[&r1]["results"]),
        [
            ids["plum d"].clone(),
            ids["plum b"].clone(),
            ids["plum a"].clone()
        ]
    );
    assert_eq!(
        strings(&rooms[&r2]["results"]),
        [ids["plum e"].clone(), ids["plum c"].clone()]
    );
    // Groups are ordered by where their first result stands.
    assert_eq!(rooms[&r2]["order"], 1);
    assert_eq!(rooms[&r1]["order"], 2);
    let senders = &found["groups"]["sender"];
    assert_eq!(strings(&senders[&bob.user_id]["results"]).len(), 2);
    assert_eq!(strings(&senders[&alice.user_id]["results"]).len(), 3);
    assert!(rooms[&r1].get("next_batch").is_none(), "{found}");

    // A page cut short gives each group a token that continues that group alone.
    let limited = json!({"search_term": "plum", "order_by": "recent", "filter": {"limit": 2},
        "groupings": {"group_by": [{"key": "room_id"}]}});
    let first = search(&s, &alice, limited.clone()).await;
    assert_eq!(texts(&first), ["plum e", "plum d"]);
    let r1_next = first["groups"]["room_id"][&r1]["next_batch"]
        .as_str()
        .unwrap();
    let rest_of_r1 = search_from(&s, &alice, limited.clone(), r1_next).await;
    assert_eq!(texts(&rest_of_r1), ["plum b", "plum a"]);
    assert!(rest_of_r1.get("next_batch").is_none(), "{rest_of_r1}");
    let r2_next = first["groups"]["room_id"][&r2]["next_batch"]
        .as_str()
        .unwrap();
    let rest_of_r2 = search_from(&s, &alice, limited, r2_next).await;
    assert_eq!(texts(&rest_of_r2), ["plum c"]);

    // include_state: each room's current state comes along.
    let with_state = search(
        &s,
        &alice,
        json!({"search_term": "plum", "include_state": true, "filter": {"rooms": [r2]}}),
    )
    .await;
    let state = with_state["state"][&r2].as_array().expect("state of r2");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "{with_state}"
    );
    assert!(with_state["state"].get(&r1).is_none());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_visibility_bounds_what_is_found() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let bob = s.register("bob", "password").await;
    let carol = s.register("carol", "password").await;

    // `joined`: what was said before bob joined is not his to find.
    let joined = private_room(&s, &alice, json!({})).await;
    set_state(
        &s,
        &alice,
        &joined,
        "m.room.history_visibility",
        json!({"history_visibility": "joined"}),
    )
    .await;
    s.send_text(&alice, &joined, "papaya before bob").await;
    invite_and_join(&s, &alice, &bob, &joined).await;
    s.send_text(&alice, &joined, "papaya with bob").await;
    let found = search(
        &s,
        &bob,
        json!({"search_term": "papaya", "order_by": "recent"}),
    )
    .await;
    assert_eq!(texts(&found), ["papaya with bob"]);
    // Alice finds both.
    let found = search(
        &s,
        &alice,
        json!({"search_term": "papaya", "order_by": "recent"}),
    )
    .await;
    assert_eq!(texts(&found), ["papaya with bob", "papaya before bob"]);

    // `shared` (the default): a later member finds earlier history too.
    let shared = private_room(&s, &alice, json!({})).await;
    s.send_text(&alice, &shared, "mango before carol").await;
    invite_and_join(&s, &alice, &carol, &shared).await;
    let found = search(&s, &carol, json!({"search_term": "mango"})).await;
    assert_eq!(texts(&found), ["mango before carol"]);

    // After leaving, carol still finds what she could see, never what came later.
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{shared}/leave"),
            carol.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.send_text(&alice, &shared, "mango after carol").await;
    let found = search(
        &s,
        &carol,
        json!({"search_term": "mango", "order_by": "recent"}),
    )
    .await;
    assert_eq!(texts(&found), ["mango before carol"]);
    // Rank order too, and the count says as much.
    let found = search(&s, &carol, json!({"search_term": "mango"})).await;
    assert_eq!(texts(&found), ["mango before carol"]);
    assert_eq!(found["count"], 1);

    // Hidden matches are skipped while paging: bob pages through a room where most matches
    // precede his join, one result per page.
    for i in 0..12 {
        s.send_text(&alice, &joined, &format!("guava hidden {i}"))
            .await;
    }
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{joined}/invite"),
            alice.t(),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.join(&carol, &joined).await;
    s.send_text(&alice, &joined, "guava seen 1").await;
    s.send_text(&alice, &joined, "guava seen 2").await;
    let (got, _) = all_pages(
        &s,
        &carol,
        json!({"search_term": "guava", "order_by": "recent", "filter": {"limit": 1}}),
    )
    .await;
    assert_eq!(got, ["guava seen 2", "guava seen 1"]);

    // Hidden matches between visible ones, read over several chunks of one page: each
    // visible match still comes once, and the last page says there is no more.
    let dave = s.register("dave", "password").await;
    let open = private_room(&s, &alice, json!({})).await;
    invite_and_join(&s, &alice, &dave, &open).await;
    let closed = private_room(&s, &alice, json!({})).await;
    set_state(
        &s,
        &alice,
        &closed,
        "m.room.history_visibility",
        json!({"history_visibility": "joined"}),
    )
    .await;
    s.send_text(&alice, &open, "kumquat open 1").await;
    for i in 0..4 {
        s.send_text(&alice, &closed, &format!("kumquat closed {i}"))
            .await;
    }
    s.send_text(&alice, &open, "kumquat open 2").await;
    invite_and_join(&s, &alice, &dave, &closed).await;
    for order in ["recent", "rank"] {
        let (got, pages) = all_pages(
            &s,
            &dave,
            json!({"search_term": "kumquat", "order_by": order, "filter": {"limit": 1}}),
        )
        .await;
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(
            got_sorted,
            ["kumquat open 1", "kumquat open 2"],
            "{order}: {got:?}"
        );
        assert_eq!(pages.len(), 2, "{order}: {pages:?}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_rooms_and_redacted_messages_are_not_found() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let room = private_room(
        &s,
        &alice,
        json!({"initial_state": [{"type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/e1"),
            alice.t(),
            &json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "lychee lychee",
                "sender_key": "key", "session_id": "session", "device_id": "DEV"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let found = search(&s, &alice, json!({"search_term": "lychee"})).await;
    assert_eq!(found["count"], 0, "{found}");
    assert!(texts(&found).is_empty());

    let plain = private_room(&s, &alice, json!({})).await;
    let gone = s.send_text(&alice, &plain, "quince to forget").await;
    s.send_text(&alice, &plain, "quince to keep").await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{plain}/redact/{gone}/r1"),
            alice.t(),
            &json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let found = search(&s, &alice, json!({"search_term": "quince"})).await;
    assert_eq!(texts(&found), ["quince to keep"]);
    assert_eq!(found["count"], 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_answers_400() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let room = private_room(&s, &alice, json!({})).await;
    s.send_text(&alice, &room, "fig").await;
    for (criteria, errcode) in [
        (json!({"search_term": ""}), "M_INVALID_PARAM"),
        (json!({"search_term": "   "}), "M_INVALID_PARAM"),
        (json!({"search_term": "x".repeat(1001)}), "M_INVALID_PARAM"),
        (
            json!({"search_term": "fig", "keys": ["content.msgtype"]}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"search_term": "fig", "order_by": "newest"}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"search_term": "fig", "groupings": {"group_by": [{"key": "type"}]}}),
            "M_INVALID_PARAM",
        ),
        (json!({"keys": ["content.body"]}), "M_BAD_JSON"),
        (json!({"search_term": 7}), "M_BAD_JSON"),
        (
            json!({"search_term": "fig", "filter": {"senders": vec!["@a:b"; 1001]}}),
            "M_BAD_JSON",
        ),
    ] {
        let answer = search_raw(&s, &alice, criteria.clone(), None).await;
        assert_error(&answer, 400, errcode);
    }
    for token in [
        "",
        "x",
        "t1",
        "t1_2_3",
        "r1_3f800000",
        "t1_2~rnope",
        "t1_2~q@a:b",
    ] {
        let answer = search_raw(
            &s,
            &alice,
            json!({"search_term": "fig", "order_by": "recent"}),
            Some(token),
        )
        .await;
        assert_error(&answer, 400, "M_INVALID_PARAM");
    }
    // No token, no search.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/search",
            None,
            &json!({"search_categories": {"room_events": {"search_term": "fig"}}}),
        )
        .await;
    assert_eq!(status, 401);
    // No category asked for: an empty answer.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/search",
            alice.t(),
            &json!({"search_categories": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"search_categories": {}}));
    // Limits are capped, not refused.
    let found = search(
        &s,
        &alice,
        json!({"search_term": "fig", "filter": {"limit": 100000},
        "event_context": {"before_limit": 100000, "after_limit": 100000}}),
    )
    .await;
    assert_eq!(texts(&found), ["fig"]);
    s.shutdown().await;
}

/// The auth events of a message from `sender` in room version 12: the power levels and the
/// sender's membership (the create event is implied by the room ID).
async fn message_auth(
    a: &TestServer,
    alice: &User,
    room: &str,
    sender: &str,
) -> Vec<ruma::OwnedEventId> {
    let state = state_ids(a, alice, room).await;
    [("m.room.power_levels", ""), ("m.room.member", sender)]
        .iter()
        .map(|(t, k)| {
            ruma::OwnedEventId::try_from(state[&(t.to_string(), k.to_string())].as_str()).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_another_server_are_found() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = public_room(&a, &alice, "orchard").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob joined", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    b.send_text(&bob, &room, "greetings about cherries").await;
    eventually("alice finds bob's message on A", || async {
        let found = search(&a, &alice, json!({"search_term": "cherries"})).await;
        texts(&found) == ["greetings about cherries"]
    })
    .await;
    let found = search(&a, &alice, json!({"search_term": "cherry"})).await;
    assert_eq!(
        found["results"][0]["result"]["sender"],
        bob.user_id.as_str()
    );
    // Bob finds his own on B, and alice's from A once it arrives.
    a.send_text(&alice, &room, "more cherries here").await;
    eventually("bob finds alice's message on B", || async {
        let found = search(
            &b,
            &bob,
            json!({"search_term": "cherries", "order_by": "recent"}),
        )
        .await;
        texts(&found) == ["more cherries here", "greetings about cherries"]
    })
    .await;

    // A signed event may carry \u0000, which Postgres cannot read as jsonb: it is stored
    // (the index makes no error of it) and still found.
    let forger = Forger::new(&a, &b, &room, &bob.user_id, ruma::RoomVersionId::V12);
    let auth = message_auth(&a, &alice, &room, &bob.user_id).await;
    let prev =
        ruma::OwnedEventId::try_from(timeline(&a, &alice, &room).await.last().unwrap().0.as_str())
            .unwrap();
    let (id, pdu) = forger.message("nul\u{0}byte damson", &prev, &auth, 100);
    assert!(pdu.contains("\\u0000"), "{pdu}");
    let (status, answer) = forger.send("nul-1", vec![raw(&pdu)]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"][id.as_str()], json!({}), "{answer}");
    let found = search(&a, &alice, json!({"search_term": "damson"})).await;
    assert_eq!(
        found["results"][0]["result"]["event_id"],
        id.as_str(),
        "{found}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// The index expressions read every message, name, topic and member event as it is written:
/// none may raise, whatever text the event holds, or the row (and the batch it came in) would
/// be refused. Rows Trellis would never write are stored directly to prove it, then searched
/// past with a filter that reads their content too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_refused_for_its_text() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let room = private_room(&s, &alice, json!({})).await;
    s.send_text(&alice, &room, "elderberry").await;
    let db = common::media::db(&s).await;
    let (room_nid,): (i64,) = sqlx::query_as("SELECT room_nid FROM rooms WHERE room_id = $1")
        .bind(&room)
        .fetch_one(&db)
        .await
        .unwrap();
    let hostile = [
        (
            "m.room.message",
            r#"{"content":{"body":"elderberry \u0000 nul"}}"#,
        ),
        (
            "m.room.message",
            r#"{"content":{"body":"elderberry \ud800 lone"}}"#,
        ),
        ("m.room.message", r#"{"content":{"body":1e999999}}"#),
        ("m.room.topic", r#"{"content":{"topic":"\u0000"}}"#),
        ("m.room.name", r#"{"content":{"name":["not", "text"]}}"#),
        (
            "m.room.member",
            r#"{"state_key":"@x:y","content":{"membership":"join","displayname":"\ud800"}}"#,
        ),
        (
            "m.room.member",
            r#"{"state_key":"@x:y","content":{"membership":"join","displayname":"\u0000"}}"#,
        ),
    ];
    for (i, (kind, json)) in hostile.iter().enumerate() {
        let (nid,): (i64,) =
            sqlx::query_as("INSERT INTO event_ids (event_id) VALUES ($1) RETURNING event_nid")
                .bind(format!("$hostile{i}"))
                .fetch_one(&db)
                .await
                .unwrap();
        sqlx::query(
            "INSERT INTO events (event_nid, room_nid, event_type, sender, origin_server_ts,
                                 depth, json, outlier)
             VALUES ($1, $2, $3, '@x:y', 0, 1, $4, TRUE)",
        )
        .bind(nid)
        .bind(room_nid)
        .bind(kind)
        .bind(json)
        .execute(&db)
        .await
        .unwrap_or_else(|e| panic!("{json} refused: {e}"));
    }
    // Nor under a parallel plan, which refuses the subtransaction catching an error takes:
    // the functions keep such plans away.
    let mut conn = db.acquire().await.unwrap();
    // The setting's name since Postgres 16, and before.
    if sqlx::query("SET debug_parallel_query = on")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        sqlx::query("SET force_parallel_mode = on")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    for set in [
        "SET parallel_setup_cost = 0",
        "SET min_parallel_table_scan_size = 0",
    ] {
        sqlx::query(set).execute(&mut *conn).await.unwrap();
    }
    let (indexed,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events
         WHERE trellis_search_vector(room_nid, event_type, json) IS NOT NULL
            OR trellis_member_vector(json) IS NOT NULL
            OR trellis_event_content(json) IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(indexed > 0);
    drop(conn);
    for filter in [json!({}), json!({"contains_url": false})] {
        let found = search(
            &s,
            &alice,
            json!({"search_term": "elderberry", "filter": filter}),
        )
        .await;
        assert_eq!(texts(&found), ["elderberry"]);
    }
    db.close().await;
    s.shutdown().await;
}

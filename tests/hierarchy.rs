//! Spaces: the client `/hierarchy` walk over rooms on two Trellis servers (pages, limits,
//! `max_depth`, `suggested_only`, tokens, who sees what, cached remote answers) and the
//! federation `/hierarchy` endpoint (children, inaccessible children, errors).

mod common;

use common::federation::signed;
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

/// A public room (a space when `space`) named `name`, created by `u`.
async fn public_room(s: &TestServer, u: &User, name: &str, space: bool) -> String {
    let mut body = json!({"preset": "public_chat", "name": name});
    if space {
        body["creation_content"] = json!({"type": "m.space"});
    }
    s.create_room(u, body).await
}

/// Make `child` a child of `space` (reachable through `via`), placed by `order`.
async fn add_child(
    s: &TestServer,
    u: &User,
    space: &str,
    child: &str,
    via: &str,
    order: &str,
    suggested: bool,
) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.space.child/{}",
        enc(space),
        enc(child)
    );
    let content = json!({"via": [via], "order": order, "suggested": suggested});
    let (status, body) = s.put(&path, u.t(), &content).await;
    assert_eq!(status, 200, "set m.space.child: {body}");
}

async fn hierarchy(s: &TestServer, u: &User, room: &str, query: &str) -> (u16, Value) {
    s.get(
        &format!("/_matrix/client/v1/rooms/{}/hierarchy{query}", enc(room)),
        u.t(),
    )
    .await
}

/// Every page of the walk, following `next_batch`; each page's room IDs.
async fn pages(s: &TestServer, u: &User, room: &str, query: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let sep = if query.is_empty() { "?" } else { "&" };
        let q = match &from {
            Some(t) => format!("{query}{sep}from={}", enc(t)),
            None => query.to_owned(),
        };
        let (status, body) = hierarchy(s, u, room, &q).await;
        assert_eq!(status, 200, "hierarchy page: {body}");
        out.push(ids(&body));
        match body["next_batch"].as_str() {
            Some(t) => from = Some(t.to_owned()),
            None => return out,
        }
        assert!(out.len() < 50, "the walk ends");
    }
}

/// Owned copies, to compare with the IDs a response lists.
fn v<const N: usize>(ids: [&String; N]) -> Vec<String> {
    ids.into_iter().cloned().collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

fn room<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["rooms"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["room_id"] == id))
        .unwrap_or_else(|| panic!("{id} in {body}"))
}

fn children_state(room: &Value) -> Vec<String> {
    room["children_state"]
        .as_array()
        .expect("children_state")
        .iter()
        .map(|e| e["state_key"].as_str().expect("state_key").to_owned())
        .collect()
}

/// The three-level space of the tests, on servers A and B (`*` marks suggested children):
///
/// ```text
/// S0 (A) ── a: A1 (A)
///        ── b: S1 (B)* ── a: A2 (A)
///        │             ── b: B2 (B)
///        │             ── c: S2 (B)* ── a: B3 (B)*
///        │                          ── b: A3 (A)
///        │                          ── c: S0 (a loop back to the top)
///        ── c: B1 (B)
/// ```
struct Tree {
    a: TestServer,
    b: TestServer,
    alice: User,
    bob: User,
    s0: String,
    a1: String,
    s1: String,
    b1: String,
    a2: String,
    b2: String,
    s2: String,
    b3: String,
    a3: String,
}

impl Tree {
    async fn build() -> Tree {
        let a = TestServer::start_federating().await;
        let b = TestServer::start_federating().await;
        let alice = a.register("alice", "password-a").await;
        let bob = b.register("bob", "password-b").await;
        let (sa, sb) = (a.server_name().to_owned(), b.server_name().to_owned());
        let s0 = public_room(&a, &alice, "S0", true).await;
        let a1 = public_room(&a, &alice, "A1", false).await;
        let a2 = public_room(&a, &alice, "A2", false).await;
        let a3 = public_room(&a, &alice, "A3", false).await;
        let s1 = public_room(&b, &bob, "S1", true).await;
        let s2 = public_room(&b, &bob, "S2", true).await;
        let b1 = public_room(&b, &bob, "B1", false).await;
        let b2 = public_room(&b, &bob, "B2", false).await;
        let b3 = public_room(&b, &bob, "B3", false).await;
        add_child(&a, &alice, &s0, &a1, &sa, "a", false).await;
        add_child(&a, &alice, &s0, &s1, &sb, "b", true).await;
        add_child(&a, &alice, &s0, &b1, &sb, "c", false).await;
        add_child(&b, &bob, &s1, &a2, &sa, "a", false).await;
        add_child(&b, &bob, &s1, &b2, &sb, "b", false).await;
        add_child(&b, &bob, &s1, &s2, &sb, "c", true).await;
        add_child(&b, &bob, &s2, &b3, &sb, "a", true).await;
        add_child(&b, &bob, &s2, &a3, &sa, "b", false).await;
        add_child(&b, &bob, &s2, &s0, &sa, "c", false).await;
        Tree {
            a,
            b,
            alice,
            bob,
            s0,
            a1,
            s1,
            b1,
            a2,
            b2,
            s2,
            b3,
            a3,
        }
    }

    /// The whole tree in walk order: depth first, children in their `order`.
    fn walk_order(&self) -> Vec<String> {
        [
            &self.s0, &self.a1, &self.s1, &self.a2, &self.b2, &self.s2, &self.b3, &self.a3,
            &self.b1,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

#[tokio::test]
async fn a_three_level_space_over_two_servers_comes_back_whole_page_by_page() {
    let t = Tree::build().await;
    let (a, alice) = (&t.a, &t.alice);

    // One page holds it all: every room once, depth first, the loop back to S0 broken.
    let (status, body) = hierarchy(a, alice, &t.s0, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), t.walk_order());
    assert!(body.get("next_batch").is_none(), "{body}");

    // Rooms summarised by B (a space, with its children) and by A.
    let s1 = room(&body, &t.s1);
    assert_eq!(s1["name"], "S1");
    assert_eq!(s1["room_type"], "m.space");
    // Spelled out even though the spec lets `public` be left out: Synapse passes what we
    // answer to its clients as it is.
    assert_eq!(s1["join_rule"], "public", "{s1}");
    assert_eq!(s1["num_joined_members"], 1);
    assert_eq!(s1["world_readable"], false);
    assert_eq!(s1["guest_can_join"], false);
    assert_eq!(children_state(s1), v([&t.a2, &t.b2, &t.s2]));
    let child = &s1["children_state"][0];
    assert_eq!(child["type"], "m.space.child");
    assert_eq!(child["sender"], t.bob.user_id.as_str());
    assert!(child["origin_server_ts"].is_u64(), "{child}");
    assert_eq!(child["content"]["via"], json!([a.server_name()]));
    let s0 = room(&body, &t.s0);
    assert_eq!(children_state(s0), v([&t.a1, &t.s1, &t.b1]));
    assert_eq!(s0["join_rule"], "public", "{s0}");
    assert_eq!(s0["room_version"], "12");
    let b2 = room(&body, &t.b2);
    assert_eq!(b2["name"], "B2");
    assert!(b2.get("room_type").is_none(), "{b2}");
    assert_eq!(children_state(b2), Vec::<String>::new());
    assert_eq!(room(&body, &t.a3)["name"], "A3");

    // Two rooms a page: five pages, every room exactly once, in the same order.
    let paged = pages(a, alice, &t.s0, "?limit=2").await;
    assert_eq!(paged.len(), 5, "{paged:?}");
    assert!(paged.iter().all(|p| p.len() <= 2), "{paged:?}");
    assert_eq!(paged.concat(), t.walk_order());
    // Page sizes may change between pages.
    let (_, first) = hierarchy(a, alice, &t.s0, "?limit=3").await;
    assert_eq!(ids(&first), t.walk_order()[..3]);
    let token = first["next_batch"].as_str().expect("next_batch").to_owned();
    let rest = format!("?limit=10&from={}", enc(&token));
    let (status, second) = hierarchy(a, alice, &t.s0, &rest).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(ids(&second), t.walk_order()[3..]);
    assert!(second.get("next_batch").is_none());
    // A token stays good: the same page again (a client's retry).
    let (status, again) = hierarchy(a, alice, &t.s0, &rest).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(ids(&again), ids(&second));

    // A token only continues the request it came from.
    for query in [
        format!("?from={}&max_depth=1", enc(&token)),
        format!("?from={}&suggested_only=true", enc(&token)),
        format!("?from={}&max_depth=10", enc(&token)),
    ] {
        assert_error(
            &hierarchy(a, alice, &t.s0, &query).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    assert_error(
        &hierarchy(a, alice, &t.a1, &format!("?from={}", enc(&token))).await,
        400,
        "M_INVALID_PARAM",
    );
    let carol = a.register("carol", "password-c").await;
    assert_error(
        &hierarchy(a, &carol, &t.s0, &format!("?from={}", enc(&token))).await,
        400,
        "M_INVALID_PARAM",
    );
    // Carol (not in any of the rooms, all public) walks the same tree herself.
    assert_eq!(
        pages(a, &carol, &t.s0, "?limit=4").await.concat(),
        t.walk_order()
    );
}

#[tokio::test]
async fn max_depth_and_suggested_only_bound_the_walk() {
    let t = Tree::build().await;
    let (a, alice) = (&t.a, &t.alice);

    let walk = |query: &'static str| pages(a, alice, &t.s0, query);
    assert_eq!(walk("?max_depth=0").await.concat(), v([&t.s0]));
    assert_eq!(
        walk("?max_depth=1").await.concat(),
        v([&t.s0, &t.a1, &t.s1, &t.b1])
    );
    assert_eq!(
        walk("?max_depth=2&limit=2").await.concat(),
        v([&t.s0, &t.a1, &t.s1, &t.a2, &t.b2, &t.s2, &t.b1])
    );
    // A room at max_depth still shows its children, which are not walked.
    let (_, body) = hierarchy(a, alice, &t.s0, "?max_depth=1").await;
    assert_eq!(children_state(room(&body, &t.s1)), v([&t.a2, &t.b2, &t.s2]));
    // Deeper than the server walks is no error.
    assert_eq!(walk("?max_depth=1000").await.concat(), t.walk_order());

    // Only suggested children, at every level (B filters S1's and S2's children).
    let (status, body) = hierarchy(a, alice, &t.s0, "?suggested_only=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), v([&t.s0, &t.s1, &t.s2, &t.b3]));
    assert_eq!(children_state(room(&body, &t.s0)), v([&t.s1]));
    assert_eq!(children_state(room(&body, &t.s2)), v([&t.b3]));
    assert_eq!(
        walk("?suggested_only=true&limit=1").await.concat(),
        v([&t.s0, &t.s1, &t.s2, &t.b3])
    );
}

#[tokio::test]
async fn answers_from_other_servers_are_cached() {
    let t = Tree::build().await;
    let (a, b, alice, bob) = (&t.a, &t.b, &t.alice, &t.bob);
    assert_eq!(pages(a, alice, &t.s0, "").await.concat(), t.walk_order());

    // B adds a room to S1: B says so at once, A keeps its answer from B for an hour.
    let b4 = public_room(b, bob, "B4", false).await;
    add_child(b, bob, &t.s1, &b4, b.server_name(), "d", false).await;
    let path = format!("/_matrix/federation/v1/hierarchy/{}", enc(&t.s1));
    let (status, fresh) = signed(a, b, "GET", &path, None).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        children_state(&fresh["room"]),
        v([&t.a2, &t.b2, &t.s2, &b4])
    );
    let (_, body) = hierarchy(a, alice, &t.s0, "").await;
    assert_eq!(ids(&body), t.walk_order());
    assert_eq!(children_state(room(&body, &t.s1)), v([&t.a2, &t.b2, &t.s2]));

    // With suggested_only, A asks B afresh (answers are kept per question); B4 is not
    // suggested and stays out.
    let (_, suggested) = hierarchy(a, alice, &t.s0, "?suggested_only=true").await;
    assert_eq!(ids(&suggested), v([&t.s0, &t.s1, &t.s2, &t.b3]));
}

#[tokio::test]
async fn rooms_the_caller_may_not_see_are_left_out() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let carol = a.register("carol", "password-c").await;
    let bob = b.register("bob", "password-b").await;
    let sb = b.server_name().to_owned();
    let space = b
        .create_room(
            &bob,
            json!({"preset": "public_chat", "name": "SP", "room_alias_name": "sp",
                   "creation_content": {"type": "m.space"}}),
        )
        .await;
    let public = public_room(&b, &bob, "public", false).await;
    let private = b
        .create_room(&bob, json!({"preset": "private_chat", "name": "private"}))
        .await;
    let readable = b
        .create_room(
            &bob,
            json!({"preset": "private_chat", "name": "readable",
                   "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                                      "content": {"history_visibility": "world_readable"}}]}),
        )
        .await;
    let restricted = b
        .create_room(
            &bob,
            json!({"preset": "private_chat", "name": "restricted",
                   "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                       "content": {"join_rule": "restricted",
                                   "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
        )
        .await;
    // A private space under the private room's sibling: its public child stays hidden,
    // since nobody may see the space that names it.
    let hidden_space = b
        .create_room(
            &bob,
            json!({"preset": "private_chat", "name": "hidden", "creation_content": {"type": "m.space"}}),
        )
        .await;
    let under_hidden = public_room(&b, &bob, "under hidden", false).await;
    add_child(&b, &bob, &hidden_space, &under_hidden, &sb, "a", false).await;
    for (i, child) in [&public, &private, &readable, &restricted, &hidden_space]
        .into_iter()
        .enumerate()
    {
        add_child(&b, &bob, &space, child, &sb, &i.to_string(), false).await;
    }

    // Over federation, before anyone of A is in the space: what A may see of it.
    let path = format!("/_matrix/federation/v1/hierarchy/{}", enc(&space));
    let (status, body) = signed(&a, &b, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["room_id"], space.as_str());
    assert_eq!(body["room"]["name"], "SP");
    assert_eq!(body["room"]["room_type"], "m.space");
    assert_eq!(body["room"]["join_rule"], "public", "{body}");
    assert_eq!(
        children_state(&body["room"]),
        v([&public, &private, &readable, &restricted, &hidden_space])
    );
    let listed = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["room_id"].as_str().or(c.as_str()).expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(listed(&body["children"]), sorted(vec![&public, &readable]));
    assert_eq!(
        listed(&body["inaccessible_children"]),
        sorted(vec![&private, &restricted, &hidden_space])
    );
    let readable_summary = body["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["room_id"] == readable.as_str()))
        .expect("readable room");
    assert_eq!(readable_summary["world_readable"], true);
    assert_eq!(readable_summary["join_rule"], "invite");
    let public_summary = body["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["room_id"] == public.as_str()))
        .expect("public room");
    assert_eq!(public_summary["join_rule"], "public", "{public_summary}");
    assert!(readable_summary.get("children_state").is_none());
    // A private room is unknown to A's server as a root.
    let path_private = format!("/_matrix/federation/v1/hierarchy/{}", enc(&private));
    assert_error(
        &signed(&a, &b, "GET", &path_private, None).await,
        404,
        "M_NOT_FOUND",
    );

    // Alice joins the space: now A may see the restricted room, with its allowed rooms.
    a.join(&alice, &format!("#sp:{sb}")).await;
    let (status, body) = signed(&a, &b, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&body["children"]),
        sorted(vec![&public, &readable, &restricted])
    );
    assert_eq!(
        listed(&body["inaccessible_children"]),
        sorted(vec![&private, &hidden_space])
    );
    let restricted_summary = body["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["room_id"] == restricted.as_str()))
        .expect("restricted room");
    assert_eq!(restricted_summary["join_rule"], "restricted");
    assert_eq!(restricted_summary["allowed_room_ids"], json!([space]));

    // Alice, in the space, sees the restricted room; carol, on the same server, does not.
    // Neither sees the private room, nor the private space or what is under it.
    let (status, body) = hierarchy(&a, &alice, &space, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), v([&space, &public, &readable, &restricted]));
    let (status, body) = hierarchy(&a, &carol, &space, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), v([&space, &public, &readable]));
    // The space itself lists every child.
    assert_eq!(children_state(room(&body, &space)).len(), 5);

    // On B: bob sees everything he is in; a stranger is refused the private room as root.
    let (_, body) = hierarchy(&b, &bob, &space, "").await;
    assert_eq!(
        ids(&body),
        v([
            &space,
            &public,
            &private,
            &readable,
            &restricted,
            &hidden_space,
            &under_hidden
        ])
    );
    let dave = b.register("dave", "password-d").await;
    assert_error(
        &hierarchy(&b, &dave, &private, "").await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        ids(&hierarchy(&b, &dave, &space, "").await.1),
        v([&space, &public, &readable])
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_matrix_errors() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let space = public_room(&a, &alice, "space", true).await;
    let unknown = format!("!unknown:{}", a.server_name());

    for query in [
        "?limit=0",
        "?limit=-1",
        "?limit=many",
        "?max_depth=-1",
        "?max_depth=deep",
        "?suggested_only=maybe",
        "?from=garbage",
        "?from=",
        // Well formed, but no walk of ours.
        "?from=AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let result = hierarchy(&a, &alice, &space, query).await;
        assert_error(&result, 400, "M_INVALID_PARAM");
    }
    assert_error(
        &a.get(
            "/_matrix/client/v1/rooms/not-a-room-id/hierarchy",
            alice.t(),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // The spec answers 403 for a room the server does not know.
    assert_error(
        &hierarchy(&a, &alice, &unknown, "").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &a.get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space)),
            None,
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );

    // Federation: unknown rooms are 404, bad parameters 400, unsigned requests 401.
    let path =
        |room: &str, query: &str| format!("/_matrix/federation/v1/hierarchy/{}{query}", enc(room));
    assert_error(
        &signed(&b, &a, "GET", &path(&unknown, ""), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &signed(&b, &a, "GET", &path(&space, "?suggested_only=maybe"), None).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &signed(&b, &a, "GET", &path("not-a-room-id", ""), None).await,
        400,
        "M_INVALID_PARAM",
    );
    let (status, body) = signed(&b, &a, "GET", &path(&space, ""), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["room_id"], space.as_str());
    assert_eq!(body["children"], json!([]));
    assert_eq!(body["inaccessible_children"], json!([]));
    let unsigned = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
        .get(a.federation_url(&path(&space, "")))
        .send()
        .await
        .expect("request");
    assert_eq!(unsigned.status().as_u16(), 401);
}

#[tokio::test]
async fn pages_and_walks_are_bounded_by_the_server_not_the_request() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password-a").await;
    let space = public_room(&s, &alice, "big", true).await;
    // More rooms than one page may hold, whatever the client asks.
    let mut rooms = Vec::new();
    for i in 0..105 {
        let r = s
            .create_room(&alice, json!({"preset": "public_chat"}))
            .await;
        add_child(
            &s,
            &alice,
            &space,
            &r,
            s.server_name(),
            &format!("{i:03}"),
            false,
        )
        .await;
        rooms.push(r);
    }
    let (status, body) = hierarchy(&s, &alice, &space, "?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body).len(), 100, "MAX_LIMIT rooms");
    assert!(body["next_batch"].is_string());
    let (_, body) = hierarchy(&s, &alice, &space, "").await;
    assert_eq!(ids(&body).len(), 50, "DEFAULT_LIMIT rooms");
    let mut all = vec![space.clone()];
    all.extend(rooms);
    assert_eq!(pages(&s, &alice, &space, "?limit=1000").await.concat(), all);

    // Rooms nobody can tell us about cost a look each; a page stops after a fixed number
    // of looks, however many rooms it was asked for, and the walk goes on from there.
    let phantoms = public_room(&s, &alice, "phantoms", true).await;
    for i in 0..260 {
        let child = format!("!phantom{i}:{}", s.server_name());
        add_child(
            &s,
            &alice,
            &phantoms,
            &child,
            s.server_name(),
            &format!("{i:03}"),
            false,
        )
        .await;
    }
    let (status, body) = hierarchy(&s, &alice, &phantoms, "?limit=100").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), v([&phantoms]));
    assert_eq!(children_state(&body["rooms"][0]).len(), 260);
    let token = body["next_batch"].as_str().expect("more to walk");
    let (status, body) = hierarchy(
        &s,
        &alice,
        &phantoms,
        &format!("?limit=100&from={}", enc(token)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), Vec::<String>::new());
    assert!(body.get("next_batch").is_none(), "{body}");
}

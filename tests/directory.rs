//! Room aliases and the room directory through the client API: create, resolve and delete
//! aliases, list a room's aliases, publish rooms, and page and filter `/publicRooms`.

mod common;

use std::collections::HashSet;

use common::server::{TestServer, assert_error, enc};
use serde_json::{Value, json};

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("chunk in {page}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_create_resolve_list_delete() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let alias = "#garden:trellis.test";

    let (status, res) = s
        .put(&alias_path(alias), alice.t(), &json!({"room_id": room}))
        .await;
    assert_eq!(status, 200, "{res}");

    // Anyone may resolve it, without an access token.
    let (status, res) = s.get(&alias_path(alias), None).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["room_id"], room.as_str());
    assert_eq!(res["servers"], json!(["trellis.test"]));

    // Taken: Synapse and the spec answer 409 M_UNKNOWN, which needs an Error variant of its
    // own; until then the alias-in-use errcode createRoom uses.
    let taken = s
        .put(&alias_path(alias), alice.t(), &json!({"room_id": room}))
        .await;
    assert_error(&taken, 409, "M_UNKNOWN");

    // Aliases belong to their server.
    let foreign = s
        .put(
            &alias_path("#garden:elsewhere.test"),
            alice.t(),
            &json!({"room_id": room}),
        )
        .await;
    assert_error(&foreign, 400, "M_INVALID_PARAM");

    // Unknown room; a room the caller is not in.
    let unknown = s
        .put(
            &alias_path("#nowhere:trellis.test"),
            alice.t(),
            &json!({"room_id": "!unknown:trellis.test"}),
        )
        .await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let outsider = s
        .put(
            &alias_path("#bobs:trellis.test"),
            bob.t(),
            &json!({"room_id": room}),
        )
        .await;
    assert_error(&outsider, 403, "M_FORBIDDEN");

    // A malformed alias is a bad path parameter.
    let (status, _) = s
        .put(
            "/_matrix/client/v3/directory/room/garden",
            alice.t(),
            &json!({"room_id": room}),
        )
        .await;
    assert_eq!(status, 400);

    // Unknown aliases are not found; a remote alias is asked of its server, and one that
    // cannot be reached is a 502 (tests/federation.rs resolves a reachable one).
    assert_error(
        &s.get(&alias_path("#nothing:trellis.test"), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&alias_path("#garden:elsewhere.test"), None).await,
        502,
        "M_UNKNOWN",
    );

    // Local aliases of the room: members only while history is not world-readable.
    let aliases_path = format!("/_matrix/client/v3/rooms/{room}/aliases");
    let (status, res) = s.get(&aliases_path, alice.t()).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["aliases"], json!([alias]));
    assert_error(&s.get(&aliases_path, bob.t()).await, 403, "M_FORBIDDEN");
    assert_error(
        &s.get(
            "/_matrix/client/v3/rooms/!unknown:trellis.test/aliases",
            alice.t(),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
            alice.t(),
            &json!({"history_visibility": "world_readable"}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = s.get(&aliases_path, bob.t()).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["aliases"], json!([alias]));

    // A joined member without moderator power may not delete alice's alias...
    s.join(&bob, &room).await;
    assert_error(
        &s.delete(&alias_path(alias), bob.t(), None).await,
        403,
        "M_FORBIDDEN",
    );
    // ...but may delete one of their own.
    let own = "#bobs:trellis.test";
    let (status, res) = s
        .put(&alias_path(own), bob.t(), &json!({"room_id": room}))
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = s.delete(&alias_path(own), bob.t(), None).await;
    assert_eq!(status, 200, "{res}");
    // The room's creator is a moderator and may delete anyone's.
    let (status, res) = s
        .put(&alias_path(own), bob.t(), &json!({"room_id": room}))
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = s.delete(&alias_path(own), alice.t(), None).await;
    assert_eq!(status, 200, "{res}");

    let (status, res) = s.delete(&alias_path(alias), alice.t(), None).await;
    assert_eq!(status, 200, "{res}");
    assert_error(&s.get(&alias_path(alias), None).await, 404, "M_NOT_FOUND");
    assert_error(
        &s.delete(&alias_path(alias), alice.t(), None).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, res) = s.get(&aliases_path, alice.t()).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["aliases"], json!([]));

    // Once deleted, the alias is free again.
    let (status, res) = s
        .put(&alias_path(alias), alice.t(), &json!({"room_id": room}))
        .await;
    assert_eq!(status, 200, "{res}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_canonical_alias_updates_the_room() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let room = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "lobby"}),
        )
        .await;
    let canonical = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/");
    let (status, res) = s.get(&canonical, alice.t()).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["alias"], "#lobby:trellis.test");

    let (status, res) = s
        .delete(&alias_path("#lobby:trellis.test"), alice.t(), None)
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = s.get(&canonical, alice.t()).await;
    assert_eq!(status, 200, "{res}");
    assert!(res.get("alias").is_none(), "{res}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_visibility() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "Hall"}))
        .await;
    let path = format!("/_matrix/client/v3/directory/list/room/{room}");

    // Open to anyone; private until published.
    let (status, res) = s.get(&path, None).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["visibility"], "private");
    let (_, list) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(room_ids(&list), Vec::<String>::new());

    // Not joined, or joined without moderator power: forbidden.
    let set = |v: &'static str| json!({ "visibility": v });
    assert_error(
        &s.put(&path, bob.t(), &set("public")).await,
        403,
        "M_FORBIDDEN",
    );
    s.join(&bob, &room).await;
    assert_error(
        &s.put(&path, bob.t(), &set("public")).await,
        403,
        "M_FORBIDDEN",
    );

    let (status, res) = s.put(&path, alice.t(), &set("public")).await;
    assert_eq!(status, 200, "{res}");
    let (_, res) = s.get(&path, None).await;
    assert_eq!(res["visibility"], "public");
    let (_, list) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(room_ids(&list), vec![room.clone()]);
    assert_eq!(list["chunk"][0]["name"], "Hall");
    assert_eq!(list["chunk"][0]["num_joined_members"], 2);

    // Power granted through the power levels: bob may now hide it.
    let (status, levels) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            alice.t(),
        )
        .await;
    assert_eq!(status, 200, "{levels}");
    let mut levels = levels;
    levels["users"][&bob.user_id] = json!(50);
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            alice.t(),
            &levels,
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = s.put(&path, bob.t(), &set("private")).await;
    assert_eq!(status, 200, "{res}");
    let (_, res) = s.get(&path, None).await;
    assert_eq!(res["visibility"], "private");
    assert_error(
        &s.put(&path, carol.t(), &set("public")).await,
        403,
        "M_FORBIDDEN",
    );

    // Unknown rooms.
    let unknown = "/_matrix/client/v3/directory/list/room/!unknown:trellis.test";
    assert_error(&s.get(unknown, None).await, 404, "M_NOT_FOUND");
    assert_error(
        &s.put(unknown, alice.t(), &set("public")).await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_entries_and_filters() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;

    let garden = s.create_room(&alice,
        json!({
            "visibility": "public", "preset": "public_chat", "name": "Garden Club",
            "topic": "Roses and tulips", "room_alias_name": "garden",
            "initial_state": [
                {"type": "m.room.avatar", "content": {"url": "mxc://trellis.test/rose"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}
            ]
        }),
    )
    .await;
    s.join(&bob, &garden).await;
    let kitchen = s.create_room(&alice,
        json!({"visibility": "public", "preset": "private_chat", "name": "Kitchen", "topic": "Recipes 100% tested"}),
    )
    .await;
    let space = s
        .create_room(
            &alice,
            json!({
                "visibility": "public", "preset": "public_chat", "name": "Home Space",
                "creation_content": {"type": "m.space"}
            }),
        )
        .await;
    // Created but not published.
    s.create_room(
        &alice,
        json!({"preset": "public_chat", "name": "Hidden garden"}),
    )
    .await;

    let (status, list) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_room_count_estimate"], 3);
    assert!(list.get("next_batch").is_none(), "{list}");
    assert!(list.get("prev_batch").is_none(), "{list}");
    let ids = room_ids(&list);
    // Most members first, then by room ID.
    assert_eq!(ids[0], garden);
    let mut rest = [kitchen.clone(), space.clone()];
    rest.sort();
    assert_eq!(ids[1..], rest[..]);

    let entry = &list["chunk"][0];
    assert_eq!(entry["name"], "Garden Club");
    assert_eq!(entry["topic"], "Roses and tulips");
    assert_eq!(entry["canonical_alias"], "#garden:trellis.test");
    assert_eq!(entry["avatar_url"], "mxc://trellis.test/rose");
    assert_eq!(entry["num_joined_members"], 2);
    assert_eq!(entry["world_readable"], true);
    assert_eq!(entry["guest_can_join"], true);
    // `public` is the default join rule of a directory entry, so it may be left out.
    assert!(
        entry.get("join_rule").is_none_or(|j| j == "public"),
        "{entry}"
    );
    assert!(entry.get("room_type").is_none(), "{entry}");
    let kitchen_entry = list["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["room_id"] == kitchen.as_str())
        .unwrap();
    assert_eq!(kitchen_entry["join_rule"], "invite");
    assert_eq!(kitchen_entry["world_readable"], false);
    assert_eq!(kitchen_entry["guest_can_join"], true);
    let space_entry = list["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["room_id"] == space.as_str())
        .unwrap();
    assert_eq!(space_entry["room_type"], "m.space");

    // The filtered listing needs an access token.
    let post = |body: Value| {
        let s = &s;
        let t = alice.token.clone();
        async move {
            s.post("/_matrix/client/v3/publicRooms", Some(&t), &body)
                .await
        }
    };
    let (status, _) = s
        .post("/_matrix/client/v3/publicRooms", None, &json!({}))
        .await;
    assert_eq!(status, 401);

    // Search: name, topic and alias, case-insensitively; LIKE wildcards are literal.
    for (term, want) in [
        ("garden", vec![garden.clone()]),
        ("TULIP", vec![garden.clone()]),
        ("#GARDEN:", vec![garden.clone()]),
        ("kitch", vec![kitchen.clone()]),
        ("100%", vec![kitchen.clone()]),
        ("%", vec![kitchen.clone()]),
        ("_", vec![]),
        ("nothing like this", vec![]),
    ] {
        let (status, page) = post(json!({"filter": {"generic_search_term": term}})).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(room_ids(&page), want, "search {term:?}");
        assert_eq!(page["total_room_count_estimate"], want.len(), "{term:?}");
    }

    // Room types: null is an ordinary room.
    let (_, page) = post(json!({"filter": {"room_types": ["m.space"]}})).await;
    assert_eq!(room_ids(&page), vec![space.clone()]);
    let (_, page) = post(json!({"filter": {"room_types": [null]}})).await;
    assert_eq!(room_ids(&page)[0], garden);
    assert_eq!(room_ids(&page).len(), 2);
    assert!(!room_ids(&page).contains(&space));
    let (_, page) = post(json!({"filter": {"room_types": [null, "m.space"]}})).await;
    assert_eq!(room_ids(&page).len(), 3);
    let (_, page) = post(json!({"filter": {"room_types": ["org.example.custom"]}})).await;
    assert_eq!(room_ids(&page), Vec::<String>::new());
    let (_, page) =
        post(json!({"filter": {"generic_search_term": "home", "room_types": ["m.space"]}})).await;
    assert_eq!(room_ids(&page), vec![space.clone()]);

    // All networks are this server's rooms; a third-party network has none here.
    let (_, page) = post(json!({"include_all_networks": true})).await;
    assert_eq!(room_ids(&page).len(), 3);
    let (status, page) = post(json!({"third_party_instance_id": "irc"})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(room_ids(&page), Vec::<String>::new());

    // A redacted topic is gone from the entry and from search.
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{kitchen}/state/m.room.topic/"),
            alice.t(),
            &json!({"topic": "Soups and stews"}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let topic_event = res["event_id"].as_str().unwrap().to_owned();
    let (_, page) = post(json!({"filter": {"generic_search_term": "stews"}})).await;
    assert_eq!(room_ids(&page), vec![kitchen.clone()]);
    assert_eq!(page["chunk"][0]["topic"], "Soups and stews");
    let (status, res) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{kitchen}/redact/{}/r1",
                enc(&topic_event)
            ),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let (_, page) = post(json!({"filter": {"generic_search_term": "stews"}})).await;
    assert_eq!(room_ids(&page), Vec::<String>::new());
    let (_, page) = post(json!({"filter": {"generic_search_term": "kitchen"}})).await;
    assert_eq!(room_ids(&page), vec![kitchen.clone()]);
    assert!(page["chunk"][0].get("topic").is_none(), "{page}");
    assert_eq!(page["chunk"][0]["name"], "Kitchen");

    // Our own server by name; another server's directory is asked over federation, and one
    // that cannot be reached is a 502 (tests/federation.rs lists a reachable one).
    let (status, page) = s
        .get("/_matrix/client/v3/publicRooms?server=trellis.test", None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(room_ids(&page).len(), 3);
    assert_error(
        &s.get("/_matrix/client/v3/publicRooms?server=elsewhere.test", None)
            .await,
        502,
        "M_UNKNOWN",
    );
    let (status, _) = s
        .post(
            "/_matrix/client/v3/publicRooms?server=elsewhere.test",
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 502);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_pagination() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let mut rooms = Vec::new();
    for i in 0..25 {
        rooms.push(
            s.create_room(&alice,
                json!({"visibility": "public", "preset": "public_chat", "name": format!("Room {i}")}),
            )
            .await,
        );
    }
    // Some rooms with more members, so both sort keys matter.
    for room in &rooms[..7] {
        s.join(&bob, room).await;
    }

    // Forward through pages of 10: each room exactly once, in directory order.
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut since: Option<String> = None;
    loop {
        let mut path = "/_matrix/client/v3/publicRooms?limit=10".to_owned();
        if let Some(t) = &since {
            path.push_str(&format!("&since={}", enc(t)));
        }
        let (status, page) = s.get(&path, None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total_room_count_estimate"], 25);
        assert!(page["chunk"].as_array().unwrap().len() <= 10);
        assert_eq!(page.get("prev_batch").is_some(), since.is_some(), "{page}");
        seen.extend(room_ids(&page));
        pages.push(page.clone());
        match page["next_batch"].as_str() {
            Some(t) => since = Some(t.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
    let counts: Vec<u64> = pages
        .iter()
        .flat_map(|p| p["chunk"].as_array().unwrap().clone())
        .map(|e| e["num_joined_members"].as_u64().unwrap())
        .collect();
    assert!(counts[..7].iter().all(|&c| c == 2), "{counts:?}");
    assert!(counts[7..].iter().all(|&c| c == 1), "{counts:?}");
    let mut expected: Vec<String> = rooms[..7].to_vec();
    expected.sort();
    let mut ones: Vec<String> = rooms[7..].to_vec();
    ones.sort();
    expected.extend(ones);
    assert_eq!(seen, expected);

    // Backward from the last page gives the middle page again.
    let prev = pages[2]["prev_batch"].as_str().unwrap();
    let (status, back) = s
        .get(
            &format!(
                "/_matrix/client/v3/publicRooms?limit=10&since={}",
                enc(prev)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(room_ids(&back), room_ids(&pages[1]));
    assert!(back["next_batch"].is_string() && back["prev_batch"].is_string());
    // And from there back to the first page, which has nothing before it.
    let prev = back["prev_batch"].as_str().unwrap();
    let (_, first) = s
        .get(
            &format!(
                "/_matrix/client/v3/publicRooms?limit=10&since={}",
                enc(prev)
            ),
            None,
        )
        .await;
    assert_eq!(room_ids(&first), room_ids(&pages[0]));
    assert!(first.get("prev_batch").is_none(), "{first}");

    // A well-formed token past the end: an empty page that still counts every room.
    let (status, end) = s
        .get(
            "/_matrix/client/v3/publicRooms?since=n0_IXp6ejp0cmVsbGlzLnRlc3Q",
            None,
        )
        .await;
    assert_eq!(status, 200, "{end}");
    assert_eq!(room_ids(&end), Vec::<String>::new());
    assert_eq!(end["total_room_count_estimate"], 25);
    assert!(end.get("next_batch").is_none(), "{end}");

    // The filtered listing pages the same way.
    let mut filtered = Vec::new();
    let mut since: Option<String> = None;
    for _ in 0..10 {
        let mut body = json!({"limit": 4, "filter": {"generic_search_term": "room 1"}});
        if let Some(t) = &since {
            body["since"] = json!(t);
        }
        let (status, page) = s
            .post("/_matrix/client/v3/publicRooms", alice.t(), &body)
            .await;
        assert_eq!(status, 200, "{page}");
        // "Room 1" and "Room 10" to "Room 19".
        assert_eq!(page["total_room_count_estimate"], 11);
        filtered.extend(room_ids(&page));
        match page["next_batch"].as_str() {
            Some(t) => since = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(filtered.len(), 11);
    assert_eq!(filtered.iter().collect::<HashSet<_>>().len(), 11);

    // Malformed tokens.
    for bad in [
        "garbage",
        "n",
        "n1",
        "n1_",
        "x1_IWE6Yg",
        "n-1_IWE6Yg",
        "n+1_IWE6Yg",
        "na_IWE6Yg",
        "n1_!!!",
        "n1_bm90IGEgcm9vbQ",
    ] {
        assert_error(
            &s.get(
                &format!("/_matrix/client/v3/publicRooms?since={}", enc(bad)),
                None,
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
        assert_error(
            &s.post(
                "/_matrix/client/v3/publicRooms",
                alice.t(),
                &json!({"since": bad}),
            )
            .await,
            400,
            "M_INVALID_PARAM",
        );
    }
    s.shutdown().await;
}

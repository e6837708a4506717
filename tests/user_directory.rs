//! The user directory (`POST /user_directory/search`) through the client API: who may be
//! found (sharing a room, in a public room, oneself; not a stranger in a private room, not a
//! deactivated account), word-prefix matching of user IDs and display names, profile
//! changes, limit and limited, bad input, and a user of another server.

mod common;

use common::federation::{eventually, membership};
use common::rooms::public_room;
use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

async fn directory_raw(s: &TestServer, u: &User, body: Value) -> (u16, Value) {
    s.post("/_matrix/client/v3/user_directory/search", u.t(), &body)
        .await
}

/// The answer of a directory search that must succeed.
async fn directory(s: &TestServer, u: &User, term: &str, limit: Option<u64>) -> Value {
    let mut body = json!({"search_term": term});
    if let Some(l) = limit {
        body["limit"] = l.into();
    }
    let (status, answer) = directory_raw(s, u, body).await;
    assert_eq!(status, 200, "directory: {answer}");
    answer
}

/// The user IDs found, in order.
fn found(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn set_displayname(s: &TestServer, u: &User, name: &str) {
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&u.user_id)),
            u.t(),
            &json!({"displayname": name}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn private_room_with(s: &TestServer, creator: &User, others: &[&User]) -> String {
    let room = s
        .create_room(creator, json!({"preset": "private_chat"}))
        .await;
    for u in others {
        let (status, body) = s
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                creator.t(),
                &json!({"user_id": u.user_id}),
            )
            .await;
        assert_eq!(status, 200, "invite: {body}");
        s.join(u, &room).await;
    }
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_be_found() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let bob = s.register("bobby", "password").await;
    let stranger = s.register("bobcat", "password").await;
    let host = s.register("host", "password").await;
    let lobbyist = s.register("bobsleigh", "password").await;
    set_displayname(&s, &bob, "Robert Tables").await;

    // Bob shares a private room with alice; the stranger is in a private room of their own;
    // the lobbyist is in a public room alice is not in.
    private_room_with(&s, &alice, &[&bob]).await;
    private_room_with(&s, &stranger, &[]).await;
    let (lobby, _) = public_room(&s, &host, "lobby").await;
    s.join(&lobbyist, &lobby).await;

    let answer = directory(&s, &alice, "bob", None).await;
    assert_eq!(
        found(&answer),
        [bob.user_id.as_str(), lobbyist.user_id.as_str()]
    );
    assert_eq!(answer["limited"], false);
    assert_eq!(answer["results"][0]["display_name"], "Robert Tables");
    // Registration gives a display name: the localpart, as Synapse does.
    assert_eq!(
        answer["results"][1]["display_name"], "bobsleigh",
        "{answer}"
    );

    // Display name words, by prefix and in any case; user ID words too.
    assert_eq!(
        found(&directory(&s, &alice, "rob", None).await),
        [bob.user_id.as_str()]
    );
    assert_eq!(
        found(&directory(&s, &alice, "TABL", None).await),
        [bob.user_id.as_str()]
    );
    assert_eq!(
        found(&directory(&s, &alice, "robert tab", None).await),
        [bob.user_id.as_str()]
    );
    assert_eq!(
        found(&directory(&s, &alice, &bob.user_id, None).await),
        [bob.user_id.as_str()]
    );
    // Every word must match; words match at their start only.
    assert!(found(&directory(&s, &alice, "robert chairs", None).await).is_empty());
    assert!(found(&directory(&s, &alice, "obert", None).await).is_empty());
    // The searcher finds themselves, even in no room at all.
    let loner = s.register("loner", "password").await;
    assert_eq!(
        found(&directory(&s, &loner, "loner", None).await),
        [loner.user_id.as_str()]
    );
    assert_eq!(
        found(&directory(&s, &alice, "alice", None).await),
        [alice.user_id.as_str()]
    );
    // Nobody else finds the loner, who shares no room.
    assert!(found(&directory(&s, &alice, "loner", None).await).is_empty());
    // The stranger finds themselves and the lobbyist, not bob, who is in no public room.
    assert_eq!(
        found(&directory(&s, &stranger, "bob", None).await),
        [stranger.user_id.as_str(), lobbyist.user_id.as_str()]
    );

    // A room made private later hides its members from those who share nothing else.
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{lobby}/state/m.room.join_rules/"),
            host.t(),
            &json!({"join_rule": "invite"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        found(&directory(&s, &alice, "bob", None).await),
        [bob.user_id.as_str()]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_changes_limits_and_deactivation_show_at_once() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(s.register(&format!("walker{i}"), "password").await);
    }
    let refs: Vec<&User> = others.iter().collect();
    private_room_with(&s, &alice, &refs).await;

    // Limit and limited.
    let answer = directory(&s, &alice, "walker", Some(3)).await;
    assert_eq!(found(&answer).len(), 3);
    assert_eq!(answer["limited"], true);
    let answer = directory(&s, &alice, "walker", Some(5)).await;
    assert_eq!(found(&answer).len(), 5);
    assert_eq!(answer["limited"], false);
    let answer = directory(&s, &alice, "walker", None).await;
    assert_eq!(found(&answer).len(), 5);

    // A display name change shows at once: found by the new name, no longer by the old.
    set_displayname(&s, &others[0], "Sky Runner").await;
    let answer = directory(&s, &alice, "sky", None).await;
    assert_eq!(found(&answer), [others[0].user_id.as_str()]);
    assert_eq!(answer["results"][0]["display_name"], "Sky Runner");
    set_displayname(&s, &others[0], "Moon Walker").await;
    assert!(found(&directory(&s, &alice, "sky", None).await).is_empty());
    let answer = directory(&s, &alice, "moon", None).await;
    assert_eq!(answer["results"][0]["display_name"], "Moon Walker");
    // A word of the display name ranks above a word of the user ID alone.
    let answer = directory(&s, &alice, "walker", None).await;
    assert_eq!(found(&answer)[0], others[0].user_id);

    // A deactivated account is gone from the directory.
    let victim = &others[1];
    let path = "/_matrix/client/v3/account/deactivate";
    let (status, first) = s.post(path, victim.t(), &json!({})).await;
    assert_eq!(status, 401, "{first}");
    let (status, body) = s
        .post(
            path,
            victim.t(),
            &json!({"auth": {"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": victim.user_id},
                "password": "password", "session": first["session"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = directory(&s, &alice, "walker", None).await;
    assert_eq!(found(&answer).len(), 4);
    assert!(!found(&answer).contains(&victim.user_id));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "password").await;
    // A term of no word finds nothing; it is no error.
    let answer = directory(&s, &alice, " .@: ", None).await;
    assert!(found(&answer).is_empty());
    assert_eq!(answer["limited"], false);
    let answer = directory_raw(&s, &alice, json!({"search_term": "a".repeat(1001)})).await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
    let answer = directory_raw(&s, &alice, json!({"limit": 3})).await;
    assert_error(&answer, 400, "M_BAD_JSON");
    let answer = directory_raw(&s, &alice, json!({"search_term": "a", "limit": -1})).await;
    assert_error(&answer, 400, "M_BAD_JSON");
    // Quotes and tsquery operators are only characters.
    for term in ["'", "a & b", "a:*", "!(x)", "\\"] {
        directory(&s, &alice, term, None).await;
    }
    let (status, _) = s
        .post(
            "/_matrix/client/v3/user_directory/search",
            None,
            &json!({"search_term": "alice"}),
        )
        .await;
    assert_eq!(status, 401);
    // A huge limit is capped, not refused.
    assert_eq!(
        found(&directory(&s, &alice, "alice", Some(1_000_000)).await),
        [alice.user_id.as_str()]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_another_server_in_a_shared_room_is_found() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    set_displayname(&b, &bob, "Bob Remote").await;
    let (room, alias) = public_room(&a, &alice, "meeting").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob joined", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    let answer = directory(&a, &alice, "bob", None).await;
    assert_eq!(found(&answer), [bob.user_id.as_str()]);
    assert_eq!(answer["results"][0]["display_name"], "Bob Remote");
    assert_eq!(
        found(&directory(&a, &alice, "remote", None).await),
        [bob.user_id.as_str()]
    );

    // His new name reaches A as a member event, and the directory follows it.
    set_displayname(&b, &bob, "Roberto").await;
    eventually("A's directory shows bob's new name", || async {
        let answer = directory(&a, &alice, "roberto", None).await;
        found(&answer) == [bob.user_id.as_str()]
    })
    .await;
    assert!(found(&directory(&a, &alice, "remote", None).await).is_empty());
    // And alice, from B's side.
    eventually("B's directory has alice", || async {
        found(&directory(&b, &bob, "alice", None).await) == [alice.user_id.as_str()]
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

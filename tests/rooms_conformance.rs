//! Rooms as the spec and Synapse have them, in the cases SyTest checks: the checks made
//! before an event is built, invites rejected when nobody is left to tell, history
//! visibility at every event, erased users and third-party invites.

mod common;

use common::server::{TestServer, User, assert_error, enc};
use serde_json::{Value, json};

/// A private room of `creator` with the given history visibility from the start.
async fn room_with_visibility(s: &TestServer, creator: &User, visibility: &str) -> String {
    s.create_room(
        creator,
        json!({"preset": "private_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": visibility}
        }]}),
    )
    .await
}

async fn invite(s: &TestServer, by: &User, room: &str, who: &User) {
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            by.t(),
            &json!({"user_id": who.user_id}),
        )
        .await;
    assert_eq!(status, 200, "invite: {body}");
}

async fn leave(s: &TestServer, u: &User, room: &str) {
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            u.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "leave: {body}");
}

/// The events of `/messages` (newest first, as many as there are), as `u` sees them.
async fn messages(s: &TestServer, u: &User, room: &str) -> Vec<Value> {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            u.t(),
        )
        .await;
    assert_eq!(status, 200, "messages: {body}");
    body["chunk"].as_array().cloned().unwrap_or_default()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect()
}

async fn get_event(s: &TestServer, u: &User, room: &str, id: &str) -> (u16, Value) {
    s.get(
        &format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(id)),
        u.t(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redactions_are_checked_before_they_are_built() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let carol = s.register("carol", "carol-password").await;
    s.join(&carol, &room).await;
    let message = s.send_text(&bob, &room, "bobs-words").await;

    // Carol has no power to redact others' events: refused before any event is made.
    let redact = |u: &User, room: &str, id: &str, txn: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/redact/{}/{txn}", enc(id));
        let token = u.token.clone();
        let s = &s;
        async move { s.put(&path, Some(&token), &json!({})).await }
    };
    assert_error(
        &redact(&carol, &room, &message, "t1").await,
        403,
        "M_FORBIDDEN",
    );
    let (status, body) = get_event(&s, &alice, &room, &message).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"]["body"], "bobs-words", "{body}");
    let redactions = messages(&s, &alice, &room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.redaction")
        .count();
    assert_eq!(redactions, 0, "a refused redaction leaves no event");

    // An event of another room cannot be named: 400, as Synapse answers, and the event
    // keeps its content.
    let other = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let elsewhere = s.send_text(&alice, &other, "other-room-words").await;
    let refused = redact(&alice, &room, &elsewhere, "t2").await;
    assert_error(&refused, 400, "M_UNKNOWN");
    let (status, body) = get_event(&s, &alice, &other, &elsewhere).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"]["body"], "other-room-words", "{body}");

    // Not even the creator may redact the create event (403, as Synapse refuses it).
    let create = messages(&s, &alice, &room)
        .await
        .into_iter()
        .find(|e| e["type"] == "m.room.create")
        .and_then(|e| e["event_id"].as_str().map(str::to_owned))
        .expect("the create event");
    assert_error(
        &redact(&alice, &room, &create, "t5").await,
        403,
        "M_FORBIDDEN",
    );

    // The room's creator may redact bob's message, and bob his own.
    let (status, body) = redact(&alice, &room, &message, "t3").await;
    assert_eq!(status, 200, "{body}");
    let own = s.send_text(&bob, &room, "bobs-second").await;
    let (status, body) = redact(&bob, &room, &own, "t4").await;
    assert_eq!(status, 200, "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_users_cannot_rejoin_or_be_invited_and_a_second_join_changes_nothing() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;

    // Joining again with the same content answers the same join: no new event.
    let joins = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
            .count()
    };
    let before = joins(&messages(&s, &alice, &room).await);
    s.join(&bob, &room).await;
    assert_eq!(
        joins(&messages(&s, &alice, &room).await),
        before,
        "a second join is the first one"
    );
    let first = s
        .put_state(&alice, &room, "m.room.topic", "", &json!({"topic": "t"}))
        .await;
    let again = s
        .put_state(&alice, &room, "m.room.topic", "", &json!({"topic": "t"}))
        .await;
    assert_eq!(first, again, "the same state twice is one event");

    // Banned: neither a join nor an invite gets through, with 403 M_FORBIDDEN.
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rejoin = s
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_error(&rejoin, 403, "M_FORBIDDEN");
    let invited = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_error(&invited, 403, "M_FORBIDDEN");
    assert_eq!(
        common::federation::membership(&s, &alice, &room, &bob.user_id).await,
        Some("ban".to_owned())
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_to_a_room_nobody_can_be_reached_in_is_rejected_locally() {
    let mut a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "alice-password").await;
    let bob = b.register("bob", "bob-password").await;
    let room = a
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "invite: {body}");
    let first = b.sync(&bob, "").await;
    assert!(
        first["rooms"]["invite"][&room].is_object(),
        "bob is invited: {first}"
    );
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // The inviting server goes away: the rejection cannot reach anyone, yet bob's server
    // takes it (Synapse's out-of-band leave) and the invite leaves his sync.
    a.stop().await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "local rejection: {body}");
    let next = b.sync(&bob, &format!("?since={since}")).await;
    assert!(
        next["rooms"]["invite"][&room].is_null(),
        "no longer invited: {next}"
    );
    let left = &next["rooms"]["leave"][&room]["timeline"]["events"];
    assert!(
        left.as_array().is_some_and(|events| events.iter().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "leave"
        })),
        "the rejection is in the left room: {next}"
    );
    let initial = b.sync(&bob, "").await;
    assert!(initial["rooms"]["invite"][&room].is_null(), "{initial}");
    a.resume().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_and_invited_history_starts_at_the_join_or_invite() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let carol = s.register("carol", "carol-password").await;
    for (visibility, joiner) in [("joined", &bob), ("invited", &carol)] {
        let room = room_with_visibility(&s, &alice, visibility).await;
        let before = s.send_text(&alice, &room, "before-invite").await;
        invite(&s, &alice, &room, joiner).await;
        let while_invited = s.send_text(&alice, &room, "while-invited").await;
        s.join(joiner, &room).await;
        let after = s.send_text(&alice, &room, "after-join").await;

        let seen = ids(&messages(&s, joiner, &room).await);
        assert!(seen.contains(&after), "{visibility}: {seen:?}");
        assert!(!seen.contains(&before), "{visibility}: {seen:?}");
        assert_eq!(
            seen.contains(&while_invited),
            visibility == "invited",
            "{visibility}: the event sent while invited"
        );

        // GET /event of a hidden event: 404, as if it did not exist.
        assert_error(
            &get_event(&s, joiner, &room, &before).await,
            404,
            "M_NOT_FOUND",
        );
        assert_eq!(get_event(&s, joiner, &room, &after).await.0, 200);

        // /context around the newest message shows nothing from before.
        let (status, body) = s
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/context/{}?limit=20",
                    enc(&after)
                ),
                joiner.t(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let around = ids(body["events_before"].as_array().unwrap());
        assert!(!around.contains(&before), "{visibility}: {body}");
        assert_eq!(around.contains(&while_invited), visibility == "invited");
        let (status, body) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/context/{}", enc(&before)),
                joiner.t(),
            )
            .await;
        assert_error(&(status, body), 404, "M_NOT_FOUND");

        // Search finds only what the joiner may see.
        let search = |term: &str| {
            let body = json!({"search_categories": {"room_events": {
                "search_term": term, "filter": {"rooms": [room]}
            }}});
            let s = &s;
            async move {
                let (status, body) = s.post("/_matrix/client/v3/search", joiner.t(), &body).await;
                assert_eq!(status, 200, "{body}");
                body["search_categories"]["room_events"]["results"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r["result"]["event_id"].as_str().map(str::to_owned))
                    .collect::<Vec<String>>()
            }
        };
        assert_eq!(search("after-join").await, vec![after.clone()]);
        assert!(search("before-invite").await.is_empty(), "{visibility}");
        assert_eq!(
            search("while-invited").await.contains(&while_invited),
            visibility == "invited"
        );

        // The joiner's initial /sync begins at their join (or invite), never before.
        let sync = s.sync(joiner, "").await;
        let timeline = ids(sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap());
        assert!(timeline.contains(&after), "{visibility}: {sync}");
        assert!(!timeline.contains(&before), "{visibility}: {sync}");
        assert_eq!(timeline.contains(&while_invited), visibility == "invited");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_changes_and_own_membership_are_seen_from_either_side() {
    let s = TestServer::start().await;
    let alice = s.register("alice", "alice-password").await;
    let bob = s.register("bob", "bob-password").await;
    let room = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": {"history_visibility": "shared"}
            }]}),
        )
        .await;
    let shared = s.send_text(&alice, &room, "shared-words").await;
    // The change to `joined` is visible to a later joiner: `shared` before it allows it.
    let change = s
        .put_state(
            &alice,
            &room,
            "m.room.history_visibility",
            "",
            &json!({"history_visibility": "joined"}),
        )
        .await;
    let hidden = s.send_text(&alice, &room, "joined-only-words").await;
    s.join(&bob, &room).await;
    let seen = ids(&messages(&s, &bob, &room).await);
    assert!(seen.contains(&shared), "{seen:?}");
    assert!(seen.contains(&change), "{seen:?}");
    assert!(!seen.contains(&hidden), "{seen:?}");

    // Bob's own leave is his to see (joined before it), and what was said while he was
    // away is not.
    leave(&s, &bob, &room).await;
    let away = s.send_text(&alice, &room, "while-away").await;
    s.join(&bob, &room).await;
    let events = messages(&s, &bob, &room).await;
    let own_leave = events.iter().any(|e| {
        e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "leave"
    });
    assert!(own_leave, "bob's own leave: {events:?}");
    assert!(!ids(&events).contains(&away));
    // /sync applies the same rules.
    let filter = json!({"room": {"timeline": {"limit": 50}}}).to_string();
    let sync = s.sync(&bob, &format!("?filter={}", enc(&filter))).await;
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let in_sync = ids(&timeline);
    assert!(in_sync.contains(&change), "{sync}");
    assert!(!in_sync.contains(&hidden), "{sync}");
    assert!(!in_sync.contains(&away), "{sync}");
    assert!(
        timeline.iter().any(
            |e| e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "leave"
        ),
        "{sync}"
    );

    // world_readable: a user who never joined reads the room.
    let open = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": {"history_visibility": "world_readable"}
            }]}),
        )
        .await;
    let readable = s.send_text(&alice, &open, "for-everyone").await;
    let carol = s.register("carol", "carol-password").await;
    assert!(ids(&messages(&s, &carol, &open).await).contains(&readable));
    assert_eq!(get_event(&s, &carol, &open, &readable).await.0, 200);
    // ...but not a joined-only room: 404 for a non-member.
    assert_error(
        &get_event(&s, &carol, &room, &shared).await,
        404,
        "M_NOT_FOUND",
    );
    s.shutdown().await;
}

async fn deactivate_erasing(s: &TestServer, u: &User, username: &str, password: &str) {
    let (status, first) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            u.t(),
            &json!({"erase": true}),
        )
        .await;
    assert_eq!(status, 401, "{first}");
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            u.t(),
            &json!({"erase": true, "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": username},
                "password": password, "session": first["session"]}}),
        )
        .await;
    assert_eq!(status, 200, "deactivate: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_users_events_are_redacted_for_later_members_only() {
    let s = TestServer::start().await;
    let (alice, bob, room) = s.alice_and_bob_in_a_room().await;
    let words = s.send_text(&bob, &room, "bobs-erasable-words").await;
    deactivate_erasing(&s, &bob, "bob", "bob-password").await;

    // Alice was there when bob spoke: she keeps seeing his words.
    let (status, body) = get_event(&s, &alice, &room, &words).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"]["body"], "bobs-erasable-words", "{body}");

    // Carol joins after: the event is there, its content gone, everywhere she reads it.
    let carol = s.register("carol", "carol-password").await;
    s.join(&carol, &room).await;
    let (status, body) = get_event(&s, &carol, &room, &words).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], json!({}), "{body}");
    let page = messages(&s, &carol, &room).await;
    let seen = page
        .iter()
        .find(|e| e["event_id"] == words.as_str())
        .expect("the event is listed");
    assert_eq!(seen["content"], json!({}), "{seen}");
    let sync = s.sync(&carol, "").await;
    let in_sync = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == words.as_str())
        .cloned()
        .expect("in carol's timeline");
    assert_eq!(in_sync["content"], json!({}), "{in_sync}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_senders_events_reach_other_servers_redacted() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let (alice, bob, room) = a.alice_and_bob_in_a_room().await;
    let words = a.send_text(&bob, &room, "words-for-the-world").await;
    let dave = b.register("dave", "dave-password").await;
    let (status, body) = b
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room),
                enc(a.server_name())
            ),
            dave.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "join over federation: {body}");
    let path = format!("/_matrix/federation/v1/event/{}", enc(&words));
    let (status, body) = common::federation::signed(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"][0]["content"]["body"], "words-for-the-world");

    deactivate_erasing(&a, &bob, "bob", "bob-password").await;
    let (status, body) = common::federation::signed(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"][0]["content"], json!({}), "{body}");
    // Alice, a member when bob spoke, still reads his words.
    let (_, body) = get_event(&a, &alice, &room, &words).await;
    assert_eq!(body["content"]["body"], "words-for-the-world");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_invite_without_an_identity_server_is_refused_clearly() {
    let s = TestServer::start().await;
    let (alice, _bob, room) = s.alice_and_bob_in_a_room().await;
    let refused = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            alice.t(),
            &json!({"id_server": "id.example.org", "id_access_token": "t",
                    "medium": "email", "address": "someone@example.org"}),
        )
        .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    // Nothing was added to the room.
    let third_party = messages(&s, &alice, &room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.third_party_invite")
        .count();
    assert_eq!(third_party, 0);
    s.shutdown().await;
}

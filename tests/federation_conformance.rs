//! Federation behaviour peers rely on beyond the happy path: the v1 forms of send_join,
//! send_leave and invite (and falling back to them), joining by alias through servers other
//! than the alias's, the per-PDU answers of /send, which servers an event is sent to,
//! malformed server names, and EDUs delivered as they happen.

mod common;

use std::sync::Arc;

use common::federation::{eventually, insecure_client, membership, signed};
use common::rooms::{Forger, raw};
use common::server::{TestServer, User, assert_error, make_federating};
use parking_lot::Mutex;
use ruma::OwnedEventId;
use serde_json::{Value, json};

/// A TLS front on its own port for another server's federation listener, standing in for
/// a server that predates the v2 forms of send_join and send_leave: it answers those
/// `404 M_UNRECOGNIZED` and passes everything else on, recording the v1 calls and their
/// answers.
struct OldFront {
    port: u16,
    listener: Option<std::net::TcpListener>,
    v1: Arc<Mutex<Vec<(String, Value)>>>,
}

impl OldFront {
    fn bind() -> OldFront {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        OldFront {
            port: listener.local_addr().expect("address").port(),
            listener: Some(listener),
            v1: Arc::default(),
        }
    }

    /// Serve in front of `backend`'s federation listener.
    fn serve(&mut self, backend: &TestServer) {
        use axum::extract::{Request, State};
        use axum::response::IntoResponse;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::service::TowerToHyperService;

        #[derive(Clone)]
        struct Front {
            backend: String,
            v1: Arc<Mutex<Vec<(String, Value)>>>,
        }
        async fn pass(State(front): State<Front>, req: Request) -> axum::response::Response {
            let path = req.uri().path().to_owned();
            let full = req
                .uri()
                .path_and_query()
                .map_or(path.clone(), |p| p.as_str().to_owned());
            let old_only = [
                "/_matrix/federation/v2/send_join/",
                "/_matrix/federation/v2/send_leave/",
            ];
            if old_only.iter().any(|p| path.starts_with(p)) {
                let body = json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"});
                return (http::StatusCode::NOT_FOUND, axum::Json(body)).into_response();
            }
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
            let mut forward = insecure_client()
                .request(parts.method, format!("{}{full}", front.backend))
                .body(bytes);
            for (name, value) in &parts.headers {
                if name != http::header::HOST {
                    forward = forward.header(name, value);
                }
            }
            let answer = forward.send().await.expect("backend answers");
            let status = answer.status();
            let body = answer.bytes().await.expect("backend body");
            let v1 = [
                "/_matrix/federation/v1/send_join/",
                "/_matrix/federation/v1/send_leave/",
            ];
            if v1.iter().any(|p| path.starts_with(p)) {
                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                front.v1.lock().push((path, value));
            }
            (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }

        let app = axum::Router::new().fallback(pass).with_state(Front {
            backend: backend.federation_url(""),
            v1: self.v1.clone(),
        });
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
            cert.signing_key.serialize_der().into(),
        );
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = self.listener.take().expect("served once");
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
    }

    fn v1_calls(&self) -> Vec<(String, Value)> {
        self.v1.lock().clone()
    }
}

/// A federating server whose server name is `front`'s address, so that other servers
/// reach it only through the front.
async fn behind(front: &mut OldFront) -> TestServer {
    let port = front.port;
    let server = TestServer::start_with(|c| {
        make_federating(c);
        c.server_name = format!("127.0.0.1:{port}");
    })
    .await;
    front.serve(&server);
    server
}

/// A server that knows only the v1 send_join and send_leave is still joined and left
/// through: the v2 form answered "unrecognised", the v1 form is sent, and its answer
/// `[200, {...}]` is read. The v1 routes are the resident server's own (the front only
/// passes them on), so this is also the inbound v1 send_join and send_leave at work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_send_join_and_send_leave_both_ways() {
    let mut front = OldFront::bind();
    let old = behind(&mut front).await;
    let a = TestServer::start_federating().await;
    let alice = old.register("alice", "password-a").await;
    let bob = a.register("bob", "password-b").await;
    let room = old
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "old"}),
        )
        .await;
    let alias = format!("#old:{}", old.server_name());

    a.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("the old server sees bob joined", || async {
        membership(&old, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    let calls = front.v1_calls();
    let (path, answer) = calls
        .iter()
        .find(|(p, _)| p.contains("/v1/send_join/"))
        .expect("the join went through v1 send_join");
    assert!(
        path.contains(&room.replace('!', "%21")) || path.contains(&room),
        "{path}"
    );
    assert_eq!(answer[0], 200, "{answer}");
    assert!(
        answer[1]["state"].as_array().is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
    assert!(answer[1]["auth_chain"].is_array(), "{answer}");
    assert!(answer.as_array().is_some_and(|a| a.len() == 2), "{answer}");
    // Bob reads the room as a member would.
    a.send_text(&bob, &room, "hello over v1").await;
    eventually("the old server has bob's message", || async {
        common::rooms::bodies(&common::rooms::timeline(&old, &alice, &room).await)
            .contains(&"hello over v1".to_owned())
    })
    .await;

    // Rejecting an invite to a room A is not in is a leave through the old server.
    let private = old
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let (status, body) = old
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the old server sees the invite rejected", || async {
        membership(&old, &alice, &private, &bob_id).await.as_deref() == Some("leave")
    })
    .await;
    let calls = front.v1_calls();
    let (_, answer) = calls
        .iter()
        .find(|(p, _)| p.contains("/v1/send_leave/"))
        .expect("the rejection went through v1 send_leave");
    assert_eq!(*answer, json!([200, {}]));
}

/// The v1 invite names no room version: like Synapse, the room is taken to be of version
/// 1, which this server cannot join, so the invite is refused with
/// M_INCOMPATIBLE_ROOM_VERSION (the endpoint is known: not 404 M_UNRECOGNIZED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_invite_is_served_and_refuses_what_it_cannot_join() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let bob = b.register("bob", "password-b").await;
    let room = format!("!v1room:{}", a.server_name());
    let event_id = format!("$v1invite:{}", a.server_name());
    let invite = json!({
        "event_id": event_id,
        "room_id": room,
        "type": "m.room.member",
        "state_key": bob.user_id,
        "sender": format!("@alice:{}", a.server_name()),
        "origin": a.server_name(),
        "origin_server_ts": 1,
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
        "content": {"membership": "invite"},
        "unsigned": {"invite_room_state": []},
    });
    let path = format!(
        "/_matrix/federation/v1/invite/{}/{}",
        common::server::enc(&room),
        common::server::enc(&event_id)
    );
    let answer = signed(&a, &b, "PUT", &path, Some(&invite)).await;
    assert_error(&answer, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert_eq!(answer.1["room_version"], "1", "{}", answer.1);
}

/// A server name with a port that is not a number is not a server name: wherever one comes
/// from the network (the X-Matrix origin or destination, a path or query parameter) the
/// request is malformed, 400 with a Matrix errcode, never taken for a failed signature (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_names_with_a_non_numeric_port_are_malformed_requests() {
    let b = TestServer::start_federating().await;
    let a = TestServer::start_federating().await;
    let bob = b.register("bob", "password-b").await;
    let http = insecure_client();
    let profile = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        common::server::enc(&bob.user_id)
    );
    let with_header = |header: String| {
        let http = http.clone();
        let url = b.federation_url(&profile);
        async move {
            let res = http
                .get(url)
                .header("authorization", header)
                .send()
                .await
                .expect("request");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let origin = with_header(format!(
        "X-Matrix origin=\"localhost:http\",destination=\"{}\",key=\"ed25519:1\",sig=\"dGVzdA\"",
        b.server_name()
    ))
    .await;
    assert_error(&origin, 400, "M_UNAUTHORIZED");
    let destination = with_header(format!(
        "X-Matrix origin=\"{}\",destination=\"localhost:http\",key=\"ed25519:1\",sig=\"dGVzdA\"",
        a.server_name()
    ))
    .await;
    assert_error(&destination, 400, "M_UNAUTHORIZED");
    // Still 401: no header at all, and a well-formed one that does not verify.
    let none = http.get(b.federation_url(&profile)).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let forged = with_header(format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"ed25519:a_bcd\",sig=\"dGVzdA\"",
        a.server_name(),
        b.server_name()
    ))
    .await;
    assert_error(&forged, 401, "M_UNAUTHORIZED");

    // In parameters of properly signed requests.
    let user = common::server::enc("@someone:localhost:http");
    for path in [
        format!("/_matrix/federation/v1/query/profile?user_id={user}"),
        format!("/_matrix/federation/v1/user/devices/{user}"),
        format!(
            "/_matrix/federation/v1/make_join/{}/{user}",
            common::server::enc(&format!("!room:{}", b.server_name()))
        ),
    ] {
        let (status, body) = signed(&a, &b, "GET", &path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["errcode"].is_string(), "{path}: {body}");
    }
    let (status, body) = signed(&a, &b, "GET", "/_matrix/key/v2/query/localhost:http", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errcode"].is_string(), "{body}");
}

/// The auth events of a message from `sender` in the room as `u` on `s` sees its state:
/// create, power levels and the sender's membership when there is one.
async fn message_auth(s: &TestServer, u: &User, room: &str, sender: &str) -> Vec<OwnedEventId> {
    let state = common::rooms::state_ids(s, u, room).await;
    [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", sender),
    ]
    .iter()
    .filter_map(|(t, k)| state.get(&(t.to_string(), k.to_string())))
    .map(|id| OwnedEventId::try_from(id.as_str()).expect("event ID"))
    .collect()
}

async fn newest(s: &TestServer, u: &User, room: &str) -> OwnedEventId {
    let last = common::rooms::timeline(s, u, room)
        .await
        .pop()
        .expect("an event");
    OwnedEventId::try_from(last.0.as_str()).expect("event ID")
}

/// /send answers for every PDU it was given, by event ID: `{}` for one accepted, also when it
/// was soft-failed (it is valid where it was sent; it is only kept out of the room's
/// current state and timeline), and `{"error": ...}` for one rejected by the auth rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_answers_each_pdu_accepted_soft_failed_or_rejected() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = common::rooms::public_room_of(&a, &alice, "pdus", Some("10")).await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;

    let v10 = ruma::RoomVersionId::V10;
    let as_bob = Forger::new(&a, &b, &room, &bob.user_id, v10.clone());
    let mallory = format!("@mallory:{}", b.server_name());
    let as_mallory = Forger::new(&a, &b, &room, &mallory, v10);
    let before_kick = newest(&a, &alice, &room).await;
    let bob_auth = message_auth(&a, &alice, &room, &bob.user_id).await;
    let mallory_auth = message_auth(&a, &alice, &room, &mallory).await;
    let (accepted, json_accepted) = as_bob.message("accepted", &before_kick, &bob_auth, 50);
    let (rejected, json_rejected) =
        as_mallory.message("not a member", &before_kick, &mallory_auth, 50);
    let (status, answer) = as_bob
        .send("pdus-1", vec![raw(&json_accepted), raw(&json_rejected)])
        .await;
    assert_eq!(status, 200, "{answer}");
    let pdus = answer["pdus"].as_object().expect("pdus");
    assert_eq!(pdus.len(), 2, "{answer}");
    assert_eq!(pdus[accepted.as_str()], json!({}), "{answer}");
    let error = &pdus[rejected.as_str()];
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    assert_eq!(error.as_object().map(|o| o.len()), Some(1), "{answer}");

    // Alice kicks bob; B then sends a message of bob's on the event before the kick, where
    // bob was a member: valid there, so not rejected, but soft-failed by the current state.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (soft, json_soft) = as_bob.message("after the kick", &accepted, &bob_auth, 51);
    let (status, answer) = as_bob.send("pdus-2", vec![raw(&json_soft)]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"], json!({ soft.as_str(): {} }), "{answer}");
    let seen = common::rooms::bodies(&common::rooms::timeline(&a, &alice, &room).await);
    assert!(seen.contains(&"accepted".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"not a member".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"after the kick".to_owned()), "{seen:?}");
}

/// A room is joined through whichever server can help: by alias, through the servers the
/// alias's directory names when the alias's own server has left the room; by ID, through
/// the servers the client names with `via` or the older `server_name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_go_through_servers_other_than_the_alias_or_room_id_server() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let d = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let carol = c.register("carol", "password-c").await;
    let dave = d.register("dave", "password-d").await;
    // Bob's room, with an alias on B; alice joins, then bob leaves: B knows the alias but
    // is no longer in the room, A is.
    let room = b
        .create_room(
            &bob,
            json!({"preset": "public_chat", "room_alias_name": "moved"}),
        )
        .await;
    let alias = format!("#moved:{}", b.server_name());
    a.join(&alice, &alias).await;
    let alice_id = alice.user_id.clone();
    eventually("B sees alice joined", || async {
        membership(&b, &bob, &room, &alice_id).await.as_deref() == Some("join")
    })
    .await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bob_id = bob.user_id.clone();
    eventually("A sees bob gone", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("leave")
    })
    .await;

    // By alias: B answers the directory query but cannot help with the join; A can.
    let (status, body) = c
        .post(
            &format!("/_matrix/client/v3/join/{}", common::server::enc(&alias)),
            carol.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let carol_id = carol.user_id.clone();
    eventually("A sees carol joined", || async {
        membership(&a, &alice, &room, &carol_id).await.as_deref() == Some("join")
    })
    .await;

    // By ID: without a server to ask, nothing helps (a version 12 room ID names none, and
    // D knows nothing of the room); with `server_name` naming A, or `via` naming C, the
    // join goes through that server.
    let by_id = format!("/_matrix/client/v3/join/{}", common::server::enc(&room));
    let (status, body) = d.post(&by_id, dave.t(), &json!({})).await;
    assert_ne!(status, 200, "{body}");
    assert!(body["errcode"].is_string(), "{body}");
    let query = format!("{by_id}?server_name={}", a.server_name());
    let (status, body) = d.post(&query, dave.t(), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let e = TestServer::start_federating().await;
    let erin = e.register("erin", "password-e").await;
    let query = format!("{by_id}?via={}", c.server_name());
    let (status, body) = e.post(&query, erin.t(), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    for who in [dave.user_id.clone(), erin.user_id.clone()] {
        eventually("A sees dave and erin joined", || async {
            membership(&a, &alice, &room, &who).await.as_deref() == Some("join")
        })
        .await;
    }
}

/// Whether server `s` holds the event (in its room's graph, not merely cited).
async fn holds(s: &TestServer, event_id: &str) -> bool {
    let db = common::media::db(s).await;
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT e.event_nid FROM events e JOIN event_ids i USING (event_nid)
         WHERE i.event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(&db)
    .await
    .expect("query");
    db.close().await;
    found.is_some()
}

/// Whether server `s` has nothing left to send to other servers.
async fn outbox_empty(s: &TestServer) -> bool {
    let db = common::media::db(s).await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM federation_outbox")
        .fetch_one(&db)
        .await
        .expect("query");
    db.close().await;
    n == 0
}

/// An event goes to the servers in the room at it: the server of a user kicked hears of the
/// kick, then of nothing more, and neither does a server whose last user left by itself,
/// while a server still in the room keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_left_the_room_are_sent_nothing_after_their_leave() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let c = TestServer::start_federating().await;
    let d = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let carol = c.register("carol", "password-c").await;
    let dave = d.register("dave", "password-d").await;
    let (room, alias) = common::rooms::public_room(&a, &alice, "who-hears").await;
    for (s, u) in [(&b, &bob), (&c, &carol), (&d, &dave)] {
        s.join(u, &alias).await;
        let id = u.user_id.clone();
        eventually("A sees the join", || async {
            membership(&a, &alice, &room, &id).await.as_deref() == Some("join")
        })
        .await;
    }

    // Carol is kicked: C is sent the kick.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            alice.t(),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let kick = newest(&a, &alice, &room).await;
    eventually("C has the kick", || async {
        holds(&c, kick.as_str()).await
    })
    .await;
    // Bob leaves: his own event, which A receives from B.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            bob.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bob_id = bob.user_id.clone();
    eventually("A sees bob gone", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("leave")
    })
    .await;

    let message = a
        .send_text(&alice, &room, "only for those still here")
        .await;
    eventually("D has the message and A has sent everything", || async {
        holds(&d, &message).await && outbox_empty(&a).await
    })
    .await;
    assert!(
        !holds(&c, &message).await,
        "C (kicked) was sent the message"
    );
    assert!(!holds(&b, &message).await, "B (left) was sent the message");
}

/// Whether server `to` was sent the event by `from` in a /send transaction.
async fn sent_in_a_transaction(from: &TestServer, to: &TestServer, event_id: &str) -> bool {
    let db = common::media::db(to).await;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM federation_inbound_txns WHERE origin = $1 AND response::jsonb ? $2",
    )
    .bind(from.server_name())
    .bind(event_id)
    .fetch_one(&db)
    .await
    .expect("query");
    db.close().await;
    n > 0
}

/// An invite reaches the invitee's server through /invite only: a server not in the room
/// is not sent the room's events by /send, the invite included. When the invite is
/// rescinded, the invitee's server is told by /send (it holds the invite, and must learn it
/// is void), as Synapse does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_server_is_sent_only_the_invite_and_its_rescinding() {
    let a = TestServer::start_federating().await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
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
    assert_eq!(status, 200, "{body}");
    let key = ("m.room.member".to_owned(), bob.user_id.clone());
    let invite = common::rooms::state_ids(&a, &alice, &room).await[&key].clone();
    let message = a.send_text(&alice, &room, "not for B").await;
    eventually("A has sent everything", || async { outbox_empty(&a).await }).await;
    assert!(
        !sent_in_a_transaction(&a, &b, &invite).await,
        "the invite went by /send"
    );
    assert!(
        !sent_in_a_transaction(&a, &b, &message).await,
        "a message went to B"
    );

    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            alice.t(),
            &json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rescinded = common::rooms::state_ids(&a, &alice, &room).await[&key].clone();
    assert_ne!(rescinded, invite);
    eventually("B is sent the rescinding", || async {
        sent_in_a_transaction(&a, &b, &rescinded).await
    })
    .await;
}

/// Poll `check` until it holds, failing after two minutes. The sending server of the test
/// that uses it looks at its outbound queue unbidden only once a day, so what leaves only on
/// that look (or with the next PDU) never arrives: the bound is a hang guard, not a measure
/// of speed, and a busy machine cannot make the test fail.
async fn soon<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not soon enough: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// EDUs leave as they happen, not with the next PDU: a read receipt, a presence change and
/// a new device of a user on A each reach a member of a shared room on B while nothing else
/// is said in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_presence_and_device_lists_reach_other_servers_promptly() {
    let a = TestServer::start_with(|c| {
        common::server::make_federating(c);
        c.federation.queue_idle_check_secs = 24 * 3600;
    })
    .await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = common::rooms::public_room(&a, &alice, "edus").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    let message = a.send_text(&alice, &room, "read me").await;
    eventually("B has the message", || async {
        holds(&b, &message).await && outbox_empty(&a).await
    })
    .await;
    let since = b.sync(&bob, "?timeout=0").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // The receipt, the presence and the device, with no event after them.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{message}"),
            alice.t(),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .put(
            &format!(
                "/_matrix/client/v3/presence/{}/status",
                common::server::enc(&alice.user_id)
            ),
            alice.t(),
            &json!({"presence": "online", "status_msg": "at the desk"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, login) = a.login("alice", "password-a").await;
    assert_eq!(status, 200, "{login}");
    let laptop = User::from_response(&login);
    let (status, body) = a
        .post(
            "/_matrix/client/v3/keys/upload",
            laptop.t(),
            &json!({"device_keys": {
                "user_id": laptop.user_id,
                "device_id": laptop.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": {
                    format!("curve25519:{}", laptop.device_id): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
                    format!("ed25519:{}", laptop.device_id): "lEuiRJBit0IG6nUf5pUzWTUEsRVVe/HJkoKuEww9ULI",
                },
                "signatures": {},
            }}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let query = format!("?since={since}&timeout=0");
    let alice_id = alice.user_id.clone();
    soon("bob sees alice's receipt", || async {
        let sync = b.sync(&bob, &query).await;
        sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["type"] == "m.receipt" && e["content"][&message]["m.read"][&alice_id].is_object()
            })
    })
    .await;
    soon("bob sees alice's presence", || async {
        let sync = b.sync(&bob, &query).await;
        sync["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["sender"] == alice_id.as_str() && e["content"]["status_msg"] == "at the desk"
            })
    })
    .await;
    soon("bob is told alice's devices changed", || async {
        let sync = b.sync(&bob, &query).await;
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == alice_id.as_str()))
    })
    .await;
    // Nothing but EDUs crossed: the newest event on B is still the message.
    assert_eq!(newest(&b, &bob, &room).await.as_str(), message);
}

/// A new login is a new device: the servers sharing a room with the user are told at once,
/// before the device has any keys, as Synapse tells them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_login_reaches_other_servers_as_a_device_list_change() {
    let a = TestServer::start_with(|c| {
        common::server::make_federating(c);
        c.federation.queue_idle_check_secs = 24 * 3600;
    })
    .await;
    let b = TestServer::start_federating().await;
    let alice = a.register("alice", "password-a").await;
    let bob = b.register("bob", "password-b").await;
    let (room, alias) = common::rooms::public_room(&a, &alice, "devices").await;
    b.join(&bob, &alias).await;
    let bob_id = bob.user_id.clone();
    eventually("A sees bob", || async {
        membership(&a, &alice, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    // Whatever the join itself brought, from here on only the login can.
    eventually("A's queue is empty", || async { outbox_empty(&a).await }).await;
    let since = b.sync(&bob, "?timeout=0").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    let (status, login) = a.login("alice", "password-a").await;
    assert_eq!(status, 200, "{login}");

    let query = format!("?since={since}&timeout=0");
    let alice_id = alice.user_id.clone();
    soon("bob is told of alice's new device", || async {
        let sync = b.sync(&bob, &query).await;
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == alice_id.as_str()))
    })
    .await;
}

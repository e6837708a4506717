//! The two sides of the interop tests: a user on Synapse or on a Trellis test server, with
//! the client API calls the cases make, each asserting that it succeeded.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::federation::eventually;
use crate::common::server::{Api, TestServer, User, enc};

const PASSWORD: &str = "interop-password";
/// How long a change may take to cross from one server to the other.
const CROSSING: Duration = Duration::from_secs(60);

/// The Synapse that `scripts/interop` started.
pub struct Synapse {
    api: Api,
    server: String,
}

/// The Synapse named by the environment; a test run without it fails saying how to run it.
pub fn synapse() -> Synapse {
    match (
        std::env::var("INTEROP_SYNAPSE_URL"),
        std::env::var("INTEROP_SYNAPSE_SERVER_NAME"),
    ) {
        (Ok(url), Ok(server)) => Synapse {
            api: Api::new(url),
            server,
        },
        _ => panic!(
            "INTEROP_SYNAPSE_URL and INTEROP_SYNAPSE_SERVER_NAME are unset: these tests need a \
             running Synapse; run them with scripts/interop"
        ),
    }
}

fn synapse_log() -> String {
    let path = std::env::var("INTEROP_SYNAPSE_LOG")
        .expect("INTEROP_SYNAPSE_LOG is unset: run these tests with scripts/interop");
    std::fs::read_to_string(&path).expect("read Synapse's log")
}

/// The federation requests (`METHOD /path?query`) that the server `origin` made to Synapse
/// so far, from Synapse's access log: which endpoints a Trellis server used to do a job.
pub fn requests_to_synapse_from(origin: &str) -> Vec<String> {
    let requester = format!("{{{origin}}} Processed request");
    synapse_log()
        .lines()
        .filter(|line| line.contains(&requester))
        .filter_map(|line| line.split('"').nth(1))
        .map(|request| request.trim_end_matches(" HTTP/1.1").to_owned())
        .collect()
}

/// How many transactions Synapse failed to deliver to `destination` so far.
pub fn failed_transactions_to(destination: &str) -> usize {
    let needle = format!("TX [{destination}] Failed to send transaction");
    synapse_log().matches(&needle).count()
}

/// A localpart no earlier test registered on the shared Synapse (lower case, as it requires).
fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

impl Synapse {
    /// A new user on Synapse.
    pub async fn side(&self, name: &str) -> Side<'_> {
        let user = self.api.register(&unique(name), PASSWORD).await;
        Side {
            api: &self.api,
            server: self.server.clone(),
            user,
        }
    }
}

/// A new user on the Trellis server `t`.
pub async fn trellis_side<'a>(t: &'a TestServer, name: &str) -> Side<'a> {
    let user = t.register(&unique(name), PASSWORD).await;
    Side::trellis(t, user)
}

/// A logged-in user and the server it is on.
pub struct Side<'a> {
    pub api: &'a Api,
    /// The server name (for `via` and error messages).
    pub server: String,
    pub user: User,
}

impl<'a> Side<'a> {
    /// `user` on `t` (again, after `t` was restarted).
    pub fn trellis(t: &'a TestServer, user: User) -> Side<'a> {
        Side {
            api: t,
            server: t.server_name().to_owned(),
            user,
        }
    }

    fn t(&self) -> Option<&str> {
        self.user.t()
    }

    /// A room in the server's default version unless `body` names one (12 on both sides).
    pub async fn create_room(&self, body: Value) -> String {
        self.api.create_room(&self.user, body).await
    }

    /// Join a room on `host`'s server, naming that server (a room ID alone locates nothing).
    pub async fn join_via(&self, room: &str, host: &Side<'_>) {
        let path = format!(
            "/_matrix/client/v3/join/{}?via={}",
            enc(room),
            enc(&host.server)
        );
        let (status, body) = self.api.post(&path, self.t(), &json!({})).await;
        assert_eq!(status, 200, "{} joins {room}: {body}", self.server);
    }

    /// Join a room we were invited to, as a client does: no server named.
    pub async fn join_plain(&self, room: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        let (status, body) = self.api.post(&path, self.t(), &json!({})).await;
        assert_eq!(status, 200, "{} joins {room}: {body}", self.server);
    }

    pub async fn leave(&self, room: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/leave", enc(room));
        let (status, body) = self.api.post(&path, self.t(), &json!({})).await;
        assert_eq!(status, 200, "{} leaves {room}: {body}", self.server);
    }

    pub async fn invite(&self, room: &str, user_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
        let (status, body) = self
            .api
            .post(&path, self.t(), &json!({"user_id": user_id}))
            .await;
        assert_eq!(status, 200, "{} invites {user_id}: {body}", self.server);
    }

    /// Send a message event; returns its ID.
    pub async fn send(&self, room: &str, text: &str) -> String {
        self.send_event(
            room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": text}),
        )
        .await
    }

    pub async fn send_event(&self, room: &str, kind: &str, content: &Value) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{kind}/{:016x}",
            enc(room),
            rand::random::<u64>()
        );
        let (status, body) = self.api.put(&path, self.t(), content).await;
        assert_eq!(status, 200, "{} sends {kind}: {body}", self.server);
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn put_state(&self, room: &str, kind: &str, key: &str, content: &Value) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
            enc(room),
            enc(key)
        );
        let (status, body) = self.api.put(&path, self.t(), content).await;
        assert_eq!(status, 200, "{} sets {kind}: {body}", self.server);
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    /// The content of a state event as this server has it now.
    pub async fn state(&self, room: &str, kind: &str, key: &str) -> Option<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
            enc(room),
            enc(key)
        );
        let (status, body) = self.api.get(&path, self.t()).await;
        (status == 200).then_some(body)
    }

    /// An event this server holds (asserted).
    pub async fn event(&self, room: &str, id: &str) -> Value {
        let (status, body) = self.get_event(room, id).await;
        assert_eq!(status, 200, "{} has {id}: {body}", self.server);
        body
    }

    async fn get_event(&self, room: &str, id: &str) -> (u16, Value) {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id));
        self.api.get(&path, self.t()).await
    }

    /// Wait until the event has reached this server.
    pub async fn wait_event(&self, room: &str, id: &str) {
        let what = format!("{id} reaches {}", self.server);
        eventually(&what, || async { self.get_event(room, id).await.0 == 200 }).await;
    }

    /// Wait until this server has `who`'s membership in the room as `membership`.
    pub async fn wait_membership(&self, room: &str, who: &str, membership: &str) {
        let what = format!("{} sees {who} {membership} {room}", self.server);
        eventually(&what, || async {
            self.state(room, "m.room.member", who)
                .await
                .is_some_and(|c| c["membership"] == membership)
        })
        .await;
    }

    /// Wait until this user's invite to the room shows in an initial sync.
    pub async fn wait_invite(&self, room: &str) {
        let what = format!("{} shows the invite to {room}", self.server);
        eventually(&what, || async {
            let sync = self.api.sync(&self.user, "?timeout=0").await;
            sync["rooms"]["invite"][room].is_object()
        })
        .await;
    }

    /// Make a signed request to `other`'s server (an alias lookup that finds nothing): Synapse
    /// takes any signed request as a sign that a server it was backing off from is back.
    pub async fn contact(&self, other: &Side<'_>) {
        let alias = format!("#{}:{}", unique("nothing"), other.server);
        let path = format!("/_matrix/client/v3/directory/room/{}", enc(&alias));
        let (status, body) = self.api.get(&path, self.t()).await;
        assert_eq!(status, 404, "{} looks up {alias}: {body}", self.server);
    }

    pub async fn typing(&self, room: &str, typing: bool) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            enc(room),
            enc(&self.user.user_id)
        );
        let (status, body) = self
            .api
            .put(
                &path,
                self.t(),
                &json!({"typing": typing, "timeout": 30000}),
            )
            .await;
        assert_eq!(status, 200, "{} typing: {body}", self.server);
    }

    /// The `next_batch` of an initial sync: changes after now come in syncs since it.
    pub async fn sync_token(&self) -> String {
        let body = self.api.sync(&self.user, "?timeout=0").await;
        body["next_batch"].as_str().expect("next_batch").to_owned()
    }

    /// Sync (long-polling) from `since` until a response satisfies `check`; returns it.
    pub async fn sync_since_until(
        &self,
        since: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + CROSSING;
        let mut since = since.to_owned();
        loop {
            let query = format!("?timeout=1000&since={}", enc(&since));
            let body = self.api.sync(&self.user, &query).await;
            if check(&body) {
                return body;
            }
            since = body["next_batch"].as_str().expect("next_batch").to_owned();
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {} for: {what}",
                self.server
            );
        }
    }

    /// Every event of the room's timeline as this server serves it, oldest first: /messages
    /// backwards from the newest until there is no more (the server fetches what it lacks).
    pub async fn timeline(&self, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..200 {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
                enc(room)
            );
            if let Some(token) = &from {
                path.push_str(&format!("&from={}", enc(token)));
            }
            let (status, body) = self.api.get(&path, self.t()).await;
            assert_eq!(status, 200, "{} /messages: {body}", self.server);
            let chunk = body["chunk"].as_array().cloned().unwrap_or_default();
            let done = chunk.is_empty();
            events.extend(chunk);
            match body["end"].as_str() {
                Some(end) if !done => from = Some(end.to_owned()),
                _ => break,
            }
        }
        events.reverse();
        events
    }

    pub async fn upload_keys(&self) {
        let (status, body) = self
            .api
            .post(
                "/_matrix/client/v3/keys/upload",
                self.t(),
                &json!({
                    "device_keys": device_keys(&self.user),
                    "one_time_keys": {
                        "signed_curve25519:AAAAAQ": {
                            "key": one_time_key(&self.user),
                            "signatures": {},
                        }
                    },
                }),
            )
            .await;
        assert_eq!(status, 200, "{} key upload: {body}", self.server);
    }

    pub async fn query_keys(&self, user_id: &str) -> Value {
        let (status, body) = self
            .api
            .post(
                "/_matrix/client/v3/keys/query",
                self.t(),
                &json!({"device_keys": {user_id: []}}),
            )
            .await;
        assert_eq!(status, 200, "{} key query: {body}", self.server);
        body
    }

    pub async fn claim_key(&self, owner: &User) -> Value {
        let (status, body) = self
            .api
            .post(
                "/_matrix/client/v3/keys/claim",
                self.t(),
                &json!({"one_time_keys": {
                    owner.user_id.clone(): {owner.device_id.clone(): "signed_curve25519"}
                }}),
            )
            .await;
        assert_eq!(status, 200, "{} key claim: {body}", self.server);
        body
    }

    /// Log the same user in on a new device and upload that device's keys.
    pub async fn new_device(&self) -> User {
        let localpart = self.user.user_id[1..].split(':').next().expect("localpart");
        let (status, body) = self.api.login(localpart, PASSWORD).await;
        assert_eq!(status, 200, "{} login: {body}", self.server);
        let device = User::from_response(&body);
        Side {
            api: self.api,
            server: self.server.clone(),
            user: device.clone(),
        }
        .upload_keys()
        .await;
        device
    }

    pub async fn send_to_device(&self, to: &User, content: Value) {
        let path = format!(
            "/_matrix/client/v3/sendToDevice/org.trellis.interop/{:016x}",
            rand::random::<u64>()
        );
        let body = json!({"messages": {to.user_id.clone(): {to.device_id.clone(): content}}});
        let (status, res) = self.api.put(&path, self.t(), &body).await;
        assert_eq!(status, 200, "{} sendToDevice: {res}", self.server);
    }
}

/// Device keys for `u`'s device, unique to it (the signature is not checked by servers).
pub fn device_keys(u: &User) -> Value {
    let key = |kind: &str| {
        format!("{kind}{}", u.device_id).replace(|c: char| !c.is_ascii_alphanumeric(), "")
    };
    json!({
        "user_id": u.user_id,
        "device_id": u.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", u.device_id): key("curve"),
            format!("ed25519:{}", u.device_id): key("ed"),
        },
        "signatures": {u.user_id.clone(): {format!("ed25519:{}", u.device_id): key("sig")}},
    })
}

/// The one-time key uploaded for `u`'s device.
pub fn one_time_key(u: &User) -> String {
    format!("otk{}", u.device_id).replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

//! Start real Trellis servers on loopback for integration tests, and talk to them over HTTP.

use std::path::PathBuf;

use serde_json::{Value, json};
use trellis::config::{Config, RateLimit};
use trellis::server::RunningServer;

use super::db::fresh_database;

/// A Trellis server on 127.0.0.1 with its own fresh database and data directory. Its client
/// API helpers are those of [`Api`].
pub struct TestServer {
    pub config: Config,
    api: Api,
    running: Option<RunningServer>,
    _data_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The client API of a homeserver at `base` (a Trellis test server, or another homeserver
/// the interop tests talk to), with helpers that assert the common calls succeed.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// Generous limits so ordinary tests never trip them; rate-limit tests set their own.
const NO_LIMIT: RateLimit = RateLimit {
    per_second: 1000.0,
    burst: 1000,
};

/// The configuration tests start from: open registration, loopback, one listener.
pub async fn test_config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config {
        server_name: "trellis.test".to_owned(),
        data_dir: PathBuf::from(dir.path()),
        ..Config::default()
    };
    c.database.url = Some(fresh_database().await);
    c.database.max_connections = 8;
    c.listeners.client.address = "127.0.0.1".to_owned();
    c.listeners.client.port = 0;
    c.listeners.federation.address = "127.0.0.1".to_owned();
    c.listeners.federation.port = 0;
    c.registration.enabled = true;
    c.registration.open_without_verification = true;
    c.rate_limits.login_per_ip = NO_LIMIT;
    c.rate_limits.login_per_user = NO_LIMIT;
    c.rate_limits.register_per_ip = NO_LIMIT;
    (c, dir)
}

/// Federation listeners bound by [`make_federating`] (whose port is in the server name)
/// before their server starts, by port: the server takes its own when it boots, so the port
/// is never free for another process to take in between.
static RESERVED: std::sync::Mutex<Vec<(u16, std::net::TcpListener)>> =
    std::sync::Mutex::new(Vec::new());

/// Bind a loopback port and keep it for the server that will serve on it.
fn reserve_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("bound address").port();
    RESERVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((port, listener));
    port
}

/// The listener reserved for `port`, if any (taken: a restart binds the port again).
fn take_reserved(port: u16) -> Option<std::net::TcpListener> {
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let i = reserved.iter().position(|(p, _)| *p == port)?;
    Some(reserved.swap_remove(i).1)
}

/// Make `config` a federating server on 127.0.0.1: its server name is `127.0.0.1:<port>`
/// (so discovery connects directly), its federation listener serves TLS with a self-signed
/// certificate, and outbound federation may reach loopback without checking certificates.
pub fn make_federating(config: &mut Config) {
    let port = reserve_port();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("self-signed certificate");
    let cert_path = config.data_dir.join("tls.crt");
    let key_path = config.data_dir.join("tls.key");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    config.server_name = format!("127.0.0.1:{port}");
    config.listeners.federation.port = port;
    config.listeners.federation.tls_certificate = Some(cert_path);
    config.listeners.federation.tls_private_key = Some(key_path);
    config.federation.verify_tls = false;
    config.federation.ip_range_allowlist = vec!["127.0.0.0/8".to_owned()];
    // Tests stop and restart servers: retry a destination that was down within seconds.
    config.federation.max_retry_interval_secs = 2;
}

impl TestServer {
    /// A server that federates with other test servers over TLS on loopback.
    pub async fn start_federating() -> TestServer {
        Self::start_with(make_federating).await
    }

    /// The server name users of this server have.
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    /// The federation listener's base URL (TLS).
    pub fn federation_url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.config.listeners.federation.port
        )
    }

    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Start with the test configuration changed by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let (mut config, dir) = test_config().await;
        f(&mut config);
        let mut server = TestServer {
            config,
            api: Api::new(String::new()),
            running: None,
            _data_dir: Some(dir),
        };
        server.boot().await;
        server
    }

    async fn boot(&mut self) {
        init_test_logging();
        let config = self.config.clone();
        config.validate().expect("test config is valid");
        // The first boot serves on the port reserved for the server name; a restart binds
        // the same port again, just freed by the stop.
        let bound = trellis::server::Bound {
            client: None,
            federation: take_reserved(config.listeners.federation.port),
        };
        let running = trellis::server::start_bound(config, bound)
            .await
            .expect("server starts");
        self.api.base = format!("http://{}", running.client_addr);
        self.running = Some(running);
    }

    /// Stop serving (the database and data directory stay), until [`TestServer::resume`].
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Start again after [`TestServer::stop`].
    pub async fn resume(&mut self) {
        self.boot().await;
    }

    /// Stop and start again on the same database and data directory (a new port).
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        self.boot().await;
    }

    /// Wait until at least `n` syncs (of either kind) are waiting for news: what a test does
    /// before it makes the news, so that the news wakes a waiting sync rather than landing
    /// before it reads.
    pub async fn until_syncs_wait(&self, n: usize) {
        let notifier = self
            .running
            .as_ref()
            .expect("a running server")
            .state
            .e2e
            .notifier()
            .clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while notifier.waiting() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no sync waited within a minute"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body read");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, token, Some(body))
            .await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, token, body)
            .await
    }

    /// Register through the real UIAA dance (m.login.dummy); returns the session.
    pub async fn register(&self, username: &str, password: &str) -> User {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, 401, "first register call asks for auth: {body}");
        let session = body["session"].as_str().expect("session").to_owned();
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                &json!({
                    "username": username,
                    "password": password,
                    "auth": {"type": "m.login.dummy", "session": session}
                }),
            )
            .await;
        assert_eq!(status, 200, "register: {body}");
        User::from_response(&body)
    }

    pub async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            &json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": username},
                "password": password
            }),
        )
        .await
    }

    /// createRoom as `u`, asserting success; returns the room ID.
    pub async fn create_room(&self, u: &User, body: Value) -> String {
        let (status, res) = self
            .post("/_matrix/client/v3/createRoom", u.t(), &body)
            .await;
        assert_eq!(status, 200, "createRoom: {res}");
        res["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Two new users, `alice` and `bob` (passwords `alice-password`, `bob-password`), both
    /// joined to a new public room alice made: the start of many tests.
    pub async fn alice_and_bob_in_a_room(&self) -> (User, User, String) {
        let alice = self.register("alice", "alice-password").await;
        let bob = self.register("bob", "bob-password").await;
        let room = self
            .create_room(&alice, json!({"preset": "public_chat"}))
            .await;
        self.join(&bob, &room).await;
        (alice, bob, room)
    }

    /// Join `room` (an ID or alias) as `u`, asserting success.
    pub async fn join(&self, u: &User, room: &str) {
        let path = format!("/_matrix/client/v3/join/{}", enc(room));
        let (status, res) = self.post(&path, u.t(), &json!({})).await;
        assert_eq!(status, 200, "join: {res}");
    }

    /// Send an m.text message as `u` whose body is also its transaction ID; returns the event ID.
    pub async fn send_text(&self, u: &User, room: &str, body: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}");
        let (status, res) = self
            .put(&path, u.t(), &json!({"msgtype": "m.text", "body": body}))
            .await;
        assert_eq!(status, 200, "send: {res}");
        res["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Invite `invitee` (a user ID) to `room` as `u`, asserting success.
    pub async fn invite(&self, u: &User, room: &str, invitee: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
        let (status, res) = self.post(&path, u.t(), &json!({"user_id": invitee})).await;
        assert_eq!(status, 200, "invite: {res}");
    }

    /// Set the state event (`kind`, `key`) of `room` as `u`, asserting success; returns the
    /// event ID.
    pub async fn put_state(
        &self,
        u: &User,
        room: &str,
        kind: &str,
        key: &str,
        content: &Value,
    ) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
            enc(room),
            enc(key)
        );
        let (status, res) = self.put(&path, u.t(), content).await;
        assert_eq!(status, 200, "state {kind}/{key}: {res}");
        res["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Set `u`'s global account data of type `kind`, asserting success.
    pub async fn put_account_data(&self, u: &User, kind: &str, content: &Value) {
        let path = format!(
            "/_matrix/client/v3/user/{}/account_data/{kind}",
            enc(&u.user_id)
        );
        let (status, res) = self.put(&path, u.t(), content).await;
        assert_eq!(status, 200, "account data {kind}: {res}");
    }

    /// GET /sync with `query` (e.g. `?since=…`) as `u`, asserting success.
    pub async fn sync(&self, u: &User, query: &str) -> Value {
        let (status, body) = self
            .get(&format!("/_matrix/client/v3/sync{query}"), u.t())
            .await;
        assert_eq!(status, 200, "sync: {body}");
        body
    }
}

/// Server logs go through the test writer (shown for failing tests); `TEST_LOG` sets the
/// filter, `warn` by default.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Percent-encode a path segment or query value (room IDs, aliases, filter JSON).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

impl User {
    pub fn from_response(body: &Value) -> User {
        User {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }

    pub fn t(&self) -> Option<&str> {
        Some(&self.token)
    }

    /// The user ID as ruma's type (what a DAG builder signs events for).
    pub fn id(&self) -> ruma::OwnedUserId {
        ruma::OwnedUserId::try_from(self.user_id.as_str()).expect("user ID")
    }
}

/// Assert a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(result: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(result.0, status, "status for {}", result.1);
    assert_eq!(result.1["errcode"], errcode, "errcode in {}", result.1);
    assert!(
        result.1["error"].is_string(),
        "error message in {}",
        result.1
    );
}

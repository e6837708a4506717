//! Typed configuration, by section, with defaults for every key.
//!
//! Loading order: built-in defaults, then the TOML file, then `TRELLIS_*` environment
//! variables (`TRELLIS_DATABASE__URL` sets `database.url`). [`Config::validate`] reports every
//! problem at once, each naming its key, so an operator fixes a bad file in one pass.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

/// The documented example configuration; `trellis generate-config` prints it.
pub const EXAMPLE: &str = include_str!("../config/trellis.example.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TRELLIS_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server_name: String,
    pub data_dir: PathBuf,
    pub public_baseurl: Option<String>,
    pub database: DatabaseConfig,
    pub listeners: ListenersConfig,
    pub well_known: WellKnownConfig,
    pub registration: RegistrationConfig,
    pub federation: FederationConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub media: MediaConfig,
    pub voip: VoipConfig,
    pub push: PushConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost".to_owned(),
            data_dir: PathBuf::from("./data"),
            public_baseurl: None,
            database: DatabaseConfig::default(),
            listeners: ListenersConfig::default(),
            well_known: WellKnownConfig::default(),
            registration: RegistrationConfig::default(),
            federation: FederationConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            media: MediaConfig::default(),
            voip: VoipConfig::default(),
            push: PushConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A Postgres URL; when absent, Trellis runs a managed Postgres under `data_dir/postgres`.
    pub url: Option<String>,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 32,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    pub client: ListenerConfig,
    pub federation: FederationListenerConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub address: String,
    pub port: u16,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            address: "127.0.0.1".to_owned(),
            port: 8008,
            tls_certificate: None,
            tls_private_key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationListenerConfig {
    pub enabled: bool,
    pub address: String,
    pub port: u16,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
}

impl Default for FederationListenerConfig {
    fn default() -> Self {
        FederationListenerConfig {
            enabled: true,
            address: "0.0.0.0".to_owned(),
            port: 8448,
            tls_certificate: None,
            tls_private_key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WellKnownConfig {
    /// `m.homeserver.base_url` served at `/.well-known/matrix/client`.
    pub client: Option<String>,
    /// `m.server` (host[:port]) served at `/.well-known/matrix/server`.
    pub server: Option<String>,
}

/// The TURN server clients use to place calls (`/voip/turnServer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoipConfig {
    /// TURN URIs handed to clients, e.g. `turn:turn.example.org:3478?transport=udp`; none
    /// means no TURN server (clients get an empty answer).
    pub turn_uris: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`): each user gets
    /// credentials made with it, valid for `turn_user_lifetime_secs`.
    pub turn_shared_secret: Option<String>,
    /// Fixed credentials instead, for a TURN server without a shared secret.
    pub turn_username: Option<String>,
    pub turn_password: Option<String>,
    /// How long credentials made with the shared secret are valid, in seconds.
    pub turn_user_lifetime_secs: u64,
}

impl Default for VoipConfig {
    fn default() -> Self {
        VoipConfig {
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_username: None,
            turn_password: None,
            turn_user_lifetime_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// Allow registration with only `m.login.dummy` (no token, no e-mail).
    pub open_without_verification: bool,
    /// Secret for `/_synapse/admin/v1/register` (shared-secret registration).
    pub shared_secret: Option<String>,
    /// When non-empty, registering needs one of these (`m.login.registration_token`).
    pub tokens: Vec<String>,
    pub allow_guests: bool,
    /// Lifetime, in seconds, of access tokens given with a refresh token (clients that ask
    /// for one renew them with `/refresh`).
    pub refreshable_access_token_lifetime_secs: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: false,
            open_without_verification: false,
            shared_secret: None,
            tokens: Vec::new(),
            allow_guests: false,
            // Five minutes, as Synapse.
            refreshable_access_token_lifetime_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// CIDR ranges of private or loopback addresses outbound federation may still reach.
    pub ip_range_allowlist: Vec<String>,
    /// Check certificates of remote servers; only test networks turn this off.
    pub verify_tls: bool,
    /// Notary servers asked for a server's keys when that server cannot be reached.
    pub trusted_key_servers: Vec<String>,
    /// Longest wait, in seconds, between retries of a destination that does not answer.
    pub max_retry_interval_secs: u64,
    /// How often, in seconds, the outbound queue looks at itself without being woken: a
    /// safety net only, since every write to the queue wakes it.
    pub queue_idle_check_secs: u64,
    /// Most events fetched from another server to fill the gap before one incoming PDU.
    pub max_missing_events: u64,
    /// How long, in seconds, another server's answer about a space is reused by the client
    /// `/hierarchy` walk before that server is asked again; 0 asks every time.
    pub hierarchy_cache_secs: u64,
    /// Signing keys (ed25519 public keys, unpadded base64) never trusted, whichever server
    /// presents them: keys known to be compromised.
    pub denied_signing_keys: Vec<String>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            ip_range_allowlist: Vec::new(),
            verify_tls: true,
            trusted_key_servers: Vec::new(),
            max_retry_interval_secs: 3600,
            queue_idle_check_secs: 30,
            max_missing_events: 100,
            hierarchy_cache_secs: 3600,
            denied_signing_keys: Vec::new(),
        }
    }
}

/// Sending notifications to push gateways (the pushers users set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Longest a push gateway may take to answer one notification, in seconds; past that the
    /// notification is retried like a failed one.
    pub request_timeout_secs: u64,
    /// Longest wait, in seconds, between retries of a push gateway that fails (timeouts, 5xx,
    /// connection errors); notifications wait, in order, until it answers.
    pub max_retry_interval_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            request_timeout_secs: 10,
            max_retry_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, or per module, `info,trellis::http=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_request_body: usize,
    /// Largest event accepted, in bytes of canonical JSON (the spec's limit is 65536).
    pub max_event_size: usize,
    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle before its next request.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its headers are in.
    pub body_read_timeout_secs: u64,
    /// Most connections open at once from one IP address (0: no cap). Behind a reverse
    /// proxy every client shares the proxy's address: raise it or set 0 there.
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_body: 10 * 1024 * 1024,
            max_event_size: 65_536,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            max_connections_per_ip: 512,
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Login attempts per client IP address.
    pub login_per_ip: RateLimit,
    /// Login attempts per account, counted whatever the address.
    pub login_per_user: RateLimit,
    /// Registration attempts per client IP address.
    pub register_per_ip: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            login_per_ip: RateLimit {
                per_second: 0.2,
                burst: 10,
            },
            login_per_user: RateLimit {
                per_second: 0.1,
                burst: 5,
            },
            register_per_ip: RateLimit {
                per_second: 0.2,
                burst: 5,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest upload, and largest file fetched from another server, in bytes.
    pub max_upload_size: u64,
    /// Largest image, in pixels, decoded to make thumbnails.
    pub max_image_pixels: u64,
    /// Media stored here before this time (ms since the Unix epoch) stays readable through the
    /// legacy unauthenticated endpoints: the "freeze" of the spec's authenticated-media
    /// transition. 0: nothing is.
    pub legacy_unauthenticated_before_ms: i64,
    /// Fetch media of other servers over federation when a client asks for it.
    pub fetch_remote: bool,
    /// Longest a download from another server may take, in seconds.
    pub remote_timeout_secs: u64,
    /// How long a URI reserved with `POST /_matrix/media/v1/create` waits for its content.
    pub pending_upload_expiry_secs: u64,
    /// Most reserved URIs without content one user may hold.
    pub max_pending_uploads: u32,
    /// Serve `/preview_url` (it makes the server fetch URLs chosen by users).
    pub url_preview_enabled: bool,
    /// Largest page or image fetched for a URL preview, in bytes.
    pub url_preview_max_size: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_upload_size: 50 * 1024 * 1024,
            max_image_pixels: 32_000_000,
            legacy_unauthenticated_before_ms: 0,
            fetch_remote: true,
            remote_timeout_secs: 120,
            pending_upload_expiry_secs: 86_400,
            max_pending_uploads: 5,
            url_preview_enabled: false,
            url_preview_max_size: 10 * 1024 * 1024,
        }
    }
}

/// Why a configuration could not be used: every problem, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

impl Config {
    /// Load from an optional file and the process environment, then validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError::one(format!("{}: cannot read: {e}", p.display())))?,
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars())
    }

    /// Build from TOML text and `(name, value)` environment pairs, then validate.
    pub fn from_sources(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(toml_text)
            .map_err(|e| ConfigError::one(format!("config file: {}", e.message())))?;
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::one(format!("defaults: {e}")))?;
        let mut problems = Vec::new();
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.iter().any(String::is_empty) {
                problems.push(format!("{name}: malformed variable name"));
                continue;
            }
            if let Err(p) = set_path(&mut table, &defaults, &keys, &value) {
                problems.push(format!("{name}: {p}"));
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::one(describe_toml_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem with this configuration, or `Ok`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if ServerName::parse(&self.server_name).is_err() {
            p.push(format!(
                "server_name: {:?} is not a valid server name",
                self.server_name
            ));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            p.push("database.url: must start with postgres:// or postgresql://".to_owned());
        }
        if self.database.max_connections == 0 {
            p.push("database.max_connections: must be at least 1".to_owned());
        }
        check_listener(
            &mut p,
            "listeners.client",
            &self.listeners.client.address,
            &self.listeners.client.tls_certificate,
            &self.listeners.client.tls_private_key,
        );
        if self.listeners.federation.enabled {
            check_listener(
                &mut p,
                "listeners.federation",
                &self.listeners.federation.address,
                &self.listeners.federation.tls_certificate,
                &self.listeners.federation.tls_private_key,
            );
        }
        let r = &self.registration;
        if r.enabled && !r.open_without_verification && r.tokens.is_empty() {
            p.push(
                "registration.enabled: registration needs either open_without_verification = true \
                 or at least one entry in registration.tokens"
                    .to_owned(),
            );
        }
        if r.tokens.iter().any(|t| t.is_empty() || t.len() > 64) {
            p.push("registration.tokens: each token must be 1 to 64 characters".to_owned());
        }
        if r.shared_secret.as_deref() == Some("") {
            p.push("registration.shared_secret: must not be empty when set".to_owned());
        }
        for notary in &self.federation.trusted_key_servers {
            if ServerName::parse(notary).is_err() {
                p.push(format!(
                    "federation.trusted_key_servers: {notary:?} is not a server name"
                ));
            }
        }
        let l = &self.limits;
        if l.header_read_timeout_secs == 0 || l.body_read_timeout_secs == 0 {
            p.push(
                "limits: header_read_timeout_secs and body_read_timeout_secs must be at least 1"
                    .to_owned(),
            );
        }
        let v = &self.voip;
        for uri in &v.turn_uris {
            if !(uri.starts_with("turn:") || uri.starts_with("turns:")) {
                p.push(format!(
                    "voip.turn_uris: {uri:?} is not a turn: or turns: URI"
                ));
            }
        }
        let fixed = v.turn_username.is_some() && v.turn_password.is_some();
        if !v.turn_uris.is_empty() && v.turn_shared_secret.is_none() && !fixed {
            p.push(
                "voip: turn_uris needs turn_shared_secret, or turn_username and turn_password"
                    .to_owned(),
            );
        }
        if v.turn_shared_secret.as_deref() == Some("") {
            p.push("voip.turn_shared_secret: must not be empty when set".to_owned());
        }
        if v.turn_user_lifetime_secs == 0 {
            p.push("voip.turn_user_lifetime_secs: must be at least 1".to_owned());
        }
        for key in &self.federation.denied_signing_keys {
            let decoded = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(key);
            if decoded.map(|k| k.as_bytes().len()).ok() != Some(32) {
                p.push(format!(
                    "federation.denied_signing_keys: {key:?} is not an ed25519 public key in base64"
                ));
            }
        }
        for range in &self.federation.ip_range_allowlist {
            if IpRange::from_str(range).is_err() {
                p.push(format!(
                    "federation.ip_range_allowlist: {range:?} is not a CIDR range"
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!(
                "log.level: {:?} is not a valid log filter",
                self.log.level
            ));
        }
        if self.limits.max_event_size < 1024 {
            p.push("limits.max_event_size: must be at least 1024".to_owned());
        }
        if self.limits.max_request_body < self.limits.max_event_size {
            p.push("limits.max_request_body: must be at least limits.max_event_size".to_owned());
        }
        for (key, rl) in [
            ("rate_limits.login_per_ip", self.rate_limits.login_per_ip),
            (
                "rate_limits.login_per_user",
                self.rate_limits.login_per_user,
            ),
            (
                "rate_limits.register_per_ip",
                self.rate_limits.register_per_ip,
            ),
        ] {
            if !(rl.per_second.is_finite() && rl.per_second > 0.0) || rl.burst == 0 {
                p.push(format!(
                    "{key}: per_second must be positive and burst at least 1"
                ));
            }
        }
        let m = &self.media;
        for (key, value) in [
            ("media.max_upload_size", m.max_upload_size),
            ("media.max_image_pixels", m.max_image_pixels),
            ("media.remote_timeout_secs", m.remote_timeout_secs),
            (
                "media.pending_upload_expiry_secs",
                m.pending_upload_expiry_secs,
            ),
            ("media.url_preview_max_size", m.url_preview_max_size),
        ] {
            if value == 0 {
                p.push(format!("{key}: must be at least 1"));
            }
        }
        if m.legacy_unauthenticated_before_ms < 0 {
            p.push("media.legacy_unauthenticated_before_ms: must not be negative".to_owned());
        }
        for (key, value) in [
            ("push.request_timeout_secs", self.push.request_timeout_secs),
            (
                "push.max_retry_interval_secs",
                self.push.max_retry_interval_secs,
            ),
        ] {
            if value == 0 {
                p.push(format!("{key}: must be at least 1"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// The server name, already validated.
    pub fn server_name(&self) -> OwnedServerName {
        // validate() has run on every Config handed out by load(); a default Config is valid too.
        ServerName::parse(&self.server_name).unwrap_or_else(|_| {
            ServerName::parse("localhost").expect("\"localhost\" is a valid server name")
        })
    }

    pub fn postgres_dir(&self) -> PathBuf {
        self.data_dir.join("postgres")
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.join("signing.key")
    }

    pub fn media_dir(&self) -> PathBuf {
        self.data_dir.join("media")
    }
}

fn check_listener(
    p: &mut Vec<String>,
    key: &str,
    address: &str,
    cert: &Option<PathBuf>,
    private_key: &Option<PathBuf>,
) {
    if IpAddr::from_str(address).is_err() {
        p.push(format!("{key}.address: {address:?} is not an IP address"));
    }
    match (cert, private_key) {
        (Some(_), None) => p.push(format!(
            "{key}.tls_private_key: needed with tls_certificate"
        )),
        (None, Some(_)) => p.push(format!(
            "{key}.tls_certificate: needed with tls_private_key"
        )),
        _ => {}
    }
}

fn describe_toml_error(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    // A merged Value carries no line numbers, so name the key by its path instead.
    let path = e.path().to_string();
    let message = e.inner().message().to_owned();
    if path.is_empty() || path == "." {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// Set `keys` in `table` to `raw`, typed like the key's default (strings stay strings, so a
/// numeric-looking secret is not turned into an integer).
fn set_path(
    table: &mut toml::Table,
    defaults: &toml::Table,
    keys: &[String],
    raw: &str,
) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut t = table;
    let mut d = Some(defaults);
    for k in parents {
        d = d.and_then(|d| d.get(k)).and_then(toml::Value::as_table);
        if d.is_none() {
            return Err(format!("no configuration section {k:?}"));
        }
        // A section the file leaves out starts from its defaults, so setting one key of a
        // struct without defaults of its own (a rate limit) keeps the others.
        let section_defaults = d.cloned().unwrap_or_default();
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(section_defaults));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{k:?} is not a section"))?;
    }
    let default = d.and_then(|d| d.get(last));
    let value = match default {
        Some(toml::Value::Boolean(_)) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(format!("{raw:?} is not a boolean")),
        },
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not an integer"))?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        Some(toml::Value::Array(_)) => {
            if raw.trim_start().starts_with('[') {
                let wrapped: toml::Table = toml::from_str(&format!("v = {raw}"))
                    .map_err(|e| format!("not a TOML array: {}", e.message()))?;
                wrapped.get("v").cloned().ok_or("not a TOML array")?
            } else {
                toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                )
            }
        }
        Some(toml::Value::Table(_)) => {
            return Err(format!("{last:?} is a section; set one of its keys"));
        }
        // Strings, and optional keys absent from the defaults (all of them strings or paths).
        Some(_) | None => {
            let known = match defaults_table_for(defaults, parents) {
                Some(section) => {
                    section.contains_key(last) || OPTIONAL_KEYS.contains(&last.as_str())
                }
                None => false,
            };
            if !known {
                return Err(format!("unknown configuration key {:?}", keys.join(".")));
            }
            toml::Value::String(raw.to_owned())
        }
    };
    t.insert(last.clone(), value);
    Ok(())
}

/// Optional keys have no value in the serialized defaults, so name them for env overrides.
const OPTIONAL_KEYS: &[&str] = &[
    "url",
    "public_baseurl",
    "tls_certificate",
    "tls_private_key",
    "client",
    "server",
    "shared_secret",
];

fn defaults_table_for<'a>(
    defaults: &'a toml::Table,
    parents: &[String],
) -> Option<&'a toml::Table> {
    let mut d = defaults;
    for k in parents {
        d = d.get(k)?.as_table()?;
    }
    Some(d)
}

/// An IP network in CIDR form, e.g. `127.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub network: IpAddr,
    pub prefix: u8,
}

impl FromStr for IpRange {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = IpAddr::from_str(addr).map_err(|_| ())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(IpRange { network, prefix })
    }
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn example_config_parses_and_is_valid() {
        let c = Config::from_sources(EXAMPLE, env(&[])).expect("example config is valid");
        assert_eq!(c.server_name, "example.org");
    }

    #[test]
    fn example_documents_every_default_key() {
        // Every key the defaults have must appear in the example, so the example stays complete.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        fn walk(d: &toml::Table, e: &toml::Table, path: &str) {
            for (k, v) in d {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let ev = e.get(k).unwrap_or_else(|| panic!("example lacks {p}"));
                if let (toml::Value::Table(dt), toml::Value::Table(et)) = (v, ev) {
                    walk(dt, et, &p);
                }
            }
        }
        walk(&defaults, &example, "");
    }

    #[test]
    fn env_overrides_keys_by_path_with_types() {
        let c = Config::from_sources(
            "server_name = \"a.example\"\n",
            env(&[
                ("TRELLIS_SERVER_NAME", "b.example"),
                ("TRELLIS_DATABASE__URL", "postgres://u@h/db"),
                ("TRELLIS_REGISTRATION__ENABLED", "true"),
                ("TRELLIS_REGISTRATION__OPEN_WITHOUT_VERIFICATION", "1"),
                ("TRELLIS_REGISTRATION__SHARED_SECRET", "12345"),
                ("TRELLIS_LISTENERS__CLIENT__PORT", "9000"),
                (
                    "TRELLIS_FEDERATION__IP_RANGE_ALLOWLIST",
                    "127.0.0.0/8, ::1/128",
                ),
                ("TRELLIS_RATE_LIMITS__LOGIN_PER_IP__BURST", "7"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server_name, "b.example");
        assert_eq!(c.database.url.as_deref(), Some("postgres://u@h/db"));
        assert!(c.registration.enabled);
        assert_eq!(c.registration.shared_secret.as_deref(), Some("12345"));
        assert_eq!(c.listeners.client.port, 9000);
        assert_eq!(
            c.federation.ip_range_allowlist,
            vec!["127.0.0.0/8", "::1/128"]
        );
        assert_eq!(c.rate_limits.login_per_ip.burst, 7);
    }

    #[test]
    fn bad_values_name_their_keys_all_at_once() {
        let err = Config::from_sources(
            "server_name = \"bad name!\"\n[listeners.client]\naddress = \"nowhere\"\n[registration]\nenabled = true\n[federation]\ndenied_signing_keys = [\"short\", \"l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ\"]\n",
            env(&[]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server_name"), "{text}");
        assert!(text.contains("listeners.client.address"), "{text}");
        assert!(text.contains("registration.enabled"), "{text}");
        assert!(text.contains("denied_signing_keys: \"short\""), "{text}");
        assert!(
            !text.contains("l8Hft5"),
            "a well-formed key is not an error: {text}"
        );
    }

    #[test]
    fn bad_env_values_are_reported() {
        let err = Config::from_sources(
            "",
            env(&[
                ("TRELLIS_LISTENERS__CLIENT__PORT", "http"),
                ("TRELLIS_NOPE", "x"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TRELLIS_LISTENERS__CLIENT__PORT"), "{text}");
        assert!(text.contains("TRELLIS_NOPE"), "{text}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = Config::from_sources("[database]\nurll = \"x\"\n", env(&[])).unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn ip_ranges_match() {
        let r: IpRange = "127.0.0.0/8".parse().unwrap();
        assert!(r.contains("127.0.0.2".parse().unwrap()));
        assert!(!r.contains("128.0.0.1".parse().unwrap()));
        let r: IpRange = "::1".parse().unwrap();
        assert!(r.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
    }
}

//! Typed configuration, by section, with defaults for every key.
//!
//! Loading order: built-in defaults, then the TOML file, then `TRELLIS_*` environment
//! variables (`TRELLIS_DATABASE__URL` sets `database.url`). [`Config::validate`] reports every
//! problem at once, each naming its key, so an operator fixes a bad file in one pass.

use std::path::{Path, PathBuf};

use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

mod ip_range;
mod overrides;
mod validate;

pub use ip_range::IpRange;
use overrides::{describe_toml_error, set_path};

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

#[cfg(test)]
mod tests;

//! [`Config::validate`]: every problem at once, each naming its key.
//!
//! One step per section, run in the order the problems have always been listed in, so an
//! operator (and a test) sees the same list whichever check was added last.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ruma::ServerName;

use super::{
    Config, ConfigError, FederationConfig, IpRange, LimitsConfig, MediaConfig, PushConfig,
    RateLimitsConfig, RegistrationConfig, VoipConfig,
};

impl Config {
    /// Every problem with this configuration, or `Ok`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        self.check_server_and_database(&mut p);
        self.check_listeners(&mut p);
        check_registration(&mut p, &self.registration);
        check_trusted_key_servers(&mut p, &self.federation);
        check_read_timeouts(&mut p, &self.limits);
        check_voip(&mut p, &self.voip);
        check_federation_keys_and_ranges(&mut p, &self.federation);
        self.check_log_level(&mut p);
        check_sizes(&mut p, &self.limits);
        check_rate_limits(&mut p, &self.rate_limits);
        check_media(&mut p, &self.media);
        check_push(&mut p, &self.push);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    fn check_server_and_database(&self, p: &mut Vec<String>) {
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
    }

    /// The federation listener is checked only when enabled: a disabled one's defaults do not
    /// matter.
    fn check_listeners(&self, p: &mut Vec<String>) {
        check_listener(
            p,
            "listeners.client",
            &self.listeners.client.address,
            &self.listeners.client.tls_certificate,
            &self.listeners.client.tls_private_key,
        );
        if self.listeners.federation.enabled {
            check_listener(
                p,
                "listeners.federation",
                &self.listeners.federation.address,
                &self.listeners.federation.tls_certificate,
                &self.listeners.federation.tls_private_key,
            );
        }
    }

    fn check_log_level(&self, p: &mut Vec<String>) {
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!(
                "log.level: {:?} is not a valid log filter",
                self.log.level
            ));
        }
    }
}

fn check_registration(p: &mut Vec<String>, r: &RegistrationConfig) {
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
}

fn check_trusted_key_servers(p: &mut Vec<String>, federation: &FederationConfig) {
    for notary in &federation.trusted_key_servers {
        if ServerName::parse(notary).is_err() {
            p.push(format!(
                "federation.trusted_key_servers: {notary:?} is not a server name"
            ));
        }
    }
}

fn check_read_timeouts(p: &mut Vec<String>, l: &LimitsConfig) {
    if l.header_read_timeout_secs == 0 || l.body_read_timeout_secs == 0 {
        p.push(
            "limits: header_read_timeout_secs and body_read_timeout_secs must be at least 1"
                .to_owned(),
        );
    }
}

/// TURN credentials come either from a shared secret (time-limited) or a fixed pair.
fn check_voip(p: &mut Vec<String>, v: &VoipConfig) {
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
}

fn check_federation_keys_and_ranges(p: &mut Vec<String>, federation: &FederationConfig) {
    for key in &federation.denied_signing_keys {
        let decoded = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(key);
        if decoded.map(|k| k.as_bytes().len()).ok() != Some(32) {
            p.push(format!(
                "federation.denied_signing_keys: {key:?} is not an ed25519 public key in base64"
            ));
        }
    }
    for range in &federation.ip_range_allowlist {
        if IpRange::from_str(range).is_err() {
            p.push(format!(
                "federation.ip_range_allowlist: {range:?} is not a CIDR range"
            ));
        }
    }
}

/// A request body must be able to carry the largest event it may hold.
fn check_sizes(p: &mut Vec<String>, l: &LimitsConfig) {
    if l.max_event_size < 1024 {
        p.push("limits.max_event_size: must be at least 1024".to_owned());
    }
    if l.max_request_body < l.max_event_size {
        p.push("limits.max_request_body: must be at least limits.max_event_size".to_owned());
    }
}

fn check_rate_limits(p: &mut Vec<String>, r: &RateLimitsConfig) {
    for (key, rl) in [
        ("rate_limits.login_per_ip", r.login_per_ip),
        ("rate_limits.login_per_user", r.login_per_user),
        ("rate_limits.register_per_ip", r.register_per_ip),
    ] {
        if !(rl.per_second.is_finite() && rl.per_second > 0.0) || rl.burst == 0 {
            p.push(format!(
                "{key}: per_second must be positive and burst at least 1"
            ));
        }
    }
}

fn check_media(p: &mut Vec<String>, m: &MediaConfig) {
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
}

fn check_push(p: &mut Vec<String>, push: &PushConfig) {
    for (key, value) in [
        ("push.request_timeout_secs", push.request_timeout_secs),
        ("push.max_retry_interval_secs", push.max_retry_interval_secs),
    ] {
        if value == 0 {
            p.push(format!("{key}: must be at least 1"));
        }
    }
}

/// A listener needs an IP address, and TLS needs both its certificate and its key.
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

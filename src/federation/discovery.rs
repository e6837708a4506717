//! Server discovery: from a server name to where to connect, per the server-server spec.
//!
//! 1. an IP literal: that address, with its port or 8448;
//! 2. a hostname with an explicit port: that host and port;
//! 3. `https://<hostname>/.well-known/matrix/server` → a delegated host, to which rules 1 and
//!    2 apply, else port 8448;
//! 4. otherwise the hostname on port 8448.
//!
//! SRV records (`_matrix-fed._tcp`, `_matrix._tcp`) come with the DNS resolver; until then a
//! server that relies on SRV alone is reached on port 8448. Answers are cached: well-known
//! results for a day, failures for an hour.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::ServerName;

/// Where to send requests for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host to connect to (and to check the certificate against).
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn base_url(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.host, self.port),
        }
    }
}

const WELL_KNOWN_TTL: Duration = Duration::from_secs(24 * 3600);
const FAILURE_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_PORT: u16 = 8448;

#[derive(Default)]
pub struct Discovery {
    cache: Mutex<HashMap<String, (Target, Instant)>>,
}

/// `host[:port]` split, accepting `[v6]:port`.
pub fn split_host_port(name: &str) -> (String, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[')
        && let Some((ip, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (ip.to_owned(), port);
    }
    match name.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_owned(), Some(port)),
            Err(_) => (name.to_owned(), None),
        },
        _ => (name.to_owned(), None),
    }
}

/// Rules 1 and 2: a name that says where to connect by itself.
fn direct(name: &str) -> Option<Target> {
    let (host, port) = split_host_port(name);
    if host.parse::<IpAddr>().is_ok() {
        return Some(Target {
            host,
            port: port.unwrap_or(DEFAULT_PORT),
        });
    }
    port.map(|port| Target { host, port })
}

#[derive(serde::Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Discovery {
    pub async fn resolve(&self, http: &reqwest::Client, server: &ServerName) -> Target {
        let name = server.as_str();
        if let Some(t) = direct(name) {
            return t;
        }
        if let Some((t, expires)) = self.cache.lock().get(name).cloned()
            && expires > Instant::now()
        {
            return t;
        }
        let (target, ttl) = match well_known(http, name).await {
            Some(delegated) => {
                let t = direct(&delegated).unwrap_or(Target {
                    host: delegated,
                    port: DEFAULT_PORT,
                });
                (t, WELL_KNOWN_TTL)
            }
            None => (
                Target {
                    host: name.to_owned(),
                    port: DEFAULT_PORT,
                },
                FAILURE_TTL,
            ),
        };
        self.cache
            .lock()
            .insert(name.to_owned(), (target.clone(), Instant::now() + ttl));
        target
    }
}

async fn well_known(http: &reqwest::Client, host: &str) -> Option<String> {
    let url = format!("https://{host}/.well-known/matrix/server");
    let res = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let body = res.bytes().await.ok()?;
    if body.len() > 64 * 1024 {
        return None;
    }
    let wk: WellKnown = serde_json::from_slice(&body).ok()?;
    // The delegated name must itself be a valid server name.
    ServerName::parse(&wk.server).ok().map(|_| wk.server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_names() {
        assert_eq!(
            direct("1.2.3.4"),
            Some(Target {
                host: "1.2.3.4".into(),
                port: 8448
            })
        );
        assert_eq!(
            direct("1.2.3.4:99"),
            Some(Target {
                host: "1.2.3.4".into(),
                port: 99
            })
        );
        assert_eq!(
            direct("[::1]:99"),
            Some(Target {
                host: "::1".into(),
                port: 99
            })
        );
        assert_eq!(
            direct("[::1]"),
            Some(Target {
                host: "::1".into(),
                port: 8448
            })
        );
        assert_eq!(
            direct("example.org:443"),
            Some(Target {
                host: "example.org".into(),
                port: 443
            })
        );
        assert_eq!(direct("example.org"), None);
        assert_eq!(
            Target {
                host: "::1".into(),
                port: 5
            }
            .base_url(),
            "https://[::1]:5"
        );
    }
}

//! Server discovery: from a server name to where to connect, per the server-server spec
//! ([spec](https://spec.matrix.org/latest/server-server-api/#resolving-server-names)).
//!
//! 1. an IP literal: that address, with its port or 8448;
//! 2. a hostname with an explicit port: that host and port;
//! 3. `https://<hostname>/.well-known/matrix/server` names a delegated server, resolved as
//!    1. an IP literal: that address, with its port or 8448;
//!    2. a hostname with an explicit port: that host and port;
//!    3. SRV `_matrix-fed._tcp.<delegated>`;
//!    4. SRV `_matrix._tcp.<delegated>` (deprecated);
//!    5. otherwise the delegated hostname on port 8448;
//! 4. SRV `_matrix-fed._tcp.<hostname>`;
//! 5. SRV `_matrix._tcp.<hostname>` (deprecated);
//! 6. otherwise the hostname on port 8448.
//!
//! The certificate a server must present, and the `Host` header, always belong to the name
//! being resolved (the server name, or the delegated name) and never to an SRV target: DNS
//! is not authenticated, so only a certificate for that name proves the SRV target speaks
//! for it. A [`Target`] therefore keeps the name to verify apart from where to connect.
//!
//! Answers are cached per step: well-known results for a day, well-known failures for an
//! hour; SRV answers for their DNS TTL (bounded), absent SRV records for at most an hour, and
//! DNS failures for two minutes.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{GOOGLE, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use parking_lot::Mutex;
use rand::Rng;
use ruma::ServerName;

pub const DEFAULT_PORT: u16 = 8448;

const WELL_KNOWN_TTL: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_FAILURE_TTL: Duration = Duration::from_secs(3600);
/// SRV answers are kept at least this long, so a zero TTL does not cost a query per request.
const SRV_MIN_TTL: Duration = Duration::from_secs(60);
const SRV_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// A name without SRV records is asked again within this time, so new records are noticed.
const SRV_ABSENT_MAX_TTL: Duration = Duration::from_secs(3600);
/// A failed DNS query (timeout, SERVFAIL) is retried soon: the failure is likely passing.
const DNS_FAILURE_TTL: Duration = Duration::from_secs(120);
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
const WELL_KNOWN_MAX_BODY: usize = 64 * 1024;

/// Where and how to send requests for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The hostname or IP literal the certificate must be valid for; the TLS SNI.
    pub name: String,
    /// The `Host` header the spec asks for at the step that produced this target.
    pub host_header: String,
    pub connect: Connect,
}

/// Where the connection for a [`Target`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// The addresses of the target's own name, on this port.
    Port(u16),
    /// SRV targets in the order to try them (RFC 2782): the connection goes to these hosts
    /// and ports while the certificate and `Host` stay those of the target's name.
    Srv(Vec<SrvTarget>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// The URL base for requests. An SRV target gets no port in the URL: the connector then
    /// keeps the port the DNS resolver returns, where an explicit URL port would replace it.
    pub fn base_url(&self) -> String {
        let host = match self.name.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.name.clone(),
        };
        match &self.connect {
            Connect::Port(port) => format!("https://{host}:{port}"),
            Connect::Srv(_) => format!("https://{host}"),
        }
    }
}

/// One SRV record as discovery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host as DNS gives it, e.g. `matrix.example.org.`; `.` alone means the
    /// service is not offered at this name.
    pub target: String,
}

/// The answer to an SRV query that reached a name server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvAnswer {
    /// Records, with the shortest TTL among them.
    Records {
        records: Vec<SrvRecord>,
        ttl: Duration,
    },
    /// No SRV records at that name (NXDOMAIN or no data), with the negative-caching TTL when
    /// the zone gave one.
    Absent { ttl: Option<Duration> },
}

/// A DNS query that got no usable answer (timeout, SERVFAIL, no name server reachable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct DnsError {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The only SRV target is `.`: the name says it offers no federation service.
    #[error("{0} publishes no federation service (SRV target \".\")")]
    NotOffered(String),
    /// The name is not a hostname or IP literal ([`is_valid_server_name`]).
    #[error("{0:?} is not a valid server name")]
    Invalid(String),
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// The network questions discovery asks, behind a trait so tests can answer them without a
/// network.
pub trait Lookup: Send + Sync {
    /// The `m.server` of `https://<host>/.well-known/matrix/server`, when a valid one is served.
    fn well_known(&self, host: &str) -> impl Future<Output = Option<String>> + Send;
    /// The SRV records at `name`, e.g. `_matrix-fed._tcp.example.org`.
    fn srv(&self, name: &str) -> impl Future<Output = Result<SrvAnswer, DnsError>> + Send;
}

/// Discovery over the network: well-known over HTTPS, SRV from DNS.
pub struct NetLookup {
    http: reqwest::Client,
    dns: TokioResolver,
}

impl NetLookup {
    /// `http` fetches the well-known files, so it should carry the SSRF guard.
    pub fn new(http: reqwest::Client) -> Result<Self, NetError> {
        let dns = match TokioResolver::builder_tokio() {
            Ok(builder) => builder.build()?,
            Err(error) => {
                // Containers sometimes ship a resolv.conf without name servers; SRV lookups
                // through a public resolver beat federating without SRV at all.
                tracing::warn!(%error, "system DNS configuration unusable; SRV lookups use a public resolver");
                TokioResolver::builder_with_config(
                    ResolverConfig::udp_and_tcp(&GOOGLE),
                    TokioRuntimeProvider::default(),
                )
                .build()?
            }
        };
        Ok(NetLookup { http, dns })
    }
}

impl Lookup for NetLookup {
    async fn well_known(&self, host: &str) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let res = self
            .http
            .get(&url)
            .timeout(WELL_KNOWN_TIMEOUT)
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        let body = res.bytes().await.ok()?;
        if body.len() > WELL_KNOWN_MAX_BODY {
            return None;
        }
        let wk: WellKnown = serde_json::from_slice(&body).ok()?;
        // The delegated name must itself be a valid server name.
        ServerName::parse(&wk.server).ok().map(|_| wk.server)
    }

    async fn srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        // Absolute, so a search domain is never appended to the service name.
        let fqdn = format!("{name}.");
        match self.dns.lookup(fqdn.as_str(), RecordType::SRV).await {
            Ok(lookup) => {
                let mut ttl = u32::MAX;
                let mut records = Vec::new();
                for record in lookup.answers() {
                    if let RData::SRV(srv) = &record.data {
                        ttl = ttl.min(record.ttl);
                        records.push(SrvRecord {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target: if srv.target.is_root() {
                                ".".to_owned()
                            } else {
                                srv.target.to_ascii()
                            },
                        });
                    }
                }
                if records.is_empty() {
                    return Ok(SrvAnswer::Absent { ttl: None });
                }
                let ttl = Duration::from_secs(ttl.into());
                Ok(SrvAnswer::Records { records, ttl })
            }
            Err(NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(none))) => {
                Ok(SrvAnswer::Absent {
                    ttl: none.negative_ttl.map(|t| Duration::from_secs(t.into())),
                })
            }
            Err(e) => Err(DnsError {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

#[derive(serde::Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

/// What the SRV cache remembers about one name.
#[derive(Debug, Clone)]
enum SrvEntry {
    Records(Vec<SrvRecord>),
    Absent,
    Failed(DnsError),
}

/// Names each cache of [`Discovery`] remembers at most. Any member of any room can make us
/// resolve names of its choosing, so the caches are bounded: past the bound, expired entries
/// go, then arbitrary ones (a forgotten answer is only asked again). With at most
/// [`MAX_SRV_RECORDS`] records of at most 255-byte targets per name, both hold under 40 MB
/// at the very worst and a few hundred bytes per name in practice.
const MAX_CACHED_NAMES: usize = 4096;
/// SRV records kept per name (RFC 2782 ordering of more gains nothing).
const MAX_SRV_RECORDS: usize = 32;

/// Insert into a cache of answers that expire, keeping it within [`MAX_CACHED_NAMES`].
fn insert_bounded<V>(
    cache: &mut HashMap<String, (V, Instant)>,
    key: &str,
    value: (V, Instant),
    now: Instant,
) {
    if cache.len() >= MAX_CACHED_NAMES && !cache.contains_key(key) {
        cache.retain(|_, (_, expires)| *expires > now);
        if cache.len() >= MAX_CACHED_NAMES
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
    }
    cache.insert(key.to_owned(), value);
}

/// Resolves server names, caching each step's answers.
pub struct Discovery<L = NetLookup> {
    lookup: L,
    well_known: Mutex<HashMap<String, (Option<String>, Instant)>>,
    srv: Mutex<HashMap<String, (SrvEntry, Instant)>>,
}

/// Whether a server name could name a real server. ruma's parser takes any run of letters,
/// digits, dots and dashes as a hostname, so `..` or `a..b` pass it; the spec's grammar (a
/// DNS name, or an IP literal) has no empty label, and DNS none that starts or ends with `-`. Checked before a name is looked up or
/// contacted.
pub fn is_valid_server_name(name: &ServerName) -> bool {
    let (host, _) = split_host_port(name.as_str());
    host.parse::<IpAddr>().is_ok()
        || (host.len() <= 255
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
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

/// Steps 1 and 2 (and 3.1, 3.2 for a delegated name): a name that says where to connect by
/// itself. The `Host` header is the name as written, port included when it has one.
fn direct(name: &str) -> Option<Target> {
    let (host, port) = split_host_port(name);
    let connect = if host.parse::<IpAddr>().is_ok() {
        Connect::Port(port.unwrap_or(DEFAULT_PORT))
    } else {
        Connect::Port(port?)
    };
    Some(Target {
        name: host,
        host_header: name.to_owned(),
        connect,
    })
}

/// RFC 2782 order: ascending priority; within one priority, a weighted random order where
/// `roll(total)` picks a number in `0..=total`. Zero-weight records go first within their
/// priority before the running sums, so they are chosen only when the roll is 0.
pub fn order_srv(records: &[SrvRecord], mut roll: impl FnMut(u32) -> u32) -> Vec<SrvTarget> {
    let mut by_priority: Vec<&SrvRecord> = records.iter().collect();
    by_priority.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    for group in by_priority.chunk_by(|a, b| a.priority == b.priority) {
        let mut left: Vec<&SrvRecord> = group.to_vec();
        while !left.is_empty() {
            let total: u32 = left.iter().map(|r| u32::from(r.weight)).sum();
            let pick = roll(total);
            let mut running = 0;
            let index = left
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(left.len() - 1);
            let chosen = left.remove(index);
            ordered.push(SrvTarget {
                host: chosen.target.trim_end_matches('.').to_owned(),
                port: chosen.port,
            });
        }
    }
    ordered
}

impl<L: Lookup> Discovery<L> {
    pub fn new(lookup: L) -> Self {
        Discovery {
            lookup,
            well_known: Mutex::new(HashMap::new()),
            srv: Mutex::new(HashMap::new()),
        }
    }

    pub async fn resolve(&self, server: &ServerName) -> Result<Target, DiscoveryError> {
        if !is_valid_server_name(server) {
            return Err(DiscoveryError::Invalid(server.to_string()));
        }
        self.resolve_at(server.as_str(), Instant::now()).await
    }

    /// Resolution as of `now`, so tests can move the clock past cache lifetimes.
    async fn resolve_at(&self, name: &str, now: Instant) -> Result<Target, DiscoveryError> {
        // Steps 1 and 2.
        if let Some(target) = direct(name) {
            return Ok(target);
        }
        // Step 3.
        if let Some(delegated) = self.well_known(name, now).await {
            // Steps 3.1 and 3.2.
            if let Some(target) = direct(&delegated) {
                return Ok(target);
            }
            // Steps 3.3 to 3.5.
            return self.srv_or_default(&delegated, now).await;
        }
        // Steps 4 to 6.
        self.srv_or_default(name, now).await
    }

    /// The SRV steps for a hostname without a port, then the hostname on port 8448.
    async fn srv_or_default(&self, host: &str, now: Instant) -> Result<Target, DiscoveryError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let records = match self.srv(&format!("{service}.{host}"), now).await {
                SrvEntry::Records(records) => records,
                SrvEntry::Absent => continue,
                SrvEntry::Failed(e) => return Err(e.into()),
            };
            // RFC 2782: "." is meaningful only as the sole record; elsewhere it is ignored.
            let usable: Vec<SrvRecord> = records
                .iter()
                .filter(|r| r.target != "." && !r.target.is_empty())
                .cloned()
                .collect();
            if usable.is_empty() {
                return Err(DiscoveryError::NotOffered(host.to_owned()));
            }
            let targets = {
                let mut rng = rand::thread_rng();
                order_srv(&usable, |total| rng.gen_range(0..=total))
            };
            return Ok(Target {
                name: host.to_owned(),
                host_header: host.to_owned(),
                connect: Connect::Srv(targets),
            });
        }
        Ok(Target {
            name: host.to_owned(),
            host_header: host.to_owned(),
            connect: Connect::Port(DEFAULT_PORT),
        })
    }

    async fn well_known(&self, host: &str, now: Instant) -> Option<String> {
        if let Some((delegated, expires)) = self.well_known.lock().get(host).cloned()
            && expires > now
        {
            return delegated;
        }
        let delegated = self.lookup.well_known(host).await;
        let ttl = if delegated.is_some() {
            WELL_KNOWN_TTL
        } else {
            WELL_KNOWN_FAILURE_TTL
        };
        insert_bounded(
            &mut self.well_known.lock(),
            host,
            (delegated.clone(), now + ttl),
            now,
        );
        delegated
    }

    async fn srv(&self, name: &str, now: Instant) -> SrvEntry {
        let cached = self.srv.lock().get(name).cloned();
        if let Some((entry, expires)) = &cached
            && *expires > now
        {
            return entry.clone();
        }
        let (entry, ttl) = match self.lookup.srv(name).await {
            Ok(SrvAnswer::Records { mut records, ttl }) => (
                SrvEntry::Records({
                    records.truncate(MAX_SRV_RECORDS);
                    records
                }),
                ttl.clamp(SRV_MIN_TTL, SRV_MAX_TTL),
            ),
            Ok(SrvAnswer::Absent { ttl }) => (
                SrvEntry::Absent,
                ttl.unwrap_or(SRV_ABSENT_MAX_TTL)
                    .clamp(SRV_MIN_TTL, SRV_ABSENT_MAX_TTL),
            ),
            // A passing DNS failure should not make a known server unreachable: keep using
            // the last records for a while.
            Err(e) => match cached {
                Some((SrvEntry::Records(records), _)) => {
                    tracing::debug!(error = %e, "SRV lookup failed; using the expired answer");
                    (SrvEntry::Records(records), DNS_FAILURE_TTL)
                }
                _ => (SrvEntry::Failed(e), DNS_FAILURE_TTL),
            },
        };
        insert_bounded(&mut self.srv.lock(), name, (entry.clone(), now + ttl), now);
        entry
    }
}

#[cfg(test)]
mod tests;

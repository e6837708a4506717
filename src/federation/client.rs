//! Outbound federation: signed requests to other servers, through discovery, refusing
//! private and loopback addresses unless allow-listed (no SSRF through federation).
//!
//! A request URL's host is the name the remote certificate must match (see
//! [`super::discovery`]), so TLS sends it as SNI and verifies against it. When discovery found
//! SRV records, the URL carries no port, and a second client, whose resolver maps that name to
//! the SRV targets, connects to their addresses and ports: TLS and `Host` still see the name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ruma::api::auth_scheme::NoAuthentication;
use ruma::api::federation::authentication::{ServerSignatures, XMatrixSigningInput};
use ruma::api::path_builder::SinglePath;
use ruma::api::{
    IncomingResponseExt, OutgoingRequest, OutgoingRequestExt, auth_scheme::AuthScheme,
};
use ruma::{OwnedServerName, ServerName};

use super::discovery::{Connect, Discovery, NetLookup, SrvTarget, Target};
use crate::config::{FederationConfig, IpRange};
use crate::error::Error;
use crate::keys::ServerKeys;

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("{0} is not reachable: {1}")]
    Unreachable(OwnedServerName, String),
    #[error("{0} resolves only to addresses federation may not reach")]
    ForbiddenAddress(OwnedServerName),
    #[error("{server} answered {status}")]
    Remote {
        server: OwnedServerName,
        status: u16,
        errcode: Option<String>,
    },
    #[error("{0} sent an invalid response: {1}")]
    InvalidResponse(OwnedServerName, String),
    #[error("could not build the request: {0}")]
    Request(String),
    /// A URL (media redirect, URL preview) that may not or could not be fetched.
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    /// A URL whose host resolves only to addresses outbound requests may not reach.
    #[error("{0} resolves only to addresses outbound requests may not reach")]
    ForbiddenUrl(String),
}

impl FederationError {
    /// The remote answered 404 (or M_NOT_FOUND).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FederationError::Remote { status: 404, .. })
    }

    /// The remote does not know the endpoint at all (an older server).
    pub fn is_unrecognized(&self) -> bool {
        matches!(
            self,
            FederationError::Remote { status: 404 | 405 | 400, errcode: Some(e), .. }
                if e == "M_UNRECOGNIZED"
        )
    }
}

impl FederationError {
    /// The remote does not serve the endpoint (404, or 405 for a method it lacks) and said so
    /// with M_UNRECOGNIZED or with no Matrix error at all, as older servers answer: the
    /// signal to fall back to an older form of the endpoint, where Synapse falls back. A 404
    /// with another errcode (M_NOT_FOUND) is an answer of the endpoint, not its absence.
    pub fn is_unknown_endpoint(&self) -> bool {
        matches!(
            self,
            FederationError::Remote { status: 404 | 405, errcode, .. }
                if errcode.as_deref().is_none_or(|e| e == "M_UNRECOGNIZED")
        )
    }
}

impl From<FederationError> for Error {
    /// A remote server's failure is never passed through to clients verbatim.
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::Remote { status: 404, .. } => {
                Error::not_found("Not found on the remote server")
            }
            FederationError::Remote { status: 403, .. } => {
                Error::forbidden("The remote server refused the request")
            }
            other => Error::Upstream(other.to_string()),
        }
    }
}

/// Which addresses outbound requests may reach.
#[derive(Clone, Default)]
pub struct AddressGuard {
    allow: Vec<IpRange>,
}

impl AddressGuard {
    pub fn new(config: &FederationConfig) -> Self {
        AddressGuard {
            allow: config
                .ip_range_allowlist
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|r| r.contains(ip)) || is_public(ip)
    }
}

/// Not loopback, private, link-local, shared, multicast or otherwise special.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Names whose SRV targets [`SrvRoutes`] keeps at most.
const MAX_SRV_ROUTES: usize = 4096;

/// The SRV targets of the names discovery delegated by SRV, for the resolver of the client
/// that carries those requests.
#[derive(Clone, Default)]
struct SrvRoutes(Arc<Mutex<HashMap<String, Vec<SrvTarget>>>>);

impl SrvRoutes {
    fn set(&self, name: &str, targets: &[SrvTarget]) {
        let mut routes = self.0.lock();
        if routes.get(name).map(Vec::as_slice) != Some(targets) {
            // Bounded as discovery's own caches are: a name set here is used at once, so
            // letting an arbitrary old one go costs at most its next lookup.
            if routes.len() >= MAX_SRV_ROUTES
                && let Some(k) = routes.keys().next().cloned()
            {
                routes.remove(&k);
            }
            routes.insert(name.to_owned(), targets.to_vec());
        }
    }

    fn get(&self, name: &str) -> Option<Vec<SrvTarget>> {
        self.0.lock().get(name).cloned()
    }
}

/// DNS resolution that drops addresses the guard refuses, so every connection (redirects
/// and SRV targets included) is checked when it is made, not only when the URL was built.
struct GuardedResolver {
    guard: AddressGuard,
    /// Set on the client for SRV-delegated names: those names resolve to their SRV targets.
    srv: Option<SrvRoutes>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let name = name.as_str().to_owned();
        // Port 0 leaves the URL's port in charge. An SRV port is kept by the connector
        // because SRV URLs carry no port (an explicit URL port would replace it).
        let hosts = match self.srv.as_ref().and_then(|routes| routes.get(&name)) {
            Some(targets) => targets.into_iter().map(|t| (t.host, t.port)).collect(),
            None => vec![(name.clone(), 0)],
        };
        Box::pin(async move {
            let lookups = hosts
                .iter()
                .map(|(host, port)| tokio::net::lookup_host((host.as_str(), *port)));
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let mut failure = None;
            // Kept in SRV order, so the connector tries the preferred target first.
            for result in futures::future::join_all(lookups).await {
                match result {
                    Ok(found) => addrs.extend(found.filter(|a| guard.allows(a.ip()))),
                    Err(e) => failure = Some(e),
                }
            }
            if addrs.is_empty() {
                return Err(match failure {
                    Some(e) if hosts.len() == 1 => e.into(),
                    _ => format!("{name} has no address federation may reach").into(),
                });
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What each authentication scheme needs to sign an outbound request.
pub trait OutboundAuth: AuthScheme {
    fn input<'a>(
        origin: &ServerName,
        destination: &ServerName,
        keys: &'a ServerKeys,
    ) -> Self::Input<'a>;
}

impl OutboundAuth for ServerSignatures {
    fn input<'a>(
        origin: &ServerName,
        destination: &ServerName,
        keys: &'a ServerKeys,
    ) -> XMatrixSigningInput<'a> {
        XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), keys.key_pair())
    }
}

impl OutboundAuth for NoAuthentication {
    fn input(_: &ServerName, _: &ServerName, _: &ServerKeys) {}
}

/// Longest a single federation request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body accepted from another server.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Largest answer body kept from a URL posted to (a push gateway's answer is a short list).
const MAX_URL_RESPONSE: usize = 64 * 1024;

pub struct FederationClient {
    /// Connects to the name in the URL: requests without SRV delegation, well-known files.
    http: reqwest::Client,
    /// Connects SRV-delegated names to their SRV targets. Kept apart from `http` because a
    /// name's SRV route must not capture its other uses, such as `https://<name>/.well-known`.
    srv_http: reqwest::Client,
    srv_routes: SrvRoutes,
    keys: Arc<ServerKeys>,
    discovery: Discovery<NetLookup>,
    guard: AddressGuard,
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

fn http_client(
    guard: &AddressGuard,
    srv: Option<SrvRoutes>,
    verify_tls: bool,
) -> reqwest::ClientBuilder {
    // The resolver never sees a redirect to an IP literal, so the guard checks those here.
    let redirect_guard = guard.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        let refused = attempt
            .url()
            .host()
            .and_then(|h| literal_ip(&h))
            .is_some_and(|ip| !redirect_guard.allows(ip));
        if refused {
            attempt.error("redirect to an address outbound requests may not reach")
        } else if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            guard: guard.clone(),
            srv,
        }))
        .redirect(redirects)
        .danger_accept_invalid_certs(!verify_tls)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("Trellis/", env!("CARGO_PKG_VERSION")))
}

impl FederationClient {
    pub fn new(config: &FederationConfig, keys: Arc<ServerKeys>) -> crate::error::Result<Self> {
        let guard = AddressGuard::new(config);
        let srv_routes = SrvRoutes::default();
        let build = |srv| {
            http_client(&guard, srv, config.verify_tls)
                .build()
                .map_err(|e| Error::internal(format!("federation client: {e}")))
        };
        let http = build(None)?;
        let srv_http = build(Some(srv_routes.clone()))?;
        let lookup = NetLookup::new(http.clone())
            .map_err(|e| Error::internal(format!("DNS resolver: {e}")))?;
        Ok(FederationClient {
            http,
            srv_http,
            srv_routes,
            keys,
            discovery: Discovery::new(lookup),
            guard,
        })
    }

    /// Send `request` to `destination`, signed as the endpoint's metadata requires.
    #[tracing::instrument(name = "federation_request", skip_all, fields(%destination, path = R::PATH_BUILDER.path()))]
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutboundAuth,
    {
        let response = self.dispatch(destination, request, None).await?;
        let status = response.status();
        let bytes = read_limited(response, MAX_RESPONSE)
            .await
            .map_err(|e| FederationError::Unreachable(destination.to_owned(), e.to_string()))?;
        if !status.is_success() {
            return Err(remote_error(destination, status, &bytes));
        }
        let http_response = http::Response::builder()
            .status(status)
            .body(&bytes[..])
            .map_err(|e| FederationError::InvalidResponse(destination.to_owned(), e.to_string()))?;
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|e| FederationError::InvalidResponse(destination.to_owned(), e.to_string()))
    }

    /// Like [`Self::send`], for answers too large to hold in memory (media): the response is
    /// handed back once its headers arrive, and the caller reads and bounds the body, which
    /// must arrive within `timeout`.
    #[tracing::instrument(name = "federation_request", skip_all, fields(%destination, path = R::PATH_BUILDER.path()))]
    pub async fn send_streaming<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: Duration,
    ) -> Result<reqwest::Response, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutboundAuth,
    {
        let response = self.dispatch(destination, request, Some(timeout)).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = read_limited(response, MAX_RESPONSE)
                .await
                .unwrap_or_default();
            return Err(remote_error(destination, status, &bytes));
        }
        Ok(response)
    }

    /// Discover `destination`, sign `request` and send it; any status comes back.
    async fn dispatch<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutboundAuth,
    {
        let (target, client) = self.route(destination).await?;
        let origin = self.keys.server_name();
        let auth = <R::Authentication as OutboundAuth>::input(origin, destination, &self.keys);
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url(), auth, ())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let (parts, body) = http_request.into_parts();
        let url = parts.uri.to_string();
        let mut builder = client
            .request(parts.method, &url)
            .body(body)
            .header(http::header::HOST, &target.host_header);
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        builder
            .send()
            .await
            .map_err(|e| FederationError::Unreachable(destination.to_owned(), e.to_string()))
    }

    /// Where requests to `destination` go, and the client that connects there.
    async fn route(
        &self,
        destination: &ServerName,
    ) -> Result<(Target, &reqwest::Client), FederationError> {
        let target = self
            .discovery
            .resolve(destination)
            .await
            .map_err(|e| FederationError::Unreachable(destination.to_owned(), e.to_string()))?;
        // The connector dials an IP literal without asking the resolver, so check it here.
        if let Ok(ip) = target.name.parse::<IpAddr>()
            && !self.guard.allows(ip)
        {
            return Err(FederationError::ForbiddenAddress(destination.to_owned()));
        }
        let client = match &target.connect {
            Connect::Port(_) => &self.http,
            Connect::Srv(targets) => {
                self.srv_routes.set(&target.name, targets);
                &self.srv_http
            }
        };
        Ok((target, client))
    }

    /// An unsigned GET of `path_and_query` on `destination`'s federation address, for the
    /// few client-server endpoints servers ask of each other (legacy media downloads from
    /// servers without authenticated media). Answered like [`Self::send_streaming`].
    #[tracing::instrument(name = "federation_request", skip_all, fields(%destination, path = path_and_query))]
    pub async fn get_unsigned(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, FederationError> {
        let (target, client) = self.route(destination).await?;
        let response = client
            .get(format!("{}{path_and_query}", target.base_url()))
            .header(http::header::HOST, &target.host_header)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| FederationError::Unreachable(destination.to_owned(), e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = read_limited(response, MAX_RESPONSE)
                .await
                .unwrap_or_default();
            return Err(remote_error(destination, status, &bytes));
        }
        Ok(response)
    }

    /// GET an `http(s)` URL that is not a Matrix server's (a media redirect, a page to
    /// preview), unsigned, through the same address guard as federation. The response comes
    /// back once its headers arrive; its body must arrive within `timeout`.
    #[tracing::instrument(name = "url_request", skip_all, fields(%url))]
    pub async fn get_url(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, FederationError> {
        let parsed = self.reachable_url(url).await?;
        let response = self
            .http
            .get(parsed)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| url_failed(url, e.to_string()))?;
        if !response.status().is_success() {
            return Err(url_failed(url, format!("answered {}", response.status())));
        }
        Ok(response)
    }

    /// POST a JSON `body` to an `http(s)` URL that is not a Matrix server's (a push
    /// gateway), unsigned, through the same address guard as federation. Any answer comes
    /// back, whatever its status, with its body (at most `MAX_URL_RESPONSE` bytes); an error
    /// means no answer came within `timeout` (refused address, connection failure, timeout).
    #[tracing::instrument(name = "url_request", skip_all, fields(%url))]
    pub async fn post_json_url(
        &self,
        url: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, Bytes), FederationError> {
        let parsed = self.reachable_url(url).await?;
        let exchange = async {
            let response = self
                .http
                .post(parsed)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, read_limited(response, MAX_URL_RESPONSE).await?))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(url_failed(url, e.to_string())),
            Err(_) => Err(url_failed(url, format!("no answer within {timeout:?}"))),
        }
    }

    /// `url` parsed, if it is `http(s)` and its host has an address outbound requests may
    /// reach. The resolver checks every connection; checking first too lets a refusal be told
    /// apart from an unreachable host.
    async fn reachable_url(&self, url: &str) -> Result<reqwest::Url, FederationError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| url_failed(url, e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(url_failed(
                url,
                "only http and https URLs are fetched".to_owned(),
            ));
        }
        let host = parsed
            .host()
            .ok_or_else(|| url_failed(url, "no host".to_owned()))?;
        let allowed = match literal_ip(&host) {
            Some(ip) => self.guard.allows(ip),
            None => {
                let port = parsed.port_or_known_default().unwrap_or(443);
                let name = host.to_string();
                tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|e| url_failed(url, e.to_string()))?
                    .any(|a| self.guard.allows(a.ip()))
            }
        };
        if !allowed {
            return Err(FederationError::ForbiddenUrl(url.to_owned()));
        }
        Ok(parsed)
    }
}

fn url_failed(url: &str, reason: String) -> FederationError {
    FederationError::Url {
        url: url.to_owned(),
        reason,
    }
}

/// The IP address of a URL host that is an IP literal.
fn literal_ip(host: &url::Host<&str>) -> Option<IpAddr> {
    match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(*v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(*v6)),
        url::Host::Domain(_) => None,
    }
}

/// The error for a non-success answer, keeping the errcode the remote gave, if any.
fn remote_error(
    destination: &ServerName,
    status: http::StatusCode,
    body: &[u8],
) -> FederationError {
    let errcode = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errcode"].as_str().map(str::to_owned));
    FederationError::Remote {
        server: destination.to_owned(),
        status: status.as_u16(),
        errcode,
    }
}

/// The body, cut at `max` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Bytes, reqwest::Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if buf.len() + chunk.len() > max {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests;

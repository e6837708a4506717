//! Outbound federation: signed requests to other servers, through discovery, refusing
//! private and loopback addresses unless allow-listed (no SSRF through federation).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ruma::api::auth_scheme::NoAuthentication;
use ruma::api::federation::authentication::{ServerSignatures, XMatrixSigningInput};
use ruma::api::path_builder::SinglePath;
use ruma::api::{
    IncomingResponseExt, OutgoingRequest, OutgoingRequestExt, auth_scheme::AuthScheme,
};
use ruma::{OwnedServerName, ServerName};

use super::discovery::Discovery;
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
}

impl FederationError {
    /// The remote answered 404 (or M_NOT_FOUND).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FederationError::Remote { status: 404, .. })
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

/// DNS resolution that drops addresses the guard refuses, so every connection (redirects
/// included) is checked when it is made, not only when the URL was built.
struct GuardedResolver(AddressGuard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| guard.allows(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{} has no address federation may reach", name.as_str()).into(),
                );
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

pub struct FederationClient {
    http: reqwest::Client,
    keys: Arc<ServerKeys>,
    discovery: Discovery,
    guard: AddressGuard,
}

impl FederationClient {
    pub fn new(config: &FederationConfig, keys: Arc<ServerKeys>) -> crate::error::Result<Self> {
        let guard = AddressGuard::new(config);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .danger_accept_invalid_certs(!config.verify_tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("Trellis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("federation client: {e}")))?;
        Ok(FederationClient {
            http,
            keys,
            discovery: Discovery::default(),
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
        let target = self.discovery.resolve(&self.http, destination).await;
        if let Ok(ip) = target.host.parse::<IpAddr>()
            && !self.guard.allows(ip)
        {
            return Err(FederationError::ForbiddenAddress(destination.to_owned()));
        }
        let origin = self.keys.server_name();
        let auth = <R::Authentication as OutboundAuth>::input(origin, destination, &self.keys);
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url(), auth, ())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let (parts, body) = http_request.into_parts();
        let url = parts.uri.to_string();
        let mut builder = self.http.request(parts.method, &url).body(body);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let unreachable =
            |e: reqwest::Error| FederationError::Unreachable(destination.to_owned(), e.to_string());
        let response = builder.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = read_limited(response).await.map_err(unreachable)?;
        if !status.is_success() {
            let errcode = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["errcode"].as_str().map(str::to_owned));
            return Err(FederationError::Remote {
                server: destination.to_owned(),
                status: status.as_u16(),
                errcode,
            });
        }
        let http_response = http::Response::builder()
            .status(status)
            .body(&bytes[..])
            .map_err(|e| FederationError::InvalidResponse(destination.to_owned(), e.to_string()))?;
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|e| FederationError::InvalidResponse(destination.to_owned(), e.to_string()))
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if buf.len() + chunk.len() > MAX_RESPONSE {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "100.64.0.1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let config = FederationConfig {
            ip_range_allowlist: vec!["127.0.0.0/8".into()],
            ..FederationConfig::default()
        };
        let g = AddressGuard::new(&config);
        assert!(g.allows("127.0.0.2".parse().unwrap()));
        assert!(!g.allows("10.0.0.1".parse().unwrap()));
    }
}

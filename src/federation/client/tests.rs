//! Unit tests of the federation client: the SSRF address guard, SRV routing (connect to the target, speak to the name) and redirects, against local HTTPS servers.
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

/// A one-connection HTTPS server on 127.0.0.1 with a certificate for `name` alone, from a
/// throwaway CA. It answers `{}` and reports the SNI and `Host` it saw.
async fn https_server(
    name: &str,
) -> (
    u16,
    reqwest::Certificate,
    tokio::task::JoinHandle<(Option<String>, Option<String>)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let sni = tls.get_ref().1.server_name().map(str::to_owned);
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let host = head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().to_owned())
        });
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .await
            .unwrap();
        tls.shutdown().await.unwrap();
        (sni, host)
    });
    let ca = reqwest::Certificate::from_der(ca.der()).unwrap();
    (port, ca, task)
}

fn srv_target(name: &str, targets: &[(&str, u16)]) -> Target {
    Target {
        name: name.to_owned(),
        host_header: name.to_owned(),
        connect: Connect::Srv(
            targets
                .iter()
                .map(|&(host, port)| SrvTarget {
                    host: host.to_owned(),
                    port,
                })
                .collect(),
        ),
    }
}

fn loopback_guard() -> AddressGuard {
    AddressGuard::new(&FederationConfig {
        ip_range_allowlist: vec!["127.0.0.0/8".into()],
        ..FederationConfig::default()
    })
}

/// What `send` does for an SRV target, over a real TLS connection: the connection goes to
/// the SRV targets in order (the first refuses), while the certificate is verified
/// against the delegated name, which is also the SNI and the `Host`.
#[tokio::test]
async fn srv_route_connects_to_target_but_speaks_to_the_name() {
    let (port, ca, server) = https_server("delegated.test").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let routes = SrvRoutes::default();
    let client = http_client(&loopback_guard(), Some(routes.clone()), true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let target = srv_target(
        "delegated.test",
        &[("127.0.0.1", closed), ("localhost", port)],
    );
    let Connect::Srv(targets) = &target.connect else {
        unreachable!()
    };
    routes.set(&target.name, targets);
    let response = client
        .get(format!(
            "{}/_matrix/federation/v1/version",
            target.base_url()
        ))
        .header(http::header::HOST, &target.host_header)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (sni, host) = server.await.unwrap();
    assert_eq!(sni.as_deref(), Some("delegated.test"));
    assert_eq!(host.as_deref(), Some("delegated.test"));
}

#[tokio::test]
async fn srv_targets_pass_the_address_guard() {
    let (port, ca, server) = https_server("delegated.test").await;
    let routes = SrvRoutes::default();
    let client = http_client(&AddressGuard::default(), Some(routes.clone()), true)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    routes.set(
        "delegated.test",
        &[SrvTarget {
            host: "localhost".into(),
            port,
        }],
    );
    let result = client.get("https://delegated.test/").send().await;
    let error = result.expect_err("a loopback SRV target must be refused");
    assert!(
        format!("{error:?}").contains("no address federation may reach"),
        "{error:?}"
    );
    assert!(!server.is_finished());
    server.abort();
}

/// A redirect to an IP literal never reaches the resolver, so the redirect policy checks
/// it: only 127.0.0.2 is allowed here, and the redirect to 127.0.0.3 is refused.
#[tokio::test]
async fn redirects_to_refused_addresses_are_not_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await.unwrap();
        let answer = format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.3:{port}/x\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
        );
        tcp.write_all(answer.as_bytes()).await.unwrap();
    });
    let guard = AddressGuard::new(&FederationConfig {
        ip_range_allowlist: vec!["127.0.0.2/32".into()],
        ..FederationConfig::default()
    });
    let client = http_client(&guard, None, true).build().unwrap();
    let error = client
        .get(format!("http://127.0.0.2:{port}/"))
        .send()
        .await
        .expect_err("the redirect must be refused");
    assert!(error.is_redirect(), "{error:?}");
    server.await.unwrap();
}

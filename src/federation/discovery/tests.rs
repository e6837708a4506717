//! Unit tests of server discovery (spec order: IP literal, well-known, SRV, 8448) and its cache, against a scripted resolver.
use super::*;

#[test]
fn server_names_need_real_labels() {
    let valid = |n: &str| is_valid_server_name(&ServerName::parse(n).expect("ruma parses it"));
    for good in [
        "example.org",
        "a-b.example:8448",
        "localhost",
        "1.2.3.4:5",
        "[::1]:80",
    ] {
        assert!(valid(good), "{good}");
    }
    for bad in ["..", ".", "a..b", ".example.org", "example.org.", "x.-.y:1"] {
        if ServerName::parse(bad).is_ok() {
            assert!(!valid(bad), "{bad}");
        }
    }
}

/// Answers from tables, counting the questions asked.
#[derive(Default)]
struct FakeLookup {
    well_known: HashMap<String, String>,
    srv: Mutex<HashMap<String, Result<SrvAnswer, DnsError>>>,
    asked: Mutex<Vec<String>>,
}

impl FakeLookup {
    fn with_well_known(mut self, host: &str, delegated: &str) -> Self {
        self.well_known.insert(host.into(), delegated.into());
        self
    }

    fn with_srv(self, name: &str, records: &[(u16, u16, u16, &str)], ttl: u64) -> Self {
        let records = records
            .iter()
            .map(|&(priority, weight, port, target)| SrvRecord {
                priority,
                weight,
                port,
                target: target.into(),
            })
            .collect();
        self.srv.lock().insert(
            name.into(),
            Ok(SrvAnswer::Records {
                records,
                ttl: Duration::from_secs(ttl),
            }),
        );
        self
    }

    fn asked(&self, question: &str) -> usize {
        self.asked.lock().iter().filter(|q| *q == question).count()
    }
}

impl Lookup for FakeLookup {
    async fn well_known(&self, host: &str) -> Option<String> {
        self.asked.lock().push(format!("wk {host}"));
        self.well_known.get(host).cloned()
    }

    async fn srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        self.asked.lock().push(format!("srv {name}"));
        self.srv
            .lock()
            .get(name)
            .cloned()
            .unwrap_or(Ok(SrvAnswer::Absent { ttl: None }))
    }
}

#[tokio::test]
async fn caches_stay_bounded_whatever_names_are_asked() {
    let d = Discovery::new(FakeLookup::default());
    let now = Instant::now();
    for n in 0..MAX_CACHED_NAMES + 500 {
        d.resolve_at(&format!("s{n}.example"), now).await.unwrap();
    }
    assert!(d.well_known.lock().len() <= MAX_CACHED_NAMES);
    assert!(d.srv.lock().len() <= MAX_CACHED_NAMES);
    // The newest answers are kept: asking again asks nobody.
    let last = format!("s{}.example", MAX_CACHED_NAMES + 499);
    d.resolve_at(&last, now).await.unwrap();
    assert_eq!(d.lookup.asked(&format!("wk {last}")), 1);
}

fn port(name: &str, host_header: &str, port: u16) -> Target {
    Target {
        name: name.into(),
        host_header: host_header.into(),
        connect: Connect::Port(port),
    }
}

fn srv(name: &str, targets: &[(&str, u16)]) -> Target {
    Target {
        name: name.into(),
        host_header: name.into(),
        connect: Connect::Srv(
            targets
                .iter()
                .map(|&(host, port)| SrvTarget {
                    host: host.into(),
                    port,
                })
                .collect(),
        ),
    }
}

async fn resolve(d: &Discovery<FakeLookup>, name: &str) -> Result<Target, DiscoveryError> {
    d.resolve_at(name, Instant::now()).await
}

#[tokio::test]
async fn step_1_ip_literals() {
    let d = Discovery::new(FakeLookup::default());
    let cases = [
        ("1.2.3.4", port("1.2.3.4", "1.2.3.4", 8448)),
        ("1.2.3.4:99", port("1.2.3.4", "1.2.3.4:99", 99)),
        ("[::1]", port("::1", "[::1]", 8448)),
        ("[::1]:99", port("::1", "[::1]:99", 99)),
    ];
    for (name, expected) in cases {
        assert_eq!(resolve(&d, name).await, Ok(expected), "{name}");
    }
    assert!(
        d.lookup.asked.lock().is_empty(),
        "no lookups for IP literals"
    );
    assert_eq!(
        port("::1", "[::1]:5", 5).base_url(),
        "https://[::1]:5",
        "IPv6 in brackets"
    );
}

#[tokio::test]
async fn step_2_explicit_port_skips_well_known_and_srv() {
    let d = Discovery::new(
        FakeLookup::default()
            .with_well_known("example.org", "elsewhere.org")
            .with_srv("_matrix-fed._tcp.example.org", &[(0, 0, 1, "x.org.")], 300),
    );
    let target = resolve(&d, "example.org:443").await;
    assert_eq!(target, Ok(port("example.org", "example.org:443", 443)));
    assert!(d.lookup.asked.lock().is_empty());
}

#[tokio::test]
async fn step_3_delegation_to_ip_and_explicit_port() {
    let d = Discovery::new(
        FakeLookup::default()
            .with_well_known("a.org", "10.0.0.1")
            .with_well_known("b.org", "[2001:db8::1]:9000")
            .with_well_known("c.org", "matrix.c.org:443")
            .with_srv("_matrix-fed._tcp.matrix.c.org", &[(0, 0, 1, "x.org.")], 300),
    );
    assert_eq!(
        resolve(&d, "a.org").await,
        Ok(port("10.0.0.1", "10.0.0.1", 8448))
    );
    assert_eq!(
        resolve(&d, "b.org").await,
        Ok(port("2001:db8::1", "[2001:db8::1]:9000", 9000))
    );
    // A delegated port means no SRV lookup for the delegated name.
    assert_eq!(
        resolve(&d, "c.org").await,
        Ok(port("matrix.c.org", "matrix.c.org:443", 443))
    );
    assert_eq!(d.lookup.asked("srv _matrix-fed._tcp.matrix.c.org"), 0);
}

#[tokio::test]
async fn step_3_delegated_name_goes_through_srv_then_8448() {
    let d = Discovery::new(
        FakeLookup::default()
            .with_well_known("a.org", "matrix.a.org")
            .with_srv(
                "_matrix-fed._tcp.matrix.a.org",
                &[(10, 0, 8443, "fed.a.org.")],
                300,
            )
            .with_srv(
                "_matrix._tcp.matrix.a.org",
                &[(10, 0, 1, "old.a.org.")],
                300,
            )
            .with_well_known("b.org", "matrix.b.org")
            .with_srv(
                "_matrix._tcp.matrix.b.org",
                &[(10, 0, 8449, "old.b.org.")],
                300,
            )
            .with_well_known("c.org", "matrix.c.org")
            // The original name's records no longer matter once it delegates.
            .with_srv("_matrix-fed._tcp.c.org", &[(10, 0, 1, "wrong.c.org.")], 300),
    );
    // 3.3: the certificate and Host are the delegated name's, not the SRV target's.
    assert_eq!(
        resolve(&d, "a.org").await,
        Ok(srv("matrix.a.org", &[("fed.a.org", 8443)]))
    );
    assert_eq!(d.lookup.asked("srv _matrix._tcp.matrix.a.org"), 0);
    // 3.4
    assert_eq!(
        resolve(&d, "b.org").await,
        Ok(srv("matrix.b.org", &[("old.b.org", 8449)]))
    );
    // 3.5
    assert_eq!(
        resolve(&d, "c.org").await,
        Ok(port("matrix.c.org", "matrix.c.org", 8448))
    );
    assert_eq!(d.lookup.asked("srv _matrix-fed._tcp.c.org"), 0);
    assert_eq!(
        port("matrix.c.org", "matrix.c.org", 8448).base_url(),
        "https://matrix.c.org:8448"
    );
}

#[tokio::test]
async fn steps_4_to_6_without_well_known() {
    let d = Discovery::new(
        FakeLookup::default()
            .with_srv("_matrix-fed._tcp.a.org", &[(0, 5, 8443, "fed.a.org.")], 300)
            .with_srv("_matrix._tcp.a.org", &[(0, 5, 1, "old.a.org.")], 300)
            .with_srv("_matrix._tcp.b.org", &[(0, 5, 8449, "old.b.org.")], 300),
    );
    // 4: connect to the SRV target, but verify and address a.org.
    let a = resolve(&d, "a.org").await;
    assert_eq!(a, Ok(srv("a.org", &[("fed.a.org", 8443)])));
    assert_eq!(d.lookup.asked("srv _matrix._tcp.a.org"), 0);
    // No port in the URL, so the port the resolver returns (the SRV port) is used.
    assert_eq!(a.map(|t| t.base_url()), Ok("https://a.org".to_owned()));
    // 5
    assert_eq!(
        resolve(&d, "b.org").await,
        Ok(srv("b.org", &[("old.b.org", 8449)]))
    );
    // 6
    assert_eq!(resolve(&d, "c.org").await, Ok(port("c.org", "c.org", 8448)));
    assert_eq!(d.lookup.asked("wk c.org"), 1);
    assert_eq!(d.lookup.asked("srv _matrix-fed._tcp.c.org"), 1);
    assert_eq!(d.lookup.asked("srv _matrix._tcp.c.org"), 1);
}

#[tokio::test]
async fn dot_target_means_no_federation() {
    let d = Discovery::new(
        FakeLookup::default()
            .with_srv("_matrix-fed._tcp.a.org", &[(0, 0, 0, ".")], 300)
            .with_srv("_matrix._tcp.a.org", &[(0, 0, 8448, "old.a.org.")], 300)
            .with_srv(
                "_matrix-fed._tcp.b.org",
                &[(0, 0, 0, "."), (5, 0, 8443, "fed.b.org.")],
                300,
            ),
    );
    assert_eq!(
        resolve(&d, "a.org").await,
        Err(DiscoveryError::NotOffered("a.org".into()))
    );
    // Neither the deprecated record nor port 8448 is tried after a "." answer.
    assert_eq!(d.lookup.asked("srv _matrix._tcp.a.org"), 0);
    // Beside other records, "." is ignored.
    assert_eq!(
        resolve(&d, "b.org").await,
        Ok(srv("b.org", &[("fed.b.org", 8443)]))
    );
}

fn records(list: &[(u16, u16, &str)]) -> Vec<SrvRecord> {
    list.iter()
        .map(|&(priority, weight, target)| SrvRecord {
            priority,
            weight,
            port: 8448,
            target: target.into(),
        })
        .collect()
}

fn hosts(targets: Vec<SrvTarget>) -> Vec<String> {
    targets.into_iter().map(|t| t.host).collect()
}

#[test]
fn srv_order_is_priority_then_weight() {
    let list = records(&[
        (20, 0, "c."),
        (10, 1, "a."),
        (10, 3, "b."),
        (5, 0, "first."),
    ]);
    // Priority 10 holds weights 1 (a) and 3 (b): running sums 1, 4.
    assert_eq!(
        hosts(order_srv(&list, |_| 0)),
        ["first", "a", "b", "c"],
        "a roll of 0 takes the first record"
    );
    assert_eq!(
        hosts(order_srv(&list, |total| total)),
        ["first", "b", "a", "c"],
        "a roll past a's sum takes b"
    );
    // Whatever the roll, a lower priority always comes first.
    for roll in 0..=4 {
        let order = hosts(order_srv(&list, |total| roll.min(total)));
        assert_eq!(order[0], "first");
        assert_eq!(order[3], "c");
    }
    // Zero weight loses to any weight unless the roll is 0.
    let list = records(&[(0, 0, "zero."), (0, 10, "ten.")]);
    assert_eq!(
        hosts(order_srv(&list, |total| total.min(1))),
        ["ten", "zero"]
    );
    assert_eq!(hosts(order_srv(&list, |_| 0)), ["zero", "ten"]);
}

#[tokio::test]
async fn srv_cache_follows_ttl_within_bounds() {
    let d = Discovery::new(FakeLookup::default().with_srv(
        "_matrix-fed._tcp.a.org",
        &[(0, 0, 8443, "fed.a.org.")],
        600,
    ));
    let q = "srv _matrix-fed._tcp.a.org";
    let start = Instant::now();
    let at = |secs| start + Duration::from_secs(secs);
    assert!(d.resolve_at("a.org", start).await.is_ok());
    assert!(d.resolve_at("a.org", at(599)).await.is_ok());
    assert_eq!(d.lookup.asked(q), 1, "answer kept for its TTL");
    // The record moved; the new answer is seen once the TTL has passed.
    let d = {
        let lookup = d
            .lookup
            .with_srv("_matrix-fed._tcp.a.org", &[(0, 0, 9000, "new.a.org.")], 0);
        Discovery { lookup, ..d }
    };
    assert_eq!(
        d.resolve_at("a.org", at(601)).await,
        Ok(srv("a.org", &[("new.a.org", 9000)]))
    );
    assert_eq!(d.lookup.asked(q), 2);
    // A zero TTL is raised to the minimum rather than asked on every request.
    assert!(d.resolve_at("a.org", at(630)).await.is_ok());
    assert_eq!(d.lookup.asked(q), 2);
    assert!(d.resolve_at("a.org", at(662)).await.is_ok());
    assert_eq!(d.lookup.asked(q), 3);
}

#[tokio::test]
async fn well_known_cache_and_failures() {
    let d = Discovery::new(FakeLookup::default().with_well_known("a.org", "matrix.a.org:443"));
    let start = Instant::now();
    let at = |secs| start + Duration::from_secs(secs);
    for when in [0, 23 * 3600] {
        assert!(d.resolve_at("a.org", at(when)).await.is_ok());
        assert!(d.resolve_at("b.org", at(when)).await.is_ok());
    }
    assert_eq!(d.lookup.asked("wk a.org"), 1, "a delegation is kept a day");
    assert_eq!(d.lookup.asked("wk b.org"), 2, "a failure only an hour");
    // Absent SRV records are asked again within the hour too.
    assert_eq!(d.lookup.asked("srv _matrix-fed._tcp.b.org"), 2);
    assert!(d.resolve_at("a.org", at(24 * 3600 + 1)).await.is_ok());
    assert_eq!(d.lookup.asked("wk a.org"), 2);
}

#[tokio::test]
async fn dns_failures_are_cached_briefly_and_old_records_reused() {
    let failure = Err(DnsError {
        name: "_matrix-fed._tcp.a.org".into(),
        reason: "timed out".into(),
    });
    let lookup = FakeLookup::default();
    lookup
        .srv
        .lock()
        .insert("_matrix-fed._tcp.a.org".into(), failure.clone());
    let d = Discovery::new(lookup);
    let q = "srv _matrix-fed._tcp.a.org";
    let start = Instant::now();
    let at = |secs| start + Duration::from_secs(secs);
    assert!(matches!(
        d.resolve_at("a.org", start).await,
        Err(DiscoveryError::Dns(_))
    ));
    // Not asked again at once, and not mistaken for "no SRV": no fallback to 8448.
    assert!(d.resolve_at("a.org", at(60)).await.is_err());
    assert_eq!(d.lookup.asked(q), 1);
    assert_eq!(d.lookup.asked("srv _matrix._tcp.a.org"), 0);
    // Once records were seen, a later failure keeps them in use.
    let d = Discovery {
        lookup: d
            .lookup
            .with_srv("_matrix-fed._tcp.a.org", &[(0, 0, 1, "fed.a.org.")], 60),
        ..d
    };
    let expected = Ok(srv("a.org", &[("fed.a.org", 1)]));
    assert_eq!(d.resolve_at("a.org", at(121)).await, expected);
    d.lookup
        .srv
        .lock()
        .insert("_matrix-fed._tcp.a.org".into(), failure);
    assert_eq!(d.resolve_at("a.org", at(182)).await, expected);
    assert_eq!(d.lookup.asked(q), 3);
}

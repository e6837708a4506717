//! Unit tests of configuration loading: the example file, environment overrides, validation and CIDR ranges.
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

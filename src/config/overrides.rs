//! Environment overrides (`TRELLIS_SECTION__KEY=value`) merged into the TOML table before it
//! is deserialized, and the key-naming error text for a table that does not deserialize.

pub(super) fn describe_toml_error(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
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
pub(super) fn set_path(
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

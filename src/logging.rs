//! Log output: text for people or JSON for collectors, filtered by `log.level` or RUST_LOG.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Safe to call more than once (later calls do nothing), which
/// tests that start several servers in one process rely on.
pub fn init(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(with_quiet_deps(&config.level)).ok())
        .unwrap_or_else(|| EnvFilter::new(with_quiet_deps("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // An already-installed subscriber (tests, embedding) is fine.
    let _ = result;
}

/// ruma's auth checks log every decision about every event at `info`: two lines per event
/// stored, most of the log and a measurable share of a send's CPU. They are kept to warnings
/// unless the configured filter names them itself.
fn with_quiet_deps(level: &str) -> String {
    if level.contains("ruma_state_res") {
        level.to_owned()
    } else {
        format!("{level},ruma_state_res=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_decisions_are_quiet_unless_asked_for() {
        assert_eq!(with_quiet_deps("info"), "info,ruma_state_res=warn");
        assert_eq!(
            with_quiet_deps("debug,ruma_state_res=debug"),
            "debug,ruma_state_res=debug"
        );
        assert!(EnvFilter::try_new(with_quiet_deps("trellis=debug")).is_ok());
    }
}

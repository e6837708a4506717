//! Drive Trellis through matrix-rust-sdk (`matrix-sdk` and `matrix-sdk-ui`), the engine of
//! Element X: simplified sliding sync (MSC4186) with the SDK's own `SyncService`,
//! `RoomListService` and `Timeline`, end-to-end encryption through its encryption sync, and
//! a room joined over federation from a second server.
//!
//! ```text
//! trellis-rust-sdk-suite --homeserver URL --federated-homeserver URL [CASE...]
//! ```
//!
//! Each journey is a named case that prints PASS or FAIL; the program exits non-zero when
//! any fails. Naming cases runs only those whose name contains one of the words (with the
//! cases they need first). Every wait is for a condition on one of the SDK's streams, bounded
//! by a generous timeout that only a failure ever reaches.

mod cases;
mod users;
mod wait;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Where the suite finds the two servers.
pub struct Args {
    /// The client API of the first server (where alice and bob live).
    pub homeserver: String,
    /// The client API of the second server, federating with the first (carol lives there).
    pub federated: String,
    /// Words naming the cases to run; empty: all.
    pub only: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut homeserver = None;
    let mut federated = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--homeserver" => homeserver = Some(args.next().context("--homeserver needs a URL")?),
            "--federated-homeserver" => {
                federated = Some(args.next().context("--federated-homeserver needs a URL")?)
            }
            "-h" | "--help" => {
                println!(
                    "usage: trellis-rust-sdk-suite --homeserver URL --federated-homeserver URL [CASE...]"
                );
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            word => only.push(word.to_owned()),
        }
    }
    Ok(Args {
        homeserver: homeserver.context("--homeserver URL is required")?,
        federated: federated.context("--federated-homeserver URL is required")?,
        only,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    // The SDK's own logging, when asked for (RUST_LOG=matrix_sdk=debug and the like).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("trellis-rust-sdk-suite: {e:#}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let results = cases::run(&args).await;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name)
        .collect();
    println!(
        "\n{} of {} cases passed in {:.1}s",
        results.len() - failed.len(),
        results.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

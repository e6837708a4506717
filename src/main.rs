//! The `trellis` command: `serve`, `generate-config`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "A federation-first Matrix homeserver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver until SIGTERM or SIGINT.
    Serve {
        /// TOML configuration file; without it, defaults and TRELLIS_* variables apply.
        #[arg(long, short = 'c', env = "TRELLIS_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// Print a complete, commented example configuration.
    GenerateConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateConfig => {
            print!("{}", trellis::config::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::Serve { config } => serve(config),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    // TRELLIS_CONFIG_FILE names the file, it is not a configuration key.
    // SAFETY: single-threaded here; no other thread reads the environment yet.
    unsafe { std::env::remove_var("TRELLIS_CONFIG_FILE") };
    let config = match trellis::Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trellis: {e}");
            return ExitCode::from(2);
        }
    };
    trellis::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trellis: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trellis::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Trellis failed");
            eprintln!("trellis: {e}");
            ExitCode::FAILURE
        }
    }
}

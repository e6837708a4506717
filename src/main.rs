//! The `trellis` command: `serve`, `generate-config`, `admin`, `--version`.

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
    /// Maintenance tasks that run once and exit.
    Admin {
        #[command(subcommand)]
        task: AdminTask,
        /// TOML configuration file of the server to act on.
        #[arg(long, short = 'c', env = "TRELLIS_CONFIG_FILE", global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminTask {
    /// Rebuild a room whose data was lost here from another server in it: its current state
    /// and auth chain are fetched, checked and stored, and local members carry on.
    RecoverRoom {
        /// The room ID, e.g. !abc:example.org.
        room_id: String,
        /// A server in the room to fetch it from.
        #[arg(long)]
        via: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateConfig => {
            print!("{}", trellis::config::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::Serve { config } => serve(config),
        Command::Admin { task, config } => admin(task, config),
    }
}

fn admin(task: AdminTask, path: Option<PathBuf>) -> ExitCode {
    let Some((config, runtime)) = prepare(path) else {
        return ExitCode::from(2);
    };
    let result = match task {
        AdminTask::RecoverRoom { room_id, via } => {
            runtime.block_on(trellis::server::recover_room(config, &room_id, &via))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "admin task failed");
            eprintln!("trellis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Configuration, logging and the async runtime; `None` after printing why not.
fn prepare(path: Option<PathBuf>) -> Option<(trellis::Config, tokio::runtime::Runtime)> {
    // TRELLIS_CONFIG_FILE names the file, it is not a configuration key.
    // SAFETY: single-threaded here; no other thread reads the environment yet.
    unsafe { std::env::remove_var("TRELLIS_CONFIG_FILE") };
    let config = match trellis::Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trellis: {e}");
            return None;
        }
    };
    trellis::logging::init(&config.log);
    // A panic is one log line with where it happened, in the log's own format, not a
    // backtrace on stderr: handlers' panics are answered (see `http::panicked`) and must not
    // flood the log of a server someone is probing.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, %message, "panic");
    }));
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some((config, rt)),
        Err(e) => {
            eprintln!("trellis: cannot start the async runtime: {e}");
            None
        }
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    trellis::memory::tune();
    let Some((config, runtime)) = prepare(path) else {
        return ExitCode::from(2);
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

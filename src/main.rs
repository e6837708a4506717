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

/// glibc's malloc serves a block above its mmap threshold with a mapping of its own, returned
/// to the kernel on free, but then raises the threshold to that block's size (up to 32 MiB).
/// Each password hash works in a 19 MiB argon2 buffer, so after the first one every later
/// buffer came from the heap arena of whichever blocking-pool thread ran it and stayed
/// there once freed: 20-60 MiB kept per arena, three quarters of the server's memory after a
/// load run. A fixed threshold (setting it turns the adjustment off) hands such blocks, and
/// the other rare multi-megabyte ones (a large room's state, a big federation answer), back
/// as soon as they are freed, while smaller allocations stay in the arenas.
///
/// Free memory inside a heap, below its topmost live allocation, glibc gives back only when
/// asked. Joining a room of 10,000 members left 80 MiB of such holes among a few long-lived
/// allocations (caches) after 16 MiB of live data; a thread asks every few seconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    const MMAP_THRESHOLD: libc::c_int = 1 << 20;
    const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    let trim = || {
        loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim is thread-safe and only returns free pages to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("malloc-trim".to_owned())
        .spawn(trim)
    {
        eprintln!("trellis: cannot start the malloc-trim thread: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

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
    tune_malloc();
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

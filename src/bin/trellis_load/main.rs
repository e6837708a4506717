//! `trellis-load`: the same scenarios against one or more running homeservers (Trellis,
//! Synapse, ...) in one run, printed side by side with the ratio of the first to the second.
//!
//! Every server needs open registration with the dummy flow (Synapse:
//! `enable_registration: true`, `enable_registration_without_verification: true`) and rate
//! limits out of the way. Users are created with fresh names on each run.
//!
//! The federation scenarios stand up a scripted peer server on 127.0.0.1 (TLS with a
//! self-signed certificate). They need each server to be named by IP and port
//! (`127.0.0.1:8448`), to skip certificate checks and to be allowed to reach loopback:
//! settings for a test machine only. `--no-federation` leaves them out.
//!
//! ```text
//! trellis-load --server trellis=http://127.0.0.1:8008 --server synapse=http://127.0.0.1:8118 \
//!              [--pid trellis=1234 --pid synapse=5678] [--scale 1.0] [--no-federation]
//! trellis-load --server trellis=http://127.0.0.1:8008 --pid trellis=1234 --soak 30
//! ```
//!
//! `--only client,federation,sliding` runs only the scenarios named (all three by default):
//! the client API, federation, and simplified sliding sync ([`sliding`]).
//!
//! `--soak MINUTES` runs the soak ([`soak`]) instead of the scenarios: a steady mixed load
//! while each server's resident memory (its `--pid`, required) is read every minute.

mod client;
mod peer;
mod scenarios;
mod sliding;
mod soak;

use std::collections::BTreeMap;
use std::time::Duration;

use client::Client;
use scenarios::{Figures, scaled};

const SETTLE: Duration = Duration::from_secs(15);

const USAGE: &str = "usage: trellis-load --server NAME=URL [--server NAME=URL ...] \
                     [--pid NAME=PID ...] [--scale F] [--no-federation] \
                     [--only client,federation,sliding] [--soak MINUTES]";

struct Args {
    servers: Vec<(String, String)>,
    pids: BTreeMap<String, String>,
    scale: f64,
    federation: bool,
    client: bool,
    sliding: bool,
    soak: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        servers: Vec::new(),
        pids: BTreeMap::new(),
        scale: 1.0,
        federation: true,
        client: true,
        sliding: true,
        soak: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--server" => {
                let v = value()?;
                let (n, u) = v.split_once('=').ok_or("--server NAME=URL")?;
                args.servers
                    .push((n.to_owned(), u.trim_end_matches('/').to_owned()));
            }
            "--pid" => {
                let v = value()?;
                let (n, p) = v.split_once('=').ok_or("--pid NAME=PID")?;
                args.pids.insert(n.to_owned(), p.to_owned());
            }
            "--scale" => {
                args.scale = value()?
                    .parse()
                    .map_err(|_| "--scale takes a number".to_owned())?;
                if args.scale.is_nan() || args.scale <= 0.0 {
                    return Err("--scale must be above 0".to_owned());
                }
            }
            "--no-federation" => args.federation = false,
            "--only" => {
                let v = value()?;
                let names: Vec<&str> = v.split(',').collect();
                if let Some(bad) = names
                    .iter()
                    .find(|n| !["client", "federation", "sliding"].contains(n))
                {
                    return Err(format!("--only: no scenario {bad}"));
                }
                args.client = names.contains(&"client");
                args.federation = names.contains(&"federation");
                args.sliding = names.contains(&"sliding");
            }
            "--soak" => {
                let minutes = value()?
                    .parse()
                    .map_err(|_| "--soak takes whole minutes".to_owned())?;
                args.soak = Some(minutes);
            }
            _ => return Err(USAGE.to_owned()),
        }
    }
    if args.servers.is_empty() {
        return Err(USAGE.to_owned());
    }
    Ok(args)
}

fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("trellis-load: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let tag = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(minutes) = args.soak {
        return soak_all(&args, &http, minutes, &tag).await;
    }
    let federation = match args.federation {
        true => {
            let peer = peer::Peer::start().await?;
            let members = scaled(10_000, args.scale);
            eprintln!("peer {} hosts a room of {members} members", peer.name);
            let hosted = peer.host_room(members)?;
            Some((peer, hosted))
        }
        false => None,
    };
    let mut results: Vec<(String, Figures)> = Vec::new();
    for (name, base) in &args.servers {
        eprintln!("running against {name} ({base})...");
        let client = Client {
            http: http.clone(),
            base: base.clone(),
        };
        let mut figures = Figures::new();
        if args.client {
            scenarios::client_api(&client, args.scale, &tag, &mut figures)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
        }
        if let Some((peer, hosted)) = &federation {
            scenarios::federation(&client, peer, hosted, args.scale, &tag, &mut figures)
                .await
                .map_err(|e| format!("{name}: federation: {e}"))?;
        }
        if args.sliding {
            let pid = args.pids.get(name).map(String::as_str);
            sliding::scenario(&client, args.scale, &tag, pid, &mut figures)
                .await
                .map_err(|e| format!("{name}: sliding sync: {e}"))?;
        }
        if let Some(pid) = args.pids.get(name) {
            if let Some(rss) = rss_mib(pid) {
                figures.insert("90 server RSS right after the run", (rss, "MiB", false));
            }
            // What the server keeps once idle: allocators and garbage collectors give memory
            // back on their own schedule.
            tokio::time::sleep(SETTLE).await;
            if let Some(rss) = rss_mib(pid) {
                figures.insert("91 server RSS 15 s later", (rss, "MiB", false));
            }
        }
        // Each server's figures as soon as it is done, in case a later one fails.
        for (key, (v, unit, _)) in &figures {
            eprintln!("  {:<52} {v:.1} {unit}", label(key));
        }
        results.push((name.clone(), figures));
    }
    print_table(&results);
    Ok(())
}

/// The soak against every server in turn, then the RSS of each by the minute.
async fn soak_all(
    args: &Args,
    http: &reqwest::Client,
    minutes: u64,
    tag: &str,
) -> Result<(), String> {
    let mut all = Vec::new();
    for (name, base) in &args.servers {
        let pid = args
            .pids
            .get(name)
            .ok_or_else(|| format!("--soak needs --pid {name}=PID"))?;
        eprintln!("soaking {name} ({base}) for {minutes} min...");
        let client = Client {
            http: http.clone(),
            base: base.clone(),
        };
        let samples = soak::run(&client, pid, minutes, tag)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        all.push((name.clone(), samples));
    }
    print!("{:>6}", "minute");
    for (name, _) in &all {
        print!(" {:>16} {:>10}", format!("{name} RSS"), "requests");
    }
    println!();
    for m in 0..=minutes as usize {
        print!("{m:>6}");
        for (_, samples) in &all {
            match samples.get(m) {
                Some((_, rss, done)) => print!(" {:>16} {done:>10}", format!("{rss:.1} MiB")),
                None => print!(" {:>16} {:>10}", "-", "-"),
            }
        }
        println!();
    }
    Ok(())
}

/// A figure's name without the sort key it starts with ("07 sync wake-up" → "sync wake-up").
fn label(key: &str) -> &str {
    key.split_once(' ').map_or(key, |(_, name)| name)
}

/// One row per figure, one column per server, and the first server's advantage over the
/// second (above 1 means the first did better).
fn print_table(results: &[(String, Figures)]) {
    print!("{:<52}", "scenario");
    for (name, _) in results {
        print!(" {name:>16}");
    }
    if results.len() > 1 {
        print!(" {:>10}", "ratio");
    }
    println!();
    let Some((_, first)) = results.first() else {
        return;
    };
    for (key, (a, _, bigger)) in first {
        print!("{:<52}", label(key));
        for (_, f) in results {
            match f.get(key) {
                Some((v, unit, _)) => print!(" {:>16}", format!("{v:.1} {unit}")),
                None => print!(" {:>16}", "-"),
            }
        }
        if let Some((b, _, _)) = results.get(1).and_then(|r| r.1.get(key)) {
            let ratio = if *bigger { a / b } else { b / a };
            print!(" {:>9.1}x", ratio);
        }
        println!();
    }
}

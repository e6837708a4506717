//! The soak: a steady mixed load for a fixed time while the server's resident memory is read
//! every minute, to show where it levels off (or that it does not). The load is what grew
//! memory before: state changes (topics, names, display names, power levels, each a new
//! state group), messages, typing notices and receipts, with every user long-polling `/sync`
//! all along.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Client, Res, User, enc};

const USERS: usize = 20;
const ROOMS: usize = 10;
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// Run the soak against `c` for `minutes`, reading the RSS of `pid` (MiB) every minute.
/// Returns (minute, RSS, requests made so far) per sample.
pub async fn run(c: &Client, pid: &str, minutes: u64, tag: &str) -> Res<Vec<(u64, f64, u64)>> {
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(c.register(&format!("soak{tag}u{i}")).await?);
    }
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let room = c.create_room(&users[r % USERS]).await?;
        for u in &users {
            c.join(u, &room, None).await?;
        }
        rooms.push(room);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for u in users.iter().cloned() {
        let (c, stop, requests) = (c.clone(), stop.clone(), requests.clone());
        tasks.push(tokio::spawn(sync_loop(c, u, stop, requests)));
    }
    for (i, u) in users.iter().cloned().enumerate() {
        let (c, stop, requests) = (c.clone(), stop.clone(), requests.clone());
        let rooms = rooms.clone();
        tasks.push(tokio::spawn(async move {
            write_loop(&c, &u, i, &rooms, &stop, &requests).await
        }));
    }
    let start = Instant::now();
    let mut samples = vec![(0, crate::rss_mib(pid).unwrap_or(0.0), 0)];
    for minute in 1..=minutes {
        tokio::time::sleep_until((start + SAMPLE_EVERY * minute as u32).into()).await;
        let rss = crate::rss_mib(pid).ok_or("the server's process is gone")?;
        let done = requests.load(Ordering::Relaxed);
        eprintln!("  soak minute {minute:>3}: RSS {rss:.1} MiB after {done} requests");
        samples.push((minute, rss, done));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(samples)
}

/// Long-poll `/sync` until told to stop, as a client left open would.
async fn sync_loop(c: Client, u: User, stop: Arc<AtomicBool>, requests: Arc<AtomicU64>) -> Res<()> {
    let mut since = String::new();
    while !stop.load(Ordering::Relaxed) {
        let query = match since.as_str() {
            "" => "?timeout=0".to_owned(),
            s => format!("?timeout=5000&since={}", enc(s)),
        };
        let v = c.sync(&u, &query).await?;
        requests.fetch_add(1, Ordering::Relaxed);
        since = v["next_batch"].as_str().unwrap_or_default().to_owned();
    }
    Ok(())
}

/// One user's writes, round after round, until told to stop: each round changes some state
/// and sends, types and reads in every room.
async fn write_loop(
    c: &Client,
    u: &User,
    who: usize,
    rooms: &[String],
    stop: &AtomicBool,
    requests: &AtomicU64,
) -> Res<()> {
    let put = reqwest::Method::PUT;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let profile = format!("/_matrix/client/v3/profile/{}/displayname", enc(&u.user_id));
        let name = json!({"displayname": format!("user {who} round {round}")});
        c.call(put.clone(), &profile, Some(&u.token), Some(&name))
            .await?;
        for (r, room) in rooms.iter().enumerate() {
            let base = format!("/_matrix/client/v3/rooms/{}", enc(room));
            // The room's creator changes its topic and power levels; everyone sends.
            if r % USERS == who {
                let topic = json!({"topic": format!("round {round}")});
                c.call(
                    put.clone(),
                    &format!("{base}/state/m.room.topic/"),
                    Some(&u.token),
                    Some(&topic),
                )
                .await?;
                let power = json!({
                    "users": {&u.user_id: 100},
                    "events": {"m.room.topic": 50 + (round % 50)},
                });
                c.call(
                    put.clone(),
                    &format!("{base}/state/m.room.power_levels/"),
                    Some(&u.token),
                    Some(&power),
                )
                .await?;
            }
            let txn = format!("s{who}r{r}n{round}");
            c.send(u, room, &txn).await?;
            let typing = format!("{base}/typing/{}", enc(&u.user_id));
            c.call(
                put.clone(),
                &typing,
                Some(&u.token),
                Some(&json!({"typing": true, "timeout": 5000})),
            )
            .await?;
            requests.fetch_add(3, Ordering::Relaxed);
        }
        // Read receipts on the latest event of the first room.
        let latest = c
            .get(
                u,
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
                    enc(&rooms[0])
                ),
            )
            .await?;
        if let Some(event) = latest["chunk"][0]["event_id"].as_str() {
            let path = format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&rooms[0]),
                enc(event)
            );
            c.call(
                reqwest::Method::POST,
                &path,
                Some(&u.token),
                Some(&json!({})),
            )
            .await?;
        }
        requests.fetch_add(3, Ordering::Relaxed);
    }
    Ok(())
}

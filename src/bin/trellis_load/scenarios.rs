//! The scenarios: the same calls against every server, each producing named figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::client::{Client, Res, User, enc};
use crate::peer::{HostedRoom, Peer};

/// `base` scaled by the run's --scale, at least 1.
pub fn scaled(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(1)
}

pub fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// One figure: its name, unit and whether bigger is better (for the ratio).
pub type Figures = BTreeMap<&'static str, (f64, &'static str, bool)>;

pub async fn client_api(c: &Client, scale: f64, tag: &str, out: &mut Figures) -> Res<()> {
    let n = |base: usize| scaled(base, scale);
    let alice = c.register(&format!("alice{tag}")).await?;
    let bob = c.register(&format!("bob{tag}")).await?;

    // The send room: the sends, the wake-ups and the pagination all use it.
    let room = c.create_room(&alice).await?;
    sequential_sends(c, &alice, &room, n(200), out).await?;
    concurrent_sends(c, &alice, &room, n(50), out).await?;
    initial_sync(c, tag, (n(50), n(100)), out).await?;
    sync_wakeups(c, (&alice, &bob), &room, n(50), out).await?;

    // /messages back-pagination over the send room, without a filter and with one (the
    // room's messages only, as a client hiding state changes asks).
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    for (label, filter) in [
        ("09 /messages: pages/s", None),
        ("09b /messages, filtered: pages/s", Some(filter.as_str())),
    ] {
        let pages = paginate_back(c, &alice, &room, filter).await?;
        out.insert(label, (pages.0 as f64 / pages.1, "pages/s", true));
    }

    // Room creation.
    let start = Instant::now();
    let rooms = n(20);
    for _ in 0..rooms {
        c.create_room(&alice).await?;
    }
    out.insert(
        "10 createRoom: rooms/s",
        (
            rooms as f64 / start.elapsed().as_secs_f64(),
            "rooms/s",
            true,
        ),
    );

    // Joining many users to one room.
    let big = c.create_room(&alice).await?;
    let joiners = n(500);
    let start = Instant::now();
    for i in 0..joiners {
        let u = c.register(&format!("j{tag}x{i}")).await?;
        c.join(&u, &big, None).await?;
    }
    out.insert(
        "11 register + join one room: users/s",
        (
            joiners as f64 / start.elapsed().as_secs_f64(),
            "users/s",
            true,
        ),
    );
    Ok(())
}

/// Figures 01-03: `count` sends one after the other, and their latencies.
async fn sequential_sends(
    c: &Client,
    alice: &User,
    room: &str,
    count: usize,
    out: &mut Figures,
) -> Res<()> {
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        c.send(alice, room, &format!("seq{i}")).await?;
        lat.push(t.elapsed());
    }
    let total = start.elapsed().as_secs_f64();
    out.insert(
        "01 send: events/s (sequential)",
        (lat.len() as f64 / total, "ev/s", true),
    );
    out.insert(
        "02 send: p50 latency",
        (percentile(&mut lat, 0.5), "ms", false),
    );
    out.insert(
        "03 send: p99 latency",
        (percentile(&mut lat, 0.99), "ms", false),
    );

    Ok(())
}

/// Figures 04-05: 8 concurrent senders of `per` events each, in `room` or in 8 new rooms.
async fn concurrent_sends(
    c: &Client,
    alice: &User,
    room: &str,
    per: usize,
    out: &mut Figures,
) -> Res<()> {
    // Concurrent senders: 8 in one room, 8 in separate rooms.
    for (label, separate) in [
        ("04 send: events/s, 8 senders, one room", false),
        ("05 send: events/s, 8 senders, 8 rooms", true),
    ] {
        let mut rooms = Vec::new();
        for _ in 0..8 {
            rooms.push(if separate {
                c.create_room(alice).await?
            } else {
                room.to_owned()
            });
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (s, r) in rooms.into_iter().enumerate() {
            let (c, u) = (c.clone(), alice.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    c.send(&u, &r, &format!("c{separate}{s}x{i}")).await?;
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        out.insert(
            label,
            (
                (8 * per) as f64 / start.elapsed().as_secs_f64(),
                "ev/s",
                true,
            ),
        );
    }

    Ok(())
}

/// Figure 06: initial sync of a new user in `rooms` rooms of `events` events each.
async fn initial_sync(
    c: &Client,
    tag: &str,
    (rooms, events): (usize, usize),
    out: &mut Figures,
) -> Res<()> {
    // Initial sync of a user in 50 rooms x 100 events.
    let syncer = c.register(&format!("carol{tag}")).await?;
    for r in 0..rooms {
        let room = c.create_room(&syncer).await?;
        for i in 0..events {
            c.send(&syncer, &room, &format!("r{r}e{i}")).await?;
        }
    }
    // Each from a new login: Synapse answers a repeated request of the same device from a
    // cache for two minutes.
    let mut times = Vec::new();
    for _ in 0..3 {
        let device = c.login(&syncer).await?;
        let t = Instant::now();
        c.sync(&device, "").await?;
        times.push(t.elapsed());
    }
    out.insert(
        "06 initial sync, 50 rooms x 100 events",
        (percentile(&mut times, 0.5), "ms", false),
    );

    Ok(())
}

/// Figures 07-08b: `count` wake-ups of bob's waiting sync by alice's sends in `room`.
async fn sync_wakeups(
    c: &Client,
    (alice, bob): (&User, &User),
    room: &str,
    count: usize,
    out: &mut Figures,
) -> Res<()> {
    // Incremental sync wake-up: from the start of the send to the sync's answer.
    c.join(bob, room, None).await?;
    let mut since = c.sync(bob, "?timeout=0").await?["next_batch"]
        .as_str()
        .ok_or("no next_batch")?
        .to_owned();
    let mut wake = Vec::new();
    // The same wake-ups, from the sender's 200 (the sync may answer before it: zero).
    let mut wake_after_200 = Vec::new();
    for i in 0..count {
        let (c2, b2, s2) = (c.clone(), bob.clone(), since.clone());
        let waiting = tokio::spawn(async move {
            let v = c2
                .sync(&b2, &format!("?since={}&timeout=30000", enc(&s2)))
                .await;
            (Instant::now(), v)
        });
        // Let the sync reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent_at = Instant::now();
        c.send(alice, room, &format!("wake{i}")).await?;
        let send_answered_at = Instant::now();
        let (answered_at, v) = waiting.await.map_err(|e| e.to_string())?;
        let v = v?;
        since = v["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
        wake.push(answered_at.saturating_duration_since(sent_at));
        wake_after_200.push(answered_at.saturating_duration_since(send_answered_at));
    }
    out.insert(
        "07 sync wake-up: p50",
        (percentile(&mut wake, 0.5), "ms", false),
    );
    out.insert(
        "08 sync wake-up: p99",
        (percentile(&mut wake, 0.99), "ms", false),
    );
    out.insert(
        "08b sync wake-up from the sender's 200: p50",
        (percentile(&mut wake_after_200, 0.5), "ms", false),
    );

    Ok(())
}

/// How long /messages is measured for at least: a pass back through the send room is a few
/// dozen pages, too short a window to time alone.
const PAGING_WINDOW: Duration = Duration::from_secs(1);

/// Page backwards through `room` with /messages, 20 events a page, from its end to its start
/// and again, until [`PAGING_WINDOW`] has passed (at most 5,000 pages): (pages read, seconds
/// taken).
async fn paginate_back(
    c: &Client,
    user: &crate::client::User,
    room: &str,
    filter: Option<&str>,
) -> Res<(usize, f64)> {
    let mut pages = 0;
    let start = Instant::now();
    while start.elapsed() < PAGING_WINDOW && pages < 5_000 {
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
                enc(room)
            );
            if let Some(f) = filter {
                path.push_str(&format!("&filter={f}"));
            }
            if let Some(f) = &from {
                path.push_str(&format!("&from={}", enc(f)));
            }
            let v = c
                .call(reqwest::Method::GET, &path, Some(&user.token), None)
                .await?;
            pages += 1;
            // The start of the room: no `end`, or (some servers) an empty last page.
            let empty = v["chunk"].as_array().is_none_or(|c| c.is_empty());
            match v["end"].as_str() {
                Some(e) if !empty && pages < 5_000 => from = Some(e.to_owned()),
                _ => break,
            }
        }
    }
    Ok((pages, start.elapsed().as_secs_f64()))
}

/// How long the ingested PDUs may take to become readable before the run gives up.
const INGEST_DEADLINE: Duration = Duration::from_secs(600);

/// Federation: PDUs/s accepted from the peer sending transactions of 50 PDUs into one room,
/// and the time until a room of the peer's with `hosted`'s thousands of members is usable
/// after a local user asks to join it.
pub async fn federation(
    c: &Client,
    peer: &Peer,
    hosted: &HostedRoom,
    scale: f64,
    tag: &str,
    out: &mut Figures,
) -> Res<()> {
    let owner = c.register(&format!("fedowner{tag}")).await?;
    let target = owner.server_name().to_owned();
    if target.parse::<std::net::SocketAddr>().is_err() {
        return Err(format!(
            "the federation scenarios need a server named by IP and port (it is {target})"
        ));
    }

    // Ingest: the peer's user joins a room here, then sends messages 50 to a transaction.
    let room = c.create_room(&owner).await?;
    let mut joined = peer
        .join_remote(&target, &room, &format!("loader{tag}"))
        .await?;
    let total = scaled(2000, scale);
    let pdus = peer.messages(&mut joined, total)?;
    let mut accepted = 0;
    let start = Instant::now();
    let mut batches = pdus.into_iter().peekable();
    let mut i = 0;
    while batches.peek().is_some() {
        let batch: Vec<_> = batches.by_ref().take(50).collect();
        accepted += peer
            .send_transaction(&target, &format!("{tag}-{i}"), batch)
            .await?;
        i += 1;
    }
    // A server may accept a transaction before it has processed its PDUs (Synapse stages
    // them and answers at once), so the clock runs until the last one is readable.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
        enc(&room)
    );
    let expected = format!("ingest {}", total - 1);
    loop {
        let last = c.get(&owner, &path).await?;
        if last["chunk"][0]["content"]["body"].as_str() == Some(expected.as_str()) {
            break;
        }
        if start.elapsed() > INGEST_DEADLINE {
            return Err(format!(
                "{INGEST_DEADLINE:?} after the first transaction the newest event is not \
                 {expected:?} but {}",
                last["chunk"][0]
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.insert(
        "12 federation ingest: PDUs/s (50 per transaction)",
        (
            accepted as f64 / start.elapsed().as_secs_f64(),
            "PDU/s",
            true,
        ),
    );

    // A remote room with thousands of members: from the join request until a message sent
    // into it is accepted.
    let joiner = c.register(&format!("bigjoiner{tag}")).await?;
    let start = Instant::now();
    c.join(&joiner, hosted.room_id.as_str(), Some(peer.name.as_str()))
        .await?;
    c.send(&joiner, hosted.room_id.as_str(), &format!("hello{tag}"))
        .await?;
    out.insert(
        "13 join a remote room of many members: until usable",
        (start.elapsed().as_secs_f64() * 1000.0, "ms", false),
    );
    let members = c
        .get(
            &joiner,
            &format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                enc(hosted.room_id.as_str())
            ),
        )
        .await?;
    let count = members["joined"].as_object().map_or(0, |m| m.len());
    if count != hosted.members + 2 {
        return Err(format!(
            "after the join the room shows {count} joined members, not {}",
            hosted.members + 2
        ));
    }
    Ok(())
}

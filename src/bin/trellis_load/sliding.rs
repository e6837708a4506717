//! Simplified sliding sync (MSC4186), as Element X uses it: the first answer of a fresh
//! connection for a user in many rooms, how fast a waiting connection hears of a send, and
//! what an idle poll costs the server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Client, Res, User, enc};
use crate::scenarios::{Figures, percentile, scaled};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The room list request of Element X's room list service: the first 20 rooms by recency,
/// with the state a room list row shows and the last event.
fn room_list(conn_id: &str) -> Value {
    json!({
        "conn_id": conn_id,
        "lists": {"all_rooms": {
            "ranges": [[0, 19]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.avatar", ""], ["m.room.encryption", ""],
                ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
                ["m.room.join_rules", ""], ["m.room.create", ""], ["m.room.topic", ""],
            ],
        }},
        "extensions": {
            "account_data": {"enabled": true},
            "receipts": {"enabled": true},
            "typing": {"enabled": true},
        },
    })
}

async fn sliding(
    c: &Client,
    u: &User,
    pos: Option<&str>,
    timeout_ms: u64,
    body: &Value,
) -> Res<Value> {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(p) = pos {
        path.push_str(&format!("&pos={}", enc(p)));
    }
    c.call(reqwest::Method::POST, &path, Some(&u.token), Some(body))
        .await
}

fn pos_of(v: &Value) -> Res<String> {
    Ok(v["pos"].as_str().ok_or("no pos")?.to_owned())
}

/// Server CPU time (user + system) so far, in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Clock ticks are 1/100 s on Linux everywhere this runs.
    Some(ticks / 100.0)
}

/// Runs `f` over `items` with at most `width` at a time.
async fn bounded<T, F, Fut>(items: Vec<T>, width: usize, f: F) -> Res<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Res<()>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        if running.len() >= width
            && let Some(done) = running.join_next().await
        {
            done.map_err(|e| e.to_string())??;
        }
        running.spawn(f(item));
    }
    while let Some(done) = running.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

pub async fn scenario(
    c: &Client,
    scale: f64,
    tag: &str,
    pid: Option<&str>,
    out: &mut Figures,
) -> Res<()> {
    let rooms = scaled(500, scale);
    let user = c.register(&format!("ss{tag}")).await?;
    let other = c.register(&format!("ssother{tag}")).await?;
    eprintln!("  sliding sync: creating {rooms} rooms with a message each...");
    // Created eight at a time: the figures are about reading them, not about making them.
    let made = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    bounded((0..rooms).collect(), 8, |i| {
        let (c, u, made) = (c.clone(), user.clone(), made.clone());
        async move {
            let room = c.create_room(&u).await?;
            c.send(&u, &room, &format!("first{i}")).await?;
            made.lock().await.push(room);
            Ok(())
        }
    })
    .await?;
    let made = made.lock().await.clone();
    let room = made.first().ok_or("no rooms made")?.clone();
    c.join(&other, &room, None).await?;

    // The first answer of a fresh connection: a new login each time, as a new Element X
    // install starts.
    let mut first = Vec::new();
    for i in 0..5 {
        let device = c.login(&user).await?;
        let t = Instant::now();
        let v = sliding(c, &device, None, 0, &room_list(&format!("room-list{i}"))).await?;
        first.push(t.elapsed());
        let listed = v["rooms"].as_object().map_or(0, |m| m.len());
        if listed != 20.min(rooms) {
            return Err(format!("the first answer listed {listed} rooms, not 20"));
        }
    }
    out.insert(
        "16 sliding sync: first answer, range 20 (500 rooms at scale 1)",
        (percentile(&mut first, 0.5), "ms", false),
    );

    // Wake-up: a connection long-polling hears of a message sent in one of its rooms.
    let device = c.login(&user).await?;
    let body = room_list("wake");
    let mut pos = pos_of(&sliding(c, &device, None, 0, &body).await?)?;
    let mut wake = Vec::new();
    for i in 0..scaled(50, scale) {
        let (c2, d2, b2, p2) = (c.clone(), device.clone(), body.clone(), pos.clone());
        let waiting = tokio::spawn(async move {
            let v = sliding(&c2, &d2, Some(&p2), 30_000, &b2).await;
            (Instant::now(), v)
        });
        // Let the poll reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent_at = Instant::now();
        c.send(&other, &room, &format!("wake{i}")).await?;
        let (answered_at, v) = waiting.await.map_err(|e| e.to_string())?;
        let v = v?;
        if v["rooms"].get(&room).is_none() {
            return Err(format!("wake-up {i} answered without the room: {v}"));
        }
        pos = pos_of(&v)?;
        wake.push(answered_at.saturating_duration_since(sent_at));
    }
    out.insert(
        "17 sliding sync wake-up: p50",
        (percentile(&mut wake, 0.5), "ms", false),
    );
    out.insert(
        "18 sliding sync wake-up: p99",
        (percentile(&mut wake, 0.99), "ms", false),
    );

    // Idle polls: the connection asks again with nothing new, answered at once (timeout 0).
    // The server's own CPU only (its database's is not counted, for either server).
    if let Some(pid) = pid {
        let polls = scaled(1000, scale);
        let before = cpu_seconds(pid).ok_or("cannot read the server's CPU time")?;
        let start = Instant::now();
        for _ in 0..polls {
            let v = sliding(c, &device, Some(&pos), 0, &body).await?;
            pos = pos_of(&v)?;
        }
        let elapsed = start.elapsed();
        let after = cpu_seconds(pid).ok_or("cannot read the server's CPU time")?;
        out.insert(
            "19 sliding sync idle poll: server CPU each",
            ((after - before) / polls as f64 * 1e6, "µs", false),
        );
        out.insert(
            "20 sliding sync idle poll: latency (mean)",
            (elapsed.as_secs_f64() * 1000.0 / polls as f64, "ms", false),
        );
    }
    Ok(())
}

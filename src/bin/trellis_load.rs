//! `trellis-load`: the same client-API scenarios against one or more running homeservers
//! (Trellis, Synapse, ...) in one run, printed side by side with the ratio to the first.
//!
//! Every server needs open registration with the dummy flow (Synapse:
//! `enable_registration: true`, `enable_registration_without_verification: true`) and rate
//! limits out of the way. Users are created with fresh random names on each run.
//!
//! ```text
//! trellis-load --server trellis=http://127.0.0.1:8008 --server synapse=http://127.0.0.1:8118 \
//!              [--pid trellis=1234 --pid synapse=5678] [--scale 1.0]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

type Res<T> = Result<T, String>;

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

#[derive(Clone)]
struct User {
    token: String,
    user_id: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Res<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() || (status.as_u16() == 401 && v["session"].is_string()) {
            Ok(v)
        } else {
            Err(format!("{path}: {status} {v}"))
        }
    }

    async fn register(&self, name: &str) -> Res<User> {
        let body = json!({"username": name, "password": "load-test-password"});
        let first = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(&body),
            )
            .await?;
        let mut body = body;
        body["auth"] = json!({"type": "m.login.dummy", "session": first["session"]});
        let done = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(&body),
            )
            .await?;
        Ok(User {
            token: done["access_token"]
                .as_str()
                .ok_or("no access_token")?
                .to_owned(),
            user_id: done["user_id"].as_str().ok_or("no user_id")?.to_owned(),
        })
    }

    async fn create_room(&self, u: &User) -> Res<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&u.token),
                Some(&json!({"preset": "public_chat"})),
            )
            .await?;
        Ok(v["room_id"].as_str().ok_or("no room_id")?.to_owned())
    }

    async fn send(&self, u: &User, room: &str, txn: &str) -> Res<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        );
        self.call(
            reqwest::Method::PUT,
            &path,
            Some(&u.token),
            Some(&json!({"msgtype": "m.text", "body": txn})),
        )
        .await
        .map(|_| ())
    }

    async fn join(&self, u: &User, room: &str) -> Res<()> {
        let path = format!("/_matrix/client/v3/join/{}", enc(room));
        self.call(
            reqwest::Method::POST,
            &path,
            Some(&u.token),
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    async fn sync(&self, u: &User, query: &str) -> Res<Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/sync{query}"),
            Some(&u.token),
            None,
        )
        .await
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// One figure: its name, unit and whether bigger is better (for the ratio).
type Figures = BTreeMap<&'static str, (f64, &'static str, bool)>;

async fn run_all(c: &Client, scale: f64, tag: &str) -> Res<Figures> {
    let n = |base: usize| ((base as f64 * scale).round() as usize).max(1);
    let mut out = Figures::new();
    let alice = c.register(&format!("alice{tag}")).await?;
    let bob = c.register(&format!("bob{tag}")).await?;

    // Sequential sends.
    let room = c.create_room(&alice).await?;
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..n(200) {
        let t = Instant::now();
        c.send(&alice, &room, &format!("seq{i}")).await?;
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

    // Concurrent senders: 8 in one room, 8 in separate rooms.
    for (label, separate) in [
        ("04 send: events/s, 8 senders, one room", false),
        ("05 send: events/s, 8 senders, 8 rooms", true),
    ] {
        let mut rooms = Vec::new();
        for _ in 0..8 {
            rooms.push(if separate {
                c.create_room(&alice).await?
            } else {
                room.clone()
            });
        }
        let per = n(50);
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

    // Initial sync of a user in 50 rooms x 100 events.
    let syncer = c.register(&format!("carol{tag}")).await?;
    for r in 0..n(50) {
        let room = c.create_room(&syncer).await?;
        for i in 0..n(100) {
            c.send(&syncer, &room, &format!("r{r}e{i}")).await?;
        }
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        c.sync(&syncer, "").await?;
        times.push(t.elapsed());
    }
    out.insert(
        "06 initial sync, 50 rooms x 100 events",
        (percentile(&mut times, 0.5), "ms", false),
    );

    // Incremental sync wake-up: from the start of the send to the sync's answer.
    c.join(&bob, &room).await?;
    let mut since = c.sync(&bob, "?timeout=0").await?["next_batch"]
        .as_str()
        .ok_or("no next_batch")?
        .to_owned();
    let mut wake = Vec::new();
    for i in 0..n(50) {
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
        c.send(&alice, &room, &format!("wake{i}")).await?;
        let (answered_at, v) = waiting.await.map_err(|e| e.to_string())?;
        let v = v?;
        since = v["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
        wake.push(answered_at.saturating_duration_since(sent_at));
    }
    out.insert(
        "07 sync wake-up: p50",
        (percentile(&mut wake, 0.5), "ms", false),
    );
    out.insert(
        "08 sync wake-up: p99",
        (percentile(&mut wake, 0.99), "ms", false),
    );

    // /messages back-pagination over the send room.
    let mut pages = 0;
    let start = Instant::now();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
            enc(&room)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let v = c
            .call(reqwest::Method::GET, &path, Some(&alice.token), None)
            .await?;
        pages += 1;
        match v["end"].as_str() {
            Some(e) if pages < 500 => from = Some(e.to_owned()),
            _ => break,
        }
    }
    out.insert(
        "09 /messages: pages/s",
        (
            pages as f64 / start.elapsed().as_secs_f64(),
            "pages/s",
            true,
        ),
    );

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
        c.join(&u, &big).await?;
    }
    out.insert(
        "11 register + join one room: users/s",
        (
            joiners as f64 / start.elapsed().as_secs_f64(),
            "users/s",
            true,
        ),
    );
    let _ = alice.user_id;
    Ok(out)
}

fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() {
    let mut servers: Vec<(String, String)> = Vec::new();
    let mut pids: BTreeMap<String, String> = BTreeMap::new();
    let mut scale = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().unwrap_or_default();
        match a.as_str() {
            "--server" => match value.split_once('=') {
                Some((n, u)) => servers.push((n.to_owned(), u.trim_end_matches('/').to_owned())),
                None => return eprintln!("--server NAME=URL"),
            },
            "--pid" => match value.split_once('=') {
                Some((n, p)) => {
                    pids.insert(n.to_owned(), p.to_owned());
                }
                None => return eprintln!("--pid NAME=PID"),
            },
            "--scale" => match value.parse() {
                Ok(s) => scale = s,
                Err(_) => return eprintln!("--scale takes a number"),
            },
            _ => {
                return eprintln!(
                    "usage: trellis-load --server NAME=URL [...] [--pid NAME=PID] [--scale F]"
                );
            }
        }
    }
    if servers.is_empty() {
        return eprintln!(
            "usage: trellis-load --server NAME=URL [...] [--pid NAME=PID] [--scale F]"
        );
    }
    let tag = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
    {
        Ok(h) => h,
        Err(e) => return eprintln!("trellis-load: {e}"),
    };
    let mut results: Vec<(String, Figures)> = Vec::new();
    for (name, base) in &servers {
        eprintln!("running against {name} ({base})...");
        let client = Client {
            http: http.clone(),
            base: base.clone(),
        };
        match run_all(&client, scale, &tag).await {
            Ok(mut f) => {
                if let Some(rss) = pids.get(name).and_then(|p| rss_mib(p)) {
                    f.insert("12 server RSS after the run", (rss, "MiB", false));
                }
                results.push((name.clone(), f));
            }
            Err(e) => return eprintln!("trellis-load: {name}: {e}"),
        }
    }
    print!("{:<44}", "scenario");
    for (name, _) in &results {
        print!(" {name:>16}");
    }
    if results.len() > 1 {
        print!(" {:>10}", "ratio");
    }
    println!();
    let keys: Vec<&'static str> = results[0].1.keys().copied().collect();
    for key in keys {
        print!("{:<44}", &key[3..]);
        for (_, f) in &results {
            match f.get(key) {
                Some((v, unit, _)) => print!(" {:>16}", format!("{v:.1} {unit}")),
                None => print!(" {:>16}", "-"),
            }
        }
        if let (Some((a, _, bigger)), Some((b, _, _))) = (
            results[0].1.get(key),
            results.get(1).and_then(|r| r.1.get(key)),
        ) {
            let ratio = if *bigger { a / b } else { b / a };
            print!(" {:>9.1}x", ratio);
        }
        println!();
    }
}

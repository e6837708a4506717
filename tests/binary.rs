//! The `trellis` binary as an operator runs it: CLI, configuration errors, environment
//! overrides, the managed Postgres and clean shutdown on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// Spawn `cmd` (a `trellis serve` logging JSON to stdout, its client listener on port 0)
/// and read, from its log, the port it bound. The log is drained to its end by a thread of
/// its own, so the child never blocks on a full pipe.
fn spawn_listening(cmd: &mut Command) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let addr = v["fields"]["client_addr"]
                .as_str()
                .or(v["client_addr"].as_str());
            if let Some(port) = addr
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
            {
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(port) => (child, port),
        Err(_) => {
            let _ = child.kill();
            panic!("trellis did not log its listening address");
        }
    }
}

#[test]
fn version_and_generate_config() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    let out = Command::new(BIN).arg("generate-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, trellis::config::EXAMPLE);
    trellis::Config::from_sources(&text, Vec::new()).expect("generated config is valid");
}

#[test]
fn bad_config_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "server_name = \"bad name\"\n[listeners.client]\nport = \"eighty\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port"), "{err}");

    let out = Command::new(BIN)
        .arg("serve")
        .env("TRELLIS_SERVER_NAME", "not valid!")
        .env("TRELLIS_LISTENERS__CLIENT__ADDRESS", "somewhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server_name") && err.contains("listeners.client.address"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/trellis.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn postgres_processes_under(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().to_string();
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("postgres") && cmd.contains(&needle) {
                n += 1;
            }
        }
    }
    n
}

fn wait_until_up(port: u16, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("trellis exited early: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /_matrix/client/versions HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "trellis did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Poll `/health` until it answers 200 again; every answer on the way is 200 or 503.
async fn healthy_again(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    // The supervisor looks once a second: wait until it has seen the fault (a 503), unless
    // it was quicker than the first poll.
    loop {
        let status = http
            .get(format!("{base}/health"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert!(
            status == 200 || status == 503,
            "/health answered {status} while Postgres was down"
        );
        if status == 200 {
            let (login_status, body) = login(http, base).await;
            assert!(
                login_status == 200 || login_status == 503,
                "login answered {login_status} while Postgres was down: {body}"
            );
            if login_status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "Postgres did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn login(http: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let res = http
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&serde_json::json!({"type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "op"}, "password": "op-password"}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "trellis did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With no database URL the binary runs its own Postgres; SIGTERM stops both, and the data
/// (and the login) survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_postgres_serve_restart_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spawn = || {
        spawn_listening(
            Command::new(BIN)
                .arg("serve")
                .env("TRELLIS_SERVER_NAME", "managed.test")
                .env("TRELLIS_DATA_DIR", &data)
                .env("TRELLIS_LISTENERS__CLIENT__PORT", "0")
                .env("TRELLIS_LISTENERS__FEDERATION__ENABLED", "false")
                .env("TRELLIS_REGISTRATION__ENABLED", "true")
                .env("TRELLIS_REGISTRATION__OPEN_WITHOUT_VERIFICATION", "true")
                .env("TRELLIS_LOG__FORMAT", "json")
                .stderr(Stdio::null()),
        )
    };
    let http = reqwest::Client::new();

    let (mut child, port) = spawn();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(port, &mut child);
    assert!(
        postgres_processes_under(&data) > 0,
        "managed postgres runs under the data dir"
    );

    let first: serde_json::Value = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&serde_json::json!({"username": "op", "password": "op-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(
            &serde_json::json!({"username": "op", "password": "op-password",
            "auth": {"type": "m.login.dummy", "session": first["session"]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The managed Postgres is supervised: killed, or its socket removed, it is started
    // again, and meanwhile requests fail with 503, never 500.
    let pg_dir = data.join("postgres");
    let postmaster = std::fs::read_to_string(pg_dir.join("postmaster.pid")).unwrap();
    let pid: i32 = postmaster.lines().next().unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    healthy_again(&http, &base).await;
    // Connections already open outlive their socket file, new ones would all fail: the
    // supervisor starts Postgres again, and the socket comes back.
    let socket = pg_dir.join(".s.PGSQL.5432");
    std::fs::remove_file(&socket).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the socket did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    healthy_again(&http, &base).await;
    let (status, _) = login(&http, &base).await;
    assert_eq!(status, 200, "login works after Postgres came back");

    let status = sigterm_and_wait(&mut child);
    assert!(status.success(), "exit 0 on SIGTERM, got {status}");
    assert_eq!(
        postgres_processes_under(&data),
        0,
        "no postgres left behind"
    );

    // A new process binds a new port.
    let (mut child, port) = spawn();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(port, &mut child);
    let res = http
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&serde_json::json!({"type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "op"}, "password": "op-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login works after restart");
    let status = sigterm_and_wait(&mut child);
    assert!(status.success());
    assert_eq!(postgres_processes_under(&data), 0);
}

//! Start-up, listeners (plain or TLS) and graceful shutdown.
//!
//! Order at start: data directory → database (managed Postgres when no URL) → migrations →
//! signing key → listeners. At shutdown the reverse: stop accepting, let in-flight requests
//! finish (bounded), close the pool, stop the managed Postgres.

mod conn;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::config::{Config, LimitsConfig};
use crate::db::embedded::ManagedPostgres;
use crate::error::{Error, Result};
use crate::keys::ServerKeys;

/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started server; [`RunningServer::shutdown`] stops it cleanly.
pub struct RunningServer {
    pub client_addr: SocketAddr,
    /// `None` when federation is disabled or shares the client listener.
    pub federation_addr: Option<SocketAddr>,
    pub state: AppState,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
    /// The push sender, which stores where each pusher got to before it ends.
    push: tokio::task::JoinHandle<()>,
    /// The managed Postgres, watched by its supervisor until the stop.
    postgres: Option<tokio::task::JoinHandle<ManagedPostgres>>,
}

/// The database (managed Postgres started if configured), migrations, keys and the wired
/// application: everything but listeners and background senders.
async fn open(config: Config) -> Result<(AppState, Option<ManagedPostgres>)> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Error::internal(format!(
            "cannot create data_dir {}: {e}",
            config.data_dir.display()
        ))
    })?;

    let (postgres, url) = match &config.database.url {
        Some(url) => (None, url.clone()),
        None => {
            let pg = ManagedPostgres::start(&config.postgres_dir())
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
            let url = pg.url("trellis");
            (Some(pg), url)
        }
    };
    let db = crate::db::connect(&url, config.database.max_connections).await?;
    crate::db::migrate(&db).await?;

    let keys = Arc::new(ServerKeys::load_or_generate(
        &config.signing_key_path(),
        config.server_name(),
    )?);
    let stream_max = crate::db::events::max_stream_position(&db).await?;
    let state = AppState::new(config.clone(), db, keys, stream_max)?;
    Ok((state, postgres))
}

/// `trellis admin recover-room`: rebuild a room whose data was lost from another server in
/// it, then exit. Safe beside a running server on the same database.
pub async fn recover_room(config: Config, room_id: &str, via: &str) -> Result<()> {
    let room_id = ruma::OwnedRoomId::try_from(room_id)
        .map_err(|e| Error::invalid_param(format!("invalid room ID: {e}")))?;
    let via = ruma::OwnedServerName::try_from(via)
        .map_err(|e| Error::invalid_param(format!("invalid server name: {e}")))?;
    let (state, postgres) = open(config).await?;
    let result = state
        .federation
        .recover_room(&state.rooms, &room_id, &via)
        .await;
    state.rooms.close().await;
    state.db.close().await;
    // Stops Postgres only if this command started it; one a running server owns stays up.
    if let Some(pg) = postgres {
        pg.stop()
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
    }
    result
}

/// Listeners bound before the server starts, to serve on instead of binding the configured
/// addresses: whoever must know a port before the server runs (a server name that holds it)
/// binds it first and keeps it, so no other process can take it in between.
#[derive(Debug, Default)]
pub struct Bound {
    pub client: Option<std::net::TcpListener>,
    pub federation: Option<std::net::TcpListener>,
}

/// Start everything the configuration asks for and return once listeners are bound.
pub async fn start(config: Config) -> Result<RunningServer> {
    start_bound(config, Bound::default()).await
}

/// [`start`], serving on the listeners of `bound` where given.
pub async fn start_bound(config: Config, bound: Bound) -> Result<RunningServer> {
    let (state, postgres) = open(config).await?;
    state.rooms.open_connections().await;
    let config = state.config.clone();
    let app = crate::http::router(state.clone());

    let (stop, stop_rx) = watch::channel(false);
    let stop_rx_pg = stop_rx.clone();
    state
        .federation
        .sender
        .start(state.rooms.outbox_queued(), stop_rx.clone());
    let push = state.push.start(stop_rx.clone());
    crate::planner_stats::start(state.db.clone(), stop_rx.clone());
    let mut listeners = JoinSet::new();
    let client = &config.listeners.client;
    let limits = ConnectionLimits::of(&config.limits);
    let client_addr = bind_and_serve(
        &mut listeners,
        (&client.address, client.port, bound.client),
        tls_acceptor(
            client.tls_certificate.as_deref(),
            client.tls_private_key.as_deref(),
        )?,
        app.clone(),
        limits,
        stop_rx.clone(),
    )
    .await?;
    let fed = &config.listeners.federation;
    let shares_client = fed.address == client.address && fed.port == client.port;
    let federation_addr = if fed.enabled && !shares_client {
        Some(
            bind_and_serve(
                &mut listeners,
                (&fed.address, fed.port, bound.federation),
                tls_acceptor(
                    fed.tls_certificate.as_deref(),
                    fed.tls_private_key.as_deref(),
                )?,
                app,
                limits,
                stop_rx,
            )
            .await?,
        )
    } else {
        None
    };
    tracing::info!(
        server_name = %config.server_name,
        %client_addr,
        federation_addr = ?federation_addr,
        "Trellis is listening"
    );
    Ok(RunningServer {
        client_addr,
        federation_addr,
        state,
        stop,
        listeners,
        push,
        postgres: postgres.map(|pg| supervise(pg, stop_rx_pg)),
    })
}

impl RunningServer {
    /// Stop accepting, drain in-flight requests, close the database, stop managed Postgres.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
        if let Err(e) = (&mut self.push).await {
            tracing::warn!(error = %e, "the push sender ended abnormally");
        }
        self.state.rooms.close().await;
        self.state.db.close().await;
        if let Some(supervisor) = self.postgres.take() {
            let pg = supervisor
                .await
                .map_err(|e| Error::internal(format!("the Postgres supervisor failed: {e}")))?;
            pg.stop()
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        tracing::info!("Trellis stopped");
        Ok(())
    }
}

/// How often the supervisor looks at the managed Postgres.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to start a failed Postgres again.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

/// Watch the managed Postgres until `stop`, and start it again whenever it fails (its
/// postmaster exits, its socket vanishes), waiting longer after each failed attempt. While it
/// is down, requests fail fast with 503 (the pools cannot connect) and `/health` says so;
/// once it is back, the pools connect again. Hands the cluster back at the stop.
fn supervise(
    mut pg: ManagedPostgres,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<ManagedPostgres> {
    let span = tracing::info_span!("postgres_supervisor");
    tokio::spawn(
        async move {
            let mut backoff = SUPERVISE_EVERY;
            let mut wait = SUPERVISE_EVERY;
            loop {
                tokio::select! {
                    _ = stop.changed() => return pg,
                    () = tokio::time::sleep(wait) => {}
                }
                if *stop.borrow() {
                    return pg;
                }
                let fault = match pg.fault() {
                    Ok(None) => {
                        wait = SUPERVISE_EVERY;
                        backoff = SUPERVISE_EVERY;
                        continue;
                    }
                    Ok(Some(fault)) => fault,
                    Err(e) => e.to_string(),
                };
                tracing::error!(%fault, "managed Postgres failed; starting it again");
                match pg.restart().await {
                    Ok(()) => {
                        tracing::info!("managed Postgres started again");
                        wait = SUPERVISE_EVERY;
                        backoff = SUPERVISE_EVERY;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?backoff, "cannot start managed Postgres");
                        wait = backoff;
                        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
                    }
                }
            }
        }
        .instrument(span),
    )
}

/// Run until SIGTERM or SIGINT, then shut down cleanly.
pub async fn run(config: Config) -> Result<()> {
    let server = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutdown signal received");
    server.shutdown().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on ctrl-c only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn bind_and_serve(
    set: &mut JoinSet<()>,
    (address, port, bound): (&str, u16, Option<std::net::TcpListener>),
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let cannot =
        |e: std::io::Error| Error::internal(format!("cannot listen on {address}:{port}: {e}"));
    let listener = match bound {
        Some(l) => {
            l.set_nonblocking(true).map_err(cannot)?;
            TcpListener::from_std(l).map_err(cannot)?
        }
        None => TcpListener::bind((address, port)).await.map_err(cannot)?,
    };
    let addr = listener.local_addr()?;
    set.spawn(serve(listener, tls, app, limits, stop));
    Ok(addr)
}

/// What one connection may take of the server.
#[derive(Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client has to send a request's headers, and how long a kept-alive
    /// connection may sit idle.
    pub header_read_timeout: Duration,
    /// Most connections open at once from one address (0: no cap).
    pub per_ip: usize,
}

impl ConnectionLimits {
    pub fn of(limits: &LimitsConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
            per_ip: limits.max_connections_per_ip,
        }
    }
}

/// Accept connections until told to stop, then wait (bounded) for open connections.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper keeps no header read timeout: a client sending nothing (or
    // idling between requests) would hold its connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let open = Arc::new(conn::OpenConnections::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(counted) = open.admit(peer.ip(), limits.per_ip) else {
            tracing::info!(%peer, cap = limits.per_ip, "too many connections from one address; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = conn::Activity::new();
        let in_flight = activity.clone();
        let app = app
            .clone()
            .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            })
            // Counted from the call until its answer is produced (or abandoned); streaming
            // the answer's body moves bytes, which count as activity of their own.
            .map_future(move |answer| {
                let request = in_flight.begin();
                async move {
                    let answered = answer.await;
                    drop(request);
                    answered
                }
            });
        let service = TowerToHyperService::new(app);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _counted = counted;
            let idle = limits.header_read_timeout;
            let result = match tls {
                None => {
                    let io = conn::Watched::new(stream, activity.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        () = activity.idle(idle) => {
                            tracing::debug!(%peer, "idle connection closed");
                            return;
                        }
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let io = conn::Watched::new(tls_stream, activity.clone());
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                            tokio::select! {
                                r = watcher.watch(conn.into_owned()) => r,
                                () = activity.idle(idle) => {
                                    tracing::debug!(%peer, "idle connection closed");
                                    return;
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after the drain timeout; closing");
    }
}

/// Serve `app` on an already bound `listener` (TLS with the PEM files when given) until
/// `stop` turns true: the same serving loop for tools that stand up a Matrix peer of their
/// own, such as the load tool's scripted federation peer.
pub fn spawn_serving(
    listener: TcpListener,
    tls_pem: Option<(&Path, &Path)>,
    app: Router,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let tls = match tls_pem {
        Some((cert, key)) => tls_acceptor(Some(cert), Some(key))?,
        None => None,
    };
    let limits = ConnectionLimits::of(&LimitsConfig::default());
    Ok(tokio::spawn(serve(listener, tls, app, limits, stop)))
}

fn tls_acceptor(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| Error::internal(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::internal(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| Error::internal(format!("{}: {e}", key.display())))?
        .ok_or_else(|| Error::internal(format!("{}: no private key found", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::internal(format!("TLS certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

//! Start-up, listeners (plain or TLS) and graceful shutdown.
//!
//! Order at start: data directory → database (managed Postgres when no URL) → migrations →
//! signing key → listeners. At shutdown the reverse: stop accepting, let in-flight requests
//! finish (bounded), close the pool, stop the managed Postgres.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::AppState;
use crate::config::Config;
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
    postgres: Option<ManagedPostgres>,
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

/// Start everything the configuration asks for and return once listeners are bound.
pub async fn start(config: Config) -> Result<RunningServer> {
    let (state, postgres) = open(config).await?;
    state.rooms.open_connections().await;
    let config = state.config.clone();
    let app = crate::http::router(state.clone());

    let (stop, stop_rx) = watch::channel(false);
    state
        .federation
        .sender
        .start(state.rooms.outbox_queued(), stop_rx.clone());
    crate::planner_stats::start(state.db.clone(), stop_rx.clone());
    let mut listeners = JoinSet::new();
    let client = &config.listeners.client;
    let client_addr = bind_and_serve(
        &mut listeners,
        &client.address,
        client.port,
        tls_acceptor(
            client.tls_certificate.as_deref(),
            client.tls_private_key.as_deref(),
        )?,
        app.clone(),
        stop_rx.clone(),
    )
    .await?;
    let fed = &config.listeners.federation;
    let shares_client = fed.address == client.address && fed.port == client.port;
    let federation_addr = if fed.enabled && !shares_client {
        Some(
            bind_and_serve(
                &mut listeners,
                &fed.address,
                fed.port,
                tls_acceptor(
                    fed.tls_certificate.as_deref(),
                    fed.tls_private_key.as_deref(),
                )?,
                app,
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
        postgres,
    })
}

impl RunningServer {
    /// Stop accepting, drain in-flight requests, close the database, stop managed Postgres.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
        self.state.rooms.close().await;
        self.state.db.close().await;
        if let Some(pg) = self.postgres.take() {
            pg.stop()
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        tracing::info!("Trellis stopped");
        Ok(())
    }
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
    address: &str,
    port: u16,
    tls: Option<TlsAcceptor>,
    app: Router,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind((address, port))
        .await
        .map_err(|e| Error::internal(format!("cannot listen on {address}:{port}: {e}")))?;
    let addr = listener.local_addr()?;
    set.spawn(serve(listener, tls, app, stop));
    Ok(addr)
}

/// Accept connections until told to stop, then wait (bounded) for open connections.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let _ = stream.set_nodelay(true);
        let app = app
            .clone()
            .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let service = TowerToHyperService::new(app);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                            watcher.watch(conn.into_owned()).await
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
    Ok(tokio::spawn(serve(listener, tls, app, stop)))
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

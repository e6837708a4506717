//! The suite's users: each a matrix-rust-sdk `Client` with in-memory stores, logged in with
//! a password and synced by the SDK's `SyncService` (the room list and the encryption sync,
//! as Element X runs them).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use matrix_sdk::ruma::api::client::account::register::v3::Request as RegisterRequest;
use matrix_sdk::ruma::api::client::uiaa::{AuthData, Dummy};
use matrix_sdk::ruma::{OwnedServerName, OwnedUserId, ServerName};
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::{Client, ClientBuilder};
use matrix_sdk_ui::RoomListService;
use matrix_sdk_ui::sync_service::{State as SyncState, SyncService};

/// A logged-in user and the sync that keeps their client up to date.
pub struct User {
    pub client: Client,
    /// Shared, as the notification client takes it.
    pub sync: Arc<SyncService>,
    pub name: String,
}

impl User {
    pub fn id(&self) -> Result<OwnedUserId> {
        self.client
            .user_id()
            .map(ToOwned::to_owned)
            .context("the client has no session")
    }

    pub fn room_list(&self) -> Arc<RoomListService> {
        self.sync.room_list_service()
    }

    /// Stop syncing; the SDK's tasks end with it.
    pub async fn stop(&self) {
        self.sync.stop().await;
    }
}

/// A client builder for the server at `homeserver`, discovering simplified sliding sync
/// from `/versions` as Element X does.
fn builder() -> ClientBuilder {
    Client::builder()
        .user_agent("trellis-rust-sdk-suite")
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
}

/// A client that has not logged in, for the server at the URL `homeserver`.
pub async fn anonymous(homeserver: &str) -> Result<Client> {
    builder()
        .homeserver_url(homeserver)
        .build()
        .await
        .with_context(|| format!("building a client for {homeserver}"))
}

/// A client that finds the server's client API from its server name, through
/// `/.well-known/matrix/client` (over plain HTTP: the suite's servers speak no TLS to
/// clients).
pub async fn discovered(server_name: &ServerName) -> Result<Client> {
    builder()
        .insecure_server_name_no_tls(server_name)
        .build()
        .await
        .with_context(|| format!("discovering the homeserver of {server_name}"))
}

/// The `host:port` of a URL such as `http://127.0.0.1:8008`: the name under which a client
/// reaches the server, and asks it for its well-known file.
pub fn authority(url: &str) -> Result<OwnedServerName> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or(rest);
    ServerName::parse(host).with_context(|| format!("{url} does not name a host and port"))
}

/// Register `name` (user-interactive auth with the dummy stage) without logging in: the
/// users of the suite log in with their passwords afterwards, as people do.
pub async fn register(homeserver: &str, name: &str, password: &str) -> Result<()> {
    let client = anonymous(homeserver).await?;
    let auth = client.matrix_auth();
    let mut request = RegisterRequest::new();
    request.username = Some(name.to_owned());
    request.password = Some(password.to_owned());
    request.inhibit_login = true;
    let session = match auth.register(request.clone()).await {
        Ok(_) => return Ok(()),
        Err(e) => match e.as_uiaa_response() {
            Some(uiaa) => uiaa.session.clone(),
            None => return Err(e).with_context(|| format!("registering {name}")),
        },
    };
    let mut dummy = Dummy::new();
    dummy.session = session;
    request.auth = Some(AuthData::Dummy(dummy));
    auth.register(request)
        .await
        .with_context(|| format!("registering {name} with the dummy stage"))?;
    Ok(())
}

/// Log `name` in with their password on `client` and start the SDK's sync service.
pub async fn log_in(client: Client, name: &str, password: &str) -> Result<User> {
    client
        .matrix_auth()
        .login_username(name, password)
        .initial_device_display_name(&format!("{name}'s SDK device"))
        .await
        .with_context(|| format!("logging {name} in with a password"))?;
    let sync = SyncService::builder(client.clone())
        .build()
        .await
        .context("building the sync service")?;
    sync.start().await;
    if let SyncState::Error(e) = sync.state().get() {
        bail!("the sync service of {name} failed at once: {e:?}");
    }
    Ok(User {
        client,
        sync: Arc::new(sync),
        name: name.to_owned(),
    })
}

//! Server-to-server as a client: discovery, signed requests, remote keys, queries.
//! Never imports `http`.

pub mod backfill;
pub mod client;
pub mod discovery;
pub mod edus;
pub mod hierarchy;
pub mod hierarchy_remote;
pub mod inbound;
pub mod keys;
pub mod legacy_api;
pub mod membership;
pub mod pdu;
pub mod recovery;
pub mod sender;
pub mod share;
pub mod summary;
pub mod template;

use std::sync::Arc;

use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, UserId};
use sqlx::PgPool;

use crate::config::FederationConfig;
use crate::error::Result;
use crate::keys::ServerKeys;
use client::FederationClient;
use keys::RemoteKeys;

#[derive(Clone)]
pub struct Federation {
    pub client: Arc<FederationClient>,
    pub remote_keys: RemoteKeys,
    pub sender: Arc<sender::Sender>,
    hierarchy: Arc<hierarchy::HierarchyState>,
    db: PgPool,
    server_keys: Arc<ServerKeys>,
    max_missing_events: u64,
}

impl Federation {
    pub fn new(db: PgPool, config: &FederationConfig, keys: Arc<ServerKeys>) -> Result<Self> {
        let client = Arc::new(FederationClient::new(config, keys.clone())?);
        let notaries = config
            .trusted_key_servers
            .iter()
            .filter_map(|n| OwnedServerName::try_from(n.as_str()).ok())
            .collect();
        let sender = sender::Sender::new(
            db.clone(),
            client.clone(),
            keys.server_name().clone(),
            std::time::Duration::from_secs(config.max_retry_interval_secs),
            std::time::Duration::from_secs(config.queue_idle_check_secs.max(1)),
        );
        Ok(Federation {
            remote_keys: RemoteKeys::new(
                db.clone(),
                client.clone(),
                notaries,
                &config.denied_signing_keys,
            ),
            client,
            sender,
            hierarchy: Arc::new(hierarchy::HierarchyState::new(
                std::time::Duration::from_secs(config.hierarchy_cache_secs),
            )),
            db,
            server_keys: keys,
            max_missing_events: config.max_missing_events,
        })
    }

    /// A remote user's profile, asked of their server: (displayname, avatar_url).
    pub async fn remote_profile(&self, user: &UserId) -> Result<(Option<String>, Option<String>)> {
        let request = get_profile_information::v1::Request::new(user.to_owned());
        let response = self.client.send(user.server_name(), request).await?;
        let displayname = response
            .data
            .get("displayname")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let avatar_url = response
            .data
            .get("avatar_url")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok((displayname, avatar_url))
    }

    /// Ask `server` for device and cross-signing keys of its users (the `/keys/query` fan-out).
    pub async fn query_user_keys(
        &self,
        server: &ruma::ServerName,
        request: ruma::api::federation::keys::get_keys::v1::Request,
    ) -> Result<ruma::api::federation::keys::get_keys::v1::Response> {
        Ok(self.client.send(server, request).await?)
    }

    /// Claim one-time keys of `server`'s users (the `/keys/claim` fan-out).
    pub async fn claim_user_keys(
        &self,
        server: &ruma::ServerName,
        request: ruma::api::federation::keys::claim_keys::v1::Request,
    ) -> Result<ruma::api::federation::keys::claim_keys::v1::Response> {
        Ok(self.client.send(server, request).await?)
    }

    /// Resolve an alias of another server by asking that server.
    pub async fn remote_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let request = get_room_information::v1::Request::new(alias.to_owned());
        let response = self.client.send(alias.server_name(), request).await?;
        Ok((response.room_id, response.servers))
    }

    /// Another server's public room directory, filtered (POST form, which every server
    /// that federates implements).
    pub async fn remote_public_rooms(
        &self,
        server: &ruma::ServerName,
        limit: Option<ruma::UInt>,
        since: Option<&str>,
        filter: &ruma::directory::Filter,
        network: &ruma::directory::RoomNetwork,
    ) -> Result<crate::room::directory::PublicRoomsPage> {
        use ruma::api::federation::directory::get_public_rooms_filtered;
        let mut request = get_public_rooms_filtered::v1::Request::new();
        request.limit = limit;
        request.since = since.map(str::to_owned);
        request.filter = filter.clone();
        request.room_network = network.clone();
        let response = self.client.send(server, request).await?;
        Ok(crate::room::directory::PublicRoomsPage {
            chunk: response.chunk,
            next_batch: response.next_batch,
            prev_batch: response.prev_batch,
            total: response.total_room_count_estimate.map_or(0, u64::from),
        })
    }
}

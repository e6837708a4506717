//! Other servers' signing keys: fetched from the server itself, self-signature verified,
//! cached in Postgres until `valid_until_ts` (capped at seven days after fetching, as the
//! spec asks), refetched on expiry or on an unknown key ID.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ruma::api::federation::discovery::{
    ServerSigningKeys, get_remote_server_keys_batch, get_server_keys,
};
use ruma::serde::Base64;
use ruma::serde::base64::Standard;
use ruma::signatures::{PublicKeyMap, PublicKeySet};
use ruma::{CanonicalJsonObject, OwnedServerName, ServerName, ServerSigningKeyId};
use sqlx::PgPool;

use super::client::FederationClient;
use crate::account::now_ms;
use crate::db::{self, server_keys::KeyRow};
use crate::error::{Error, Result};

/// The longest we trust a fetched key without asking again.
const MAX_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Clone)]
pub struct RemoteKeys {
    db: PgPool,
    client: Arc<FederationClient>,
    notaries: Arc<Vec<OwnedServerName>>,
    /// Public keys never trusted (as stored: unpadded base64).
    denied: Arc<HashSet<String>>,
}

impl RemoteKeys {
    /// `denied`: public keys in base64 (padded or not) never to trust; entries that do not
    /// parse are left out (the config check reports them).
    pub fn new(
        db: PgPool,
        client: Arc<FederationClient>,
        notaries: Vec<OwnedServerName>,
        denied: &[String],
    ) -> Self {
        let denied = denied
            .iter()
            .filter_map(|k| Base64::<Standard, Vec<u8>>::parse(k).ok())
            .map(|k| k.encode())
            .collect();
        RemoteKeys {
            db,
            client,
            notaries: Arc::new(notaries),
            denied: Arc::new(denied),
        }
    }

    /// Whether a stored key may verify anything now: within its validity, not expired, not
    /// denied.
    fn usable(&self, k: &KeyRow, now: i64) -> bool {
        let ok = k.valid_until_ts >= now && k.expired_ts.is_none();
        if ok && self.denied.contains(&k.public_key) {
            tracing::warn!(key_id = %k.key_id, "a denied signing key was presented");
            return false;
        }
        ok
    }

    /// A key map holding `server`'s key `key_id`, valid now.
    pub async fn key_map(
        &self,
        server: &ServerName,
        key_id: &ServerSigningKeyId,
    ) -> Result<PublicKeyMap> {
        let now = now_ms();
        let usable = |rows: &[KeyRow]| {
            rows.iter()
                .find(|k| k.key_id == key_id.as_str() && self.usable(k, now))
                .cloned()
        };
        let mut found = usable(&db::server_keys::keys_of(&self.db, server.as_str()).await?);
        if found.is_none() {
            self.fetch(server).await?;
            found = usable(&db::server_keys::keys_of(&self.db, server.as_str()).await?);
        }
        let key =
            found.ok_or_else(|| Error::Upstream(format!("{server} has no valid key {key_id}")))?;
        let public = Base64::parse(&key.public_key)
            .map_err(|e| Error::internal(format!("stored key: {e}")))?;
        let mut set = PublicKeySet::new();
        set.insert(key.key_id, public);
        let mut map = PublicKeyMap::new();
        map.insert(server.to_string(), set);
        Ok(map)
    }

    /// One key map for many (server, key ID) pairs, fetched concurrently. Keys that cannot
    /// be had are left out: signatures made with them then fail to verify.
    pub async fn key_map_many(
        &self,
        wanted: &std::collections::BTreeSet<(OwnedServerName, ruma::OwnedServerSigningKeyId)>,
    ) -> PublicKeyMap {
        let results = futures::future::join_all(wanted.iter().cloned().map(|(server, key_id)| {
            let this = self.clone();
            async move {
                let result = this.key_map(&server, &key_id).await;
                (server, key_id, result)
            }
        }))
        .await;
        let mut map = PublicKeyMap::new();
        for (server, key_id, result) in results {
            match result {
                Ok(m) => {
                    for (s, set) in m {
                        map.entry(s).or_default().extend(set);
                    }
                }
                Err(e) => {
                    tracing::info!(%server, %key_id, error = %e, "signing key unavailable");
                }
            }
        }
        map
    }

    /// As a notary: `server`'s self-signed key response, valid until at least
    /// `min_valid_until` (fetched from it when our copy is too old), countersigned by us.
    pub async fn notarised(
        &self,
        server: &ServerName,
        min_valid_until: i64,
        ours: &crate::keys::ServerKeys,
    ) -> Result<Option<CanonicalJsonObject>> {
        if server == ours.server_name() {
            let raw = ours.signed_server_keys()?;
            let obj = serde_json::from_str(raw.json().get())
                .map_err(|e| Error::internal(e.to_string()))?;
            return Ok(Some(obj));
        }
        let mut stored =
            db::server_keys::response(&self.db, server.as_str(), min_valid_until).await?;
        if stored.is_none() {
            if let Err(e) = self.fetch(server).await {
                tracing::info!(%server, error = %e, "notary could not fetch keys");
                return Ok(None);
            }
            stored = db::server_keys::response(&self.db, server.as_str(), min_valid_until).await?;
        }
        let Some(json) = stored else { return Ok(None) };
        let mut obj: CanonicalJsonObject = serde_json::from_str(&json)
            .map_err(|e| Error::internal(format!("stored key response: {e}")))?;
        ours.sign_json(&mut obj)?;
        Ok(Some(obj))
    }

    /// Fetch `server`'s keys from it, or failing that from a trusted notary; verify, store.
    async fn fetch(&self, server: &ServerName) -> Result<()> {
        let direct = match self
            .client
            .send(server, get_server_keys::v2::Request::new())
            .await
        {
            Ok(response) => {
                self.store_verified(server, &response.server_key, None)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        let Err(direct_error) = direct else {
            return Ok(());
        };
        for notary in self
            .notaries
            .iter()
            .filter(|n| n.as_str() != server.as_str())
        {
            match self.fetch_via(notary, server).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::info!(%server, %notary, error = %e, "notary could not help"),
            }
        }
        Err(direct_error)
    }

    /// Ask `notary` for `server`'s keys; its answer must carry the notary's signature (checked
    /// with the notary's own key, fetched from the notary itself) as well as the origin's.
    async fn fetch_via(&self, notary: &ServerName, server: &ServerName) -> Result<()> {
        let notary_keys = self
            .client
            .send(notary, get_server_keys::v2::Request::new())
            .await?;
        self.store_verified(notary, &notary_keys.server_key, None)
            .await?;
        let notary_set = self.current_keys(notary).await?;
        let mut request = get_remote_server_keys_batch::v2::Request::new(BTreeMap::new());
        request
            .server_keys
            .insert(server.to_owned(), BTreeMap::new());
        let response = self.client.send(notary, request).await?;
        let mut stored = false;
        for raw in &response.server_keys {
            match self
                .store_verified(server, raw, Some((notary, &notary_set)))
                .await
            {
                Ok(()) => stored = true,
                Err(e) => tracing::info!(%server, %notary, error = %e, "notary answer refused"),
            }
        }
        if stored {
            Ok(())
        } else {
            Err(Error::Upstream(format!(
                "{notary} had no valid keys for {server}"
            )))
        }
    }

    async fn current_keys(&self, server: &ServerName) -> Result<PublicKeySet> {
        let now = now_ms();
        let mut set = PublicKeySet::new();
        for k in db::server_keys::keys_of(&self.db, server.as_str()).await? {
            if self.usable(&k, now) {
                let key = Base64::parse(&k.public_key)
                    .map_err(|e| Error::internal(format!("stored key: {e}")))?;
                set.insert(k.key_id, key);
            }
        }
        Ok(set)
    }

    /// Verify a key response (self-signed, and countersigned by `notary` when given) and store
    /// its keys and the response itself.
    async fn store_verified(
        &self,
        server: &ServerName,
        raw: &ruma::serde::Raw<ServerSigningKeys>,
        notary: Option<(&ServerName, &PublicKeySet)>,
    ) -> Result<()> {
        let object: CanonicalJsonObject = serde_json::from_str(raw.json().get())
            .map_err(|e| Error::Upstream(format!("{server} key response: {e}")))?;
        let keys: ServerSigningKeys = raw
            .deserialize()
            .map_err(|e| Error::Upstream(format!("{server} key response: {e}")))?;
        if keys.server_name != server {
            return Err(Error::Upstream(format!(
                "{server} answered with keys of {}",
                keys.server_name
            )));
        }
        // Self-signed by the keys it publishes.
        let mut set = PublicKeySet::new();
        for (id, k) in &keys.verify_keys {
            set.insert(id.to_string(), k.key.clone());
        }
        let mut map = PublicKeyMap::new();
        map.insert(server.to_string(), set);
        if let Some((notary, notary_set)) = notary {
            map.insert(notary.to_string(), notary_set.clone());
        }
        ruma::signatures::verify_json(&map, &object)
            .map_err(|e| Error::Upstream(format!("{server} keys are not self-signed: {e}")))?;

        let now = now_ms();
        let valid_until = i64::try_from(u64::from(keys.valid_until_ts.0))
            .unwrap_or(i64::MAX)
            .min(now + MAX_VALIDITY_MS);
        for (id, k) in &keys.verify_keys {
            let row = KeyRow {
                key_id: id.to_string(),
                public_key: k.key.encode(),
                valid_until_ts: valid_until,
                expired_ts: None,
            };
            db::server_keys::upsert(&self.db, server.as_str(), &row, now).await?;
        }
        for (id, k) in &keys.old_verify_keys {
            let row = KeyRow {
                key_id: id.to_string(),
                public_key: k.key.encode(),
                valid_until_ts: i64::try_from(u64::from(k.expired_ts.0)).unwrap_or(0),
                expired_ts: Some(i64::try_from(u64::from(k.expired_ts.0)).unwrap_or(0)),
            };
            db::server_keys::upsert(&self.db, server.as_str(), &row, now).await?;
        }
        let json = serde_json::to_string(&object).map_err(|e| Error::internal(e.to_string()))?;
        db::server_keys::store_response(&self.db, server.as_str(), &json, valid_until, now).await?;
        tracing::info!(%server, keys = keys.verify_keys.len(), "fetched server keys");
        Ok(())
    }
}

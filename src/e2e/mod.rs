//! End-to-end encryption plumbing: the server stores and routes keys and to-device messages
//! and keeps room key backups; it never reads what is encrypted.
//!
//! Domain code: ruma types and our [`Error`], no HTTP. Every change of a user's keys bumps
//! the device-list stream, and every change a syncing client must see wakes /sync.
//!
//! Across servers: [`remote`] asks other servers for their users' keys (the network leg is
//! handed in by the caller), [`federation`] answers other servers and handles the EDUs of
//! device lists and to-device messages, and [`share`] tells other servers of our users'
//! changes.

pub mod backup;
pub mod federation;
pub mod remote;
pub mod share;

use std::collections::{BTreeMap, HashMap};

use ruma::api::client::keys::{claim_keys, get_keys, upload_signatures};
use ruma::api::client::to_device::send_event_to_device;
use ruma::api::federation::transactions::edu::DirectDeviceContent;
use ruma::encryption::{CrossSigningKey, DeviceKeys, OneTimeKey};
use ruma::events::ToDeviceEventType;
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId,
    TransactionId, UInt, UserId,
};
use serde_json::{Map, Value};
use sqlx::PgPool;

use crate::account::{AuthedUser, now_ms};
use crate::db::{self, e2e::SignatureRow};
use crate::error::{Error, Result};
use crate::notify::{Kinds, SyncNotifier};
use crate::sync::e2e::{counts, user_ids};
use crate::sync::token::SyncToken;

#[derive(Clone)]
pub struct E2e {
    db: PgPool,
    server_name: OwnedServerName,
    notifier: SyncNotifier,
}

/// What `/keys/upload` carries.
pub struct KeyUpload<'a> {
    pub device_keys: Option<&'a Raw<DeviceKeys>>,
    pub one_time_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    pub fallback_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// What `/keys/upload` did.
pub struct KeysUploaded {
    /// Unclaimed one-time keys of the device, per algorithm.
    pub counts: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    /// The device's identity keys are new or changed: other servers sharing a room with the
    /// user are owed an m.device_list_update ([`E2e::device_list_update_edu`]).
    pub device_keys_changed: bool,
}

/// To-device messages for users of other servers, one EDU per destination, each with a
/// fresh message_id; for the outbound federation queue.
pub type RemoteToDevice = BTreeMap<OwnedServerName, DirectDeviceContent>;

/// The three cross-signing keys of `/keys/device_signing/upload`, each optional.
pub struct SigningKeys<'a> {
    pub master: Option<&'a Raw<CrossSigningKey>>,
    pub self_signing: Option<&'a Raw<CrossSigningKey>>,
    pub user_signing: Option<&'a Raw<CrossSigningKey>>,
}

impl E2e {
    /// Whether uploading `keys` needs user-interactive auth: not for a user's first
    /// cross-signing keys (no master key yet), nor for a repeat of the keys already stored
    /// (a client retrying), as MSC3967 (spec 1.11) has it; for any replacement, yes.
    pub async fn signing_upload_needs_auth(
        &self,
        user: &UserId,
        keys: &SigningKeys<'_>,
    ) -> Result<bool> {
        let stored = db::e2e::cross_signing_keys(&self.db, &[user.to_string()]).await?;
        if !stored.iter().any(|r| r.key_type == "master") {
            return Ok(false);
        }
        let same = |kind: &str, new: Option<&Raw<CrossSigningKey>>| {
            new.is_none_or(|new| {
                let new: Option<Value> = serde_json::from_str(new.json().get()).ok();
                stored.iter().any(|r| {
                    r.key_type == kind
                        && new.is_some()
                        && serde_json::from_str::<Value>(&r.key_json).ok() == new
                })
            })
        };
        Ok(!(same("master", keys.master)
            && same("self_signing", keys.self_signing)
            && same("user_signing", keys.user_signing)))
    }

    pub fn new(db: PgPool, server_name: OwnedServerName, notifier: SyncNotifier) -> Self {
        E2e {
            db,
            server_name,
            notifier,
        }
    }

    pub fn notifier(&self) -> &SyncNotifier {
        &self.notifier
    }

    /// Wake the syncs of `user` and of everyone sharing a room with them: their keys changed.
    pub(crate) fn keys_changed(&self, user: &UserId) {
        self.notifier
            .publish_to_co_members(&self.db, user, Kinds::DEVICE_LISTS);
    }

    /// Wake the syncs of the devices messages were queued for (`None`: all of the user's),
    /// given as the parallel arrays they were queued from.
    pub(crate) fn to_device_queued(&self, users: &[String], devices: &[Option<String>]) {
        for (user, device) in users.iter().zip(devices) {
            if let Ok(user) = <&UserId>::try_from(user.as_str()) {
                let device = device.as_deref().map(<&ruma::DeviceId>::from);
                self.notifier.publish_to_device(user, device);
            }
        }
    }

    fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    /// Store a device's identity, one-time and fallback keys; answer its one-time key counts.
    pub async fn upload_keys(
        &self,
        user: &AuthedUser,
        upload: KeyUpload<'_>,
    ) -> Result<KeysUploaded> {
        let (uid, did) = (user.user_id.as_str(), user.device_id.as_str());
        let device_keys = match upload.device_keys {
            Some(raw) => {
                let keys: DeviceKeys = raw
                    .deserialize()
                    .map_err(|e| Error::bad_json(format!("Invalid device_keys: {e}")))?;
                if keys.user_id != user.user_id || keys.device_id != user.device_id {
                    return Err(Error::invalid_param(
                        "device_keys must be for the calling user and device",
                    ));
                }
                Some(raw.json().get())
            }
            None => None,
        };
        let (ota, otk, otj) = split_keys(upload.one_time_keys.iter());
        // One fallback key per algorithm: the last one named wins.
        let fallback: BTreeMap<OneTimeKeyAlgorithm, (&OwnedOneTimeKeyId, &Raw<OneTimeKey>)> =
            upload
                .fallback_keys
                .iter()
                .map(|(id, k)| (id.algorithm(), (id, k)))
                .collect();
        let (fba, fbk, fbj) = split_keys(fallback.into_values());

        let mut tx = db::begin(&self.db).await?;
        let mut changed = false;
        if let Some(json) = device_keys {
            db::e2e::lock_stream(&mut *tx, db::e2e::DEVICE_LIST_LOCK).await?;
            if db::e2e::upsert_device_keys(&mut *tx, uid, did, json).await? {
                db::e2e::mark_device_lists_changed(&mut *tx, &[uid.to_owned()]).await?;
                changed = true;
            }
        }
        if !ota.is_empty() {
            db::e2e::insert_one_time_keys(&mut *tx, uid, did, &ota, &otk, &otj).await?;
        }
        if !fba.is_empty() {
            db::e2e::upsert_fallback_keys(&mut *tx, uid, did, &fba, &fbk, &fbj).await?;
        }
        let counts = counts(db::e2e::one_time_key_counts(&mut *tx, uid, did).await?);
        tx.commit().await?;
        if changed {
            self.keys_changed(user.user_id.as_ref());
        }
        Ok(KeysUploaded {
            counts,
            device_keys_changed: changed,
        })
    }

    /// Device and cross-signing keys of the local users in `wanted`; other users are left
    /// out. `viewer` is the local user asking, the only one who sees their own user-signing
    /// key; `None` when another server asks.
    async fn local_keys(
        &self,
        viewer: Option<&UserId>,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<get_keys::v3::Response> {
        let mut out = get_keys::v3::Response::new();
        let mut users = Vec::new();
        let mut devices = Vec::new();
        for (user, devs) in wanted {
            if !self.is_local(user) {
                continue;
            }
            if devs.is_empty() {
                users.push(user.to_string());
                devices.push(None);
            }
            for d in devs {
                users.push(user.to_string());
                devices.push(Some(d.to_string()));
            }
        }
        if users.is_empty() {
            return Ok(out);
        }
        let rows = db::e2e::device_keys(&self.db, &users, &devices).await?;
        // Every local user asked about is answered, with no devices when they have none
        // (as Synapse does): clients tell "no keys" from "not asked" by the entry.
        for user in wanted.keys().filter(|u| self.is_local(u)) {
            out.device_keys.entry(user.clone()).or_default();
        }
        let local: Vec<String> = wanted
            .keys()
            .filter(|u| self.is_local(u))
            .map(ToString::to_string)
            .collect();
        let cross = db::e2e::cross_signing_keys(&self.db, &local).await?;
        let sigs = db::e2e::signatures_on(&self.db, &local).await?;
        let mut sigs_by_target: HashMap<(&str, &str), Vec<&SignatureRow>> = HashMap::new();
        for s in &sigs {
            sigs_by_target
                .entry((s.target_user_id.as_str(), s.target_key_id.as_str()))
                .or_default()
                .push(s);
        }
        let no_sigs = Vec::new();

        for row in rows {
            let Ok(user) = OwnedUserId::try_from(row.user_id.as_str()) else {
                continue;
            };
            let found = sigs_by_target
                .get(&(row.user_id.as_str(), row.device_id.as_str()))
                .unwrap_or(&no_sigs);
            let mut json = with_signatures(&row.key_json, found)?;
            let unsigned = json
                .entry("unsigned")
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Value::Object(u), Some(name)) = (unsigned, row.display_name) {
                u.insert("device_display_name".to_owned(), Value::String(name));
            }
            out.device_keys
                .entry(user)
                .or_default()
                .insert(row.device_id.into(), to_raw(&json)?);
        }
        for row in cross {
            let Ok(user) = OwnedUserId::try_from(row.user_id.as_str()) else {
                continue;
            };
            // The user-signing key says whom the user trusts: only its owner sees it.
            if row.key_type == "user_signing" && viewer != Some(&*user) {
                continue;
            }
            let found = sigs_by_target
                .get(&(row.user_id.as_str(), row.key_id.as_str()))
                .unwrap_or(&no_sigs);
            let raw = to_raw(&with_signatures(&row.key_json, found)?)?;
            match row.key_type.as_str() {
                "master" => out.master_keys.insert(user, raw),
                "self_signing" => out.self_signing_keys.insert(user, raw),
                _ => out.user_signing_keys.insert(user, raw),
            };
        }
        Ok(out)
    }

    /// Hand out one key per requested device and algorithm of a local user: a one-time key,
    /// which is deleted, or else the device's fallback key, which stays. Other users are left
    /// out.
    async fn local_claim(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<claim_keys::v3::Response> {
        let (mut users, mut devices, mut algorithms) = (Vec::new(), Vec::new(), Vec::new());
        for (user, devs) in wanted {
            if !self.is_local(user) {
                continue;
            }
            for (d, a) in devs {
                users.push(user.to_string());
                devices.push(d.to_string());
                algorithms.push(a.to_string());
            }
        }
        if users.is_empty() {
            return Ok(claim_keys::v3::Response::new(BTreeMap::new()));
        }
        let mut tx = db::begin(&self.db).await?;
        let mut claimed =
            db::e2e::claim_one_time_keys(&mut *tx, &users, &devices, &algorithms).await?;
        // Devices that had no one-time key left get their fallback key.
        let mut rest = (Vec::new(), Vec::new(), Vec::new());
        for ((u, d), a) in users.iter().zip(&devices).zip(&algorithms) {
            if !claimed.iter().any(|c| &c.user_id == u && &c.device_id == d) {
                rest.0.push(u.clone());
                rest.1.push(d.clone());
                rest.2.push(a.clone());
            }
        }
        if !rest.0.is_empty() {
            claimed
                .extend(db::e2e::claim_fallback_keys(&mut *tx, &rest.0, &rest.1, &rest.2).await?);
        }
        tx.commit().await?;

        let mut keys: BTreeMap<OwnedUserId, claim_keys::v3::OneTimeKeys> = BTreeMap::new();
        for c in claimed {
            let (Ok(user), Ok(key_id)) = (
                OwnedUserId::try_from(c.user_id.as_str()),
                OwnedOneTimeKeyId::try_from(c.key_id.as_str()),
            ) else {
                continue;
            };
            let raw = serde_json::value::RawValue::from_string(c.key_json)
                .map_err(|e| Error::internal(format!("stored key JSON: {e}")))?;
            keys.entry(user)
                .or_default()
                .entry(c.device_id.into())
                .or_default()
                .insert(key_id, Raw::from_json(raw));
        }
        Ok(claim_keys::v3::Response::new(keys))
    }

    /// Users whose keys the caller must re-fetch between two sync positions, and users who
    /// no longer share a room with the caller.
    pub async fn key_changes(
        &self,
        user: &UserId,
        from: SyncToken,
        to: SyncToken,
    ) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let uid = user.as_str();
        let changed = db::e2e::changed_users(
            &self.db,
            uid,
            from.device_lists,
            to.device_lists,
            from.events,
            to.events,
        )
        .await?;
        let left = db::e2e::left_users(&self.db, uid, from.events, to.events).await?;
        Ok((user_ids(changed), user_ids(left)))
    }

    /// Store the caller's cross-signing keys (the caller has passed user-interactive auth).
    pub async fn upload_signing_keys(&self, user: &UserId, keys: SigningKeys<'_>) -> Result<()> {
        let (mut types, mut ids, mut jsons) = (Vec::new(), Vec::new(), Vec::new());
        for (kind, raw) in [
            ("master", keys.master),
            ("self_signing", keys.self_signing),
            ("user_signing", keys.user_signing),
        ] {
            let Some(raw) = raw else { continue };
            let key: CrossSigningKey = raw
                .deserialize()
                .map_err(|e| Error::bad_json(format!("Invalid {kind} key: {e}")))?;
            if key.user_id != user {
                return Err(Error::invalid_param(format!(
                    "The {kind} key must belong to the calling user"
                )));
            }
            let mut names = key.keys.keys();
            let (Some(id), None) = (names.next(), names.next()) else {
                return Err(Error::invalid_param(format!(
                    "The {kind} key must hold exactly one public key"
                )));
            };
            types.push(kind.to_owned());
            ids.push(id.key_name().as_str().to_owned());
            jsons.push(raw.json().get().to_owned());
        }
        if types.is_empty() {
            return Ok(());
        }
        let mut tx = db::begin(&self.db).await?;
        db::e2e::lock_stream(&mut *tx, db::e2e::DEVICE_LIST_LOCK).await?;
        db::e2e::upsert_cross_signing_keys(&mut *tx, user.as_str(), &types, &ids, &jsons).await?;
        db::e2e::mark_device_lists_changed(&mut *tx, &[user.to_string()]).await?;
        tx.commit().await?;
        self.keys_changed(user);
        Ok(())
    }

    /// Store the caller's signatures on keys (own devices, own master key, others' master
    /// keys). Only signatures made by the caller are taken; others' are ignored.
    pub async fn upload_signatures(
        &self,
        user: &UserId,
        signed: &BTreeMap<OwnedUserId, upload_signatures::v3::SignedKeys>,
    ) -> Result<()> {
        let mut rows = Vec::new();
        for (target, keys) in signed {
            for (key_id, json) in keys.iter() {
                let value: Value = serde_json::from_str(json.get())
                    .map_err(|e| Error::bad_json(format!("Invalid signed key: {e}")))?;
                let Some(Value::Object(mine)) =
                    value.get("signatures").and_then(|s| s.get(user.as_str()))
                else {
                    continue;
                };
                for (signer_key_id, sig) in mine {
                    let Some(sig) = sig.as_str() else { continue };
                    rows.push(SignatureRow {
                        target_user_id: target.to_string(),
                        target_key_id: key_id.to_owned(),
                        signer_user_id: user.to_string(),
                        signer_key_id: signer_key_id.clone(),
                        signature: sig.to_owned(),
                    });
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        // A signature changes how the caller's keys look to everyone who shares a room with
        // them (and, for signatures on others' keys, to the caller's own devices).
        let mut tx = db::begin(&self.db).await?;
        db::e2e::lock_stream(&mut *tx, db::e2e::DEVICE_LIST_LOCK).await?;
        db::e2e::insert_signatures(&mut *tx, &rows).await?;
        db::e2e::mark_device_lists_changed(&mut *tx, &[user.to_string()]).await?;
        tx.commit().await?;
        self.keys_changed(user);
        Ok(())
    }

    /// Queue a to-device message for each local target device, once per sender device and
    /// transaction ID. Messages for users of other servers come back grouped by destination,
    /// for the caller to hand to the outbound federation queue; a retried transaction
    /// returns none, so they are queued once.
    pub async fn send_to_device(
        &self,
        sender: &AuthedUser,
        event_type: &ToDeviceEventType,
        txn_id: &str,
        messages: &send_event_to_device::v3::Messages,
    ) -> Result<RemoteToDevice> {
        let (mut users, mut devices, mut contents) = (Vec::new(), Vec::new(), Vec::new());
        let mut remote = RemoteToDevice::new();
        for (user, targets) in messages {
            if !self.is_local(user) {
                remote
                    .entry(user.server_name().to_owned())
                    .or_insert_with(|| {
                        DirectDeviceContent::new(
                            sender.user_id.clone(),
                            event_type.clone(),
                            TransactionId::new(),
                        )
                    })
                    .messages
                    .insert(user.clone(), targets.clone());
                continue;
            }
            for (target, content) in targets {
                users.push(user.to_string());
                devices.push(match target {
                    DeviceIdOrAllDevices::DeviceId(d) => Some(d.to_string()),
                    DeviceIdOrAllDevices::AllDevices => None,
                });
                contents.push(content.json().get().to_owned());
            }
        }
        let mut tx = db::begin(&self.db).await?;
        let fresh = db::e2e::insert_to_device_txn(
            &mut *tx,
            sender.user_id.as_str(),
            sender.device_id.as_str(),
            txn_id,
            now_ms(),
        )
        .await?;
        if !fresh {
            return Ok(RemoteToDevice::new());
        }
        if !users.is_empty() {
            db::e2e::lock_stream(&mut *tx, db::e2e::TO_DEVICE_LOCK).await?;
            db::e2e::insert_to_device(
                &mut *tx,
                sender.user_id.as_str(),
                &event_type.to_string(),
                &users,
                &devices,
                &contents,
            )
            .await?;
        }
        tx.commit().await?;
        self.to_device_queued(&users, &devices);
        Ok(remote)
    }
}

/// Parallel (algorithm, key ID, JSON) arrays for the key tables.
fn split_keys<'a>(
    keys: impl Iterator<Item = (&'a OwnedOneTimeKeyId, &'a Raw<OneTimeKey>)>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut a, mut k, mut j) = (Vec::new(), Vec::new(), Vec::new());
    for (id, key) in keys {
        a.push(id.algorithm().to_string());
        k.push(id.to_string());
        j.push(key.json().get().to_owned());
    }
    (a, k, j)
}

/// The stored key object with uploaded signatures merged into its `signatures`.
fn with_signatures(json: &str, sigs: &[&SignatureRow]) -> Result<Map<String, Value>> {
    let mut obj: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| Error::internal(format!("stored key JSON: {e}")))?;
    if sigs.is_empty() {
        return Ok(obj);
    }
    let all = obj
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(all) = all {
        for s in sigs {
            if let Value::Object(by_signer) = all
                .entry(s.signer_user_id.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                by_signer.insert(s.signer_key_id.clone(), Value::String(s.signature.clone()));
            }
        }
    }
    Ok(obj)
}

fn to_raw<T>(obj: &Map<String, Value>) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(obj)
        .map(Raw::from_json)
        .map_err(|e| Error::internal(format!("key JSON: {e}")))
}

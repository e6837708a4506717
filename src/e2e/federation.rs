//! End-to-end encryption between servers: what other servers ask of us about our users
//! (`/user/devices`, `/user/keys/query`, `/user/keys/claim`), and the EDUs that carry device
//! lists and to-device messages, both ways.
//!
//! Inbound EDUs: the transaction (`/send`) code hands each one here with the origin server
//! that signed the transaction, and gets an [`EduOutcome`]; an `Err` is our own failure
//! (database), never the EDU's fault, and should not fail the rest of the transaction.
//!
//! We keep no copy of remote users' device lists: `/keys/query` always asks the user's server
//! ([`super::remote`]). So an inbound device-list or signing-key update only has to tell our
//! users' clients to query again, through the same device-list stream local changes use
//! (`/sync` `device_lists.changed`, `/keys/changes`). The `prev_id` chain of inbound updates
//! therefore needs no checking; their `stream_id` only lets us drop repeats.
//!
//! Outbound EDUs are built here ([`E2e::device_list_update_edu`],
//! [`E2e::signing_key_update_edu`], [`E2e::device_list_destinations`], and the
//! `m.direct_to_device` contents that [`E2e::send_to_device`] returns) and queued by
//! `share`.

use std::collections::BTreeMap;

use ruma::api::federation::device::get_devices::v1::{self as get_devices, UserDevice};
use ruma::api::federation::keys::{claim_keys as fed_claim_keys, get_keys as fed_get_keys};
use ruma::api::federation::transactions::edu::{
    DeviceListUpdateContent, DirectDeviceContent, SigningKeyUpdateContent,
};
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{DeviceId, OwnedServerName, ServerName, UInt, UserId};

use super::E2e;
use super::remote::{KeyClaims, KeyQuery};
use crate::account::now_ms;
use crate::db;
use crate::error::{Error, Result};

/// What became of an inbound EDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EduOutcome {
    /// Acted on: a device-list change recorded, or messages queued for local devices.
    Applied,
    /// Already seen (a retried transaction) or older than what we know: nothing to do.
    Repeat,
    /// Not acceptable from this origin, or about nobody here: dropped.
    Ignored,
}

fn uint(n: i64) -> UInt {
    UInt::try_from(n).unwrap_or_default()
}

impl E2e {
    /// `GET /user/devices/{userId}` for a local user: every device with keys (and its display
    /// name), the master and self-signing keys, and the list's version (`stream_id`), which
    /// the next m.device_list_update names in `prev_id`.
    pub async fn user_devices(&self, user: &UserId) -> Result<get_devices::Response> {
        if !self.is_local(user) {
            // As Synapse answers: 400, the user is not ours to describe.
            return Err(Error::invalid_param("User is not hosted on this server"));
        }
        // Read the version first: a change racing with this read then comes with a newer
        // stream_id, which the asking server applies on top of what it got here.
        let stream_id = db::e2e::outbound_device_list(&self.db, user.as_str()).await?;
        let names: BTreeMap<String, Option<String>> = db::devices::list(&self.db, user.as_str())
            .await?
            .into_iter()
            .map(|d| (d.device_id, d.display_name))
            .collect();
        let mut keys = self
            .local_keys(None, &[(user.to_owned(), Vec::new())].into())
            .await?;
        let mut out = get_devices::Response::new(user.to_owned(), uint(stream_id));
        for (device_id, raw) in keys.device_keys.remove(user).unwrap_or_default() {
            let name = names.get(device_id.as_str()).cloned().flatten();
            let mut device = UserDevice::new(device_id, raw);
            device.device_display_name = name;
            out.devices.push(device);
        }
        out.master_key = keys.master_keys.remove(user);
        out.self_signing_key = keys.self_signing_keys.remove(user);
        Ok(out)
    }

    /// `POST /user/keys/query` from another server: keys of our users; users of other servers
    /// are left out. User-signing keys never leave the server.
    pub async fn federation_query_keys(
        &self,
        wanted: &KeyQuery,
    ) -> Result<fed_get_keys::v1::Response> {
        let local = self.local_keys(None, wanted).await?;
        let mut out = fed_get_keys::v1::Response::new(local.device_keys);
        out.master_keys = local.master_keys;
        out.self_signing_keys = local.self_signing_keys;
        Ok(out)
    }

    /// `POST /user/keys/claim` from another server: one-time (or fallback) keys of our users;
    /// users of other servers are left out.
    pub async fn federation_claim_keys(
        &self,
        wanted: &KeyClaims,
    ) -> Result<fed_claim_keys::v1::Response> {
        let local = self.local_claim(wanted).await?;
        Ok(fed_claim_keys::v1::Response::new(local.one_time_keys))
    }

    /// Inbound `m.device_list_update`: a remote user's devices changed, so our users who share
    /// a room with them must query their keys again.
    ///
    /// 1. The origin speaks only for its own users.
    /// 2. Only users who share a room with one of ours matter (as Synapse does); anything
    ///    else would let any server fill our device-list stream.
    /// 3. An update whose stream_id is not above the last one we took is a repeat.
    /// 4. Record the change in the device-list stream and wake /sync.
    pub async fn receive_device_list_update(
        &self,
        origin: &ServerName,
        update: &DeviceListUpdateContent,
    ) -> Result<EduOutcome> {
        let stream_id = i64::try_from(u64::from(update.stream_id)).unwrap_or(i64::MAX);
        self.remote_keys_changed(origin, &update.user_id, Some(stream_id))
            .await
    }

    /// Inbound `m.signing_key_update`: a remote user's cross-signing keys changed. The same
    /// effect as a device-list update; the keys themselves are fetched on the next query.
    pub async fn receive_signing_key_update(
        &self,
        origin: &ServerName,
        update: &SigningKeyUpdateContent,
    ) -> Result<EduOutcome> {
        let owned_by_user = |raw: &Option<ruma::serde::Raw<ruma::encryption::CrossSigningKey>>| {
            raw.as_ref().is_none_or(|k| {
                k.get_field::<ruma::OwnedUserId>("user_id")
                    .is_ok_and(|u| u.as_ref() == Some(&update.user_id))
            })
        };
        if !owned_by_user(&update.master_key) || !owned_by_user(&update.self_signing_key) {
            tracing::debug!(%origin, user = %update.user_id, "signing key update with keys of another user");
            return Ok(EduOutcome::Ignored);
        }
        self.remote_keys_changed(origin, &update.user_id, None)
            .await
    }

    /// Steps 1–4 of [`Self::receive_device_list_update`]; step 3 only when the update has a
    /// stream_id.
    async fn remote_keys_changed(
        &self,
        origin: &ServerName,
        user: &UserId,
        stream_id: Option<i64>,
    ) -> Result<EduOutcome> {
        if user.server_name() != origin {
            tracing::debug!(%origin, %user, "key update for a user of another server");
            return Ok(EduOutcome::Ignored);
        }
        let uid = user.as_str();
        if !db::e2e::shares_room_with_local_user(&self.db, uid, self.server_name.as_str()).await? {
            tracing::debug!(%origin, %user, "key update for a user who shares no room with us");
            return Ok(EduOutcome::Ignored);
        }
        let mut tx = db::begin(&self.db).await?;
        db::e2e::lock_stream(&mut *tx, db::e2e::DEVICE_LIST_LOCK).await?;
        if let Some(stream_id) = stream_id
            && !db::e2e::advance_remote_device_list(&mut *tx, uid, stream_id).await?
        {
            return Ok(EduOutcome::Repeat);
        }
        db::e2e::mark_device_lists_changed(&mut *tx, &[uid.to_owned()]).await?;
        tx.commit().await?;
        self.keys_changed(user);
        Ok(EduOutcome::Applied)
    }

    /// Inbound `m.direct_to_device`: queue the messages for our users' devices (`*`: every
    /// device of the user), once per origin and message_id.
    ///
    /// 1. The sender must be a user of the origin.
    /// 2. Recipients of other servers are dropped (the origin should not have sent them here).
    /// 3. A message_id the origin used before is a repeat.
    /// 4. Queue for the devices, as a local /sendToDevice does, and wake /sync.
    pub async fn receive_direct_to_device(
        &self,
        origin: &ServerName,
        content: &DirectDeviceContent,
    ) -> Result<EduOutcome> {
        if content.sender.server_name() != origin {
            tracing::debug!(%origin, sender = %content.sender, "to-device from a user of another server");
            return Ok(EduOutcome::Ignored);
        }
        let (mut users, mut devices, mut contents) = (Vec::new(), Vec::new(), Vec::new());
        for (user, targets) in &content.messages {
            if !self.is_local(user) {
                tracing::debug!(%origin, %user, "to-device for a user who is not ours");
                continue;
            }
            for (target, message) in targets {
                users.push(user.to_string());
                devices.push(match target {
                    DeviceIdOrAllDevices::DeviceId(d) => Some(d.to_string()),
                    DeviceIdOrAllDevices::AllDevices => None,
                });
                contents.push(message.json().get().to_owned());
            }
        }
        if users.is_empty() {
            return Ok(EduOutcome::Ignored);
        }
        let mut tx = db::begin(&self.db).await?;
        let fresh = db::e2e::insert_federation_to_device_txn(
            &mut *tx,
            origin.as_str(),
            content.message_id.as_str(),
            now_ms(),
        )
        .await?;
        if !fresh {
            return Ok(EduOutcome::Repeat);
        }
        db::e2e::lock_stream(&mut *tx, db::e2e::TO_DEVICE_LOCK).await?;
        db::e2e::insert_to_device(
            &mut *tx,
            content.sender.as_str(),
            &content.ev_type.to_string(),
            &users,
            &devices,
            &contents,
        )
        .await?;
        tx.commit().await?;
        self.to_device_queued(&users, &devices);
        Ok(EduOutcome::Applied)
    }

    /// The `m.device_list_update` for a change of a local user's device (new or changed keys,
    /// new display name, or deletion), to queue for every server in
    /// [`Self::device_list_destinations`]. Each call makes a new version of the user's list:
    /// its `stream_id` is new and `prev_id` names the version before it, so call it once per
    /// change and send the result to every destination.
    pub async fn device_list_update_edu(
        &self,
        user: &UserId,
        device_id: &DeviceId,
        deleted: bool,
    ) -> Result<DeviceListUpdateContent> {
        if !self.is_local(user) {
            return Err(Error::internal(format!(
                "device-list update asked for {user}, who is not a local user"
            )));
        }
        let (uid, did) = (user.as_str(), device_id.as_str());
        let mut tx = db::begin(&self.db).await?;
        db::e2e::lock_stream(&mut *tx, db::e2e::DEVICE_LIST_LOCK).await?;
        let (stream_id, prev) = db::e2e::next_outbound_device_list(&mut *tx, uid).await?;
        tx.commit().await?;

        // The device as it is now, read after taking the version: a later change gets a later
        // version and its own update.
        let mut edu =
            DeviceListUpdateContent::new(user.to_owned(), device_id.to_owned(), uint(stream_id));
        edu.prev_id = prev.map(uint).into_iter().collect();
        let device = if deleted {
            None
        } else {
            db::devices::get(&self.db, uid, did).await?
        };
        let Some(device) = device else {
            edu.deleted = Some(true);
            return Ok(edu);
        };
        edu.device_display_name = device.display_name;
        let mut keys = self
            .local_keys(
                None,
                &[(user.to_owned(), vec![device_id.to_owned()])].into(),
            )
            .await?;
        edu.keys = keys
            .device_keys
            .remove(user)
            .and_then(|mut d| d.remove(device_id));
        Ok(edu)
    }

    /// The `m.signing_key_update` after a local user uploaded cross-signing keys, to queue for
    /// every server in [`Self::device_list_destinations`]. User-signing keys are not sent.
    pub async fn signing_key_update_edu(&self, user: &UserId) -> Result<SigningKeyUpdateContent> {
        if !self.is_local(user) {
            return Err(Error::internal(format!(
                "signing-key update asked for {user}, who is not a local user"
            )));
        }
        let mut keys = self
            .local_keys(None, &[(user.to_owned(), Vec::new())].into())
            .await?;
        let mut edu = SigningKeyUpdateContent::new(user.to_owned());
        edu.master_key = keys.master_keys.remove(user);
        edu.self_signing_key = keys.self_signing_keys.remove(user);
        Ok(edu)
    }

    /// The other servers that must hear of a local user's device-list and signing-key changes:
    /// those of everyone joined to a room the user is joined to.
    pub async fn device_list_destinations(&self, user: &UserId) -> Result<Vec<OwnedServerName>> {
        let servers = db::e2e::servers_sharing_rooms(&self.db, user.as_str()).await?;
        Ok(servers
            .into_iter()
            .filter_map(|s| OwnedServerName::try_from(s).ok())
            .filter(|s| *s != self.server_name)
            .collect())
    }
}

impl E2e {
    /// The E2E EDUs of a received transaction (device lists, signing keys, to-device), each
    /// on its own: one that fails is logged and the rest go on.
    pub async fn apply_edus(
        &self,
        origin: &ServerName,
        edus: &[ruma::serde::Raw<ruma::api::federation::transactions::edu::Edu>],
    ) {
        use ruma::api::federation::transactions::edu::Edu;
        for raw in edus {
            let result = match raw.deserialize() {
                Ok(Edu::DeviceListUpdate(u)) => self.receive_device_list_update(origin, &u).await,
                Ok(Edu::SigningKeyUpdate(u)) => self.receive_signing_key_update(origin, &u).await,
                Ok(Edu::DirectToDevice(c)) => self.receive_direct_to_device(origin, &c).await,
                // Other kinds (and unreadable ones) are another module's business.
                _ => continue,
            };
            match result {
                Ok(EduOutcome::Ignored) => {
                    tracing::info!(%origin, "E2E EDU ignored");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%origin, error = %e, "E2E EDU not applied"),
            }
        }
    }
}

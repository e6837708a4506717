//! Our users' key changes and to-device messages told to the other servers concerned,
//! through the federation layer's outbound queue: one call per change, so no handler can
//! store a change and forget to tell the servers sharing a room with the user.

use ruma::api::client::to_device::send_event_to_device::v3::Messages;
use ruma::events::ToDeviceEventType;
use ruma::{DeviceId, OwnedDeviceId, UserId};

use super::E2e;
use crate::account::AuthedUser;
use crate::error::Result;
use crate::federation::Federation;

impl E2e {
    /// Tell the servers sharing a room with `user` that these of their devices changed (new
    /// or changed keys, a new name) or, with `deleted`, are gone: one `m.device_list_update`
    /// per device, each a new version of the user's list.
    pub async fn share_device_changes(
        &self,
        federation: &Federation,
        user: &UserId,
        devices: &[OwnedDeviceId],
        deleted: bool,
    ) -> Result<()> {
        let destinations = self.device_list_destinations(user).await?;
        // Each EDU starts a new version of the list: made only when someone is to be told.
        if destinations.is_empty() {
            return Ok(());
        }
        for device in devices {
            let edu = self.device_list_update_edu(user, device, deleted).await?;
            federation
                .queue_edu_for(&destinations, "m.device_list_update", &edu)
                .await?;
        }
        Ok(())
    }

    /// [`E2e::share_device_changes`] for one device that changed.
    pub async fn share_device_change(
        &self,
        federation: &Federation,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<()> {
        self.share_device_changes(federation, user, &[device.to_owned()], false)
            .await
    }

    /// Tell the servers sharing a room with `user` of their new cross-signing keys.
    pub async fn share_signing_keys(&self, federation: &Federation, user: &UserId) -> Result<()> {
        let destinations = self.device_list_destinations(user).await?;
        if destinations.is_empty() {
            return Ok(());
        }
        let edu = self.signing_key_update_edu(user).await?;
        federation
            .queue_edu_for(&destinations, "m.signing_key_update", &edu)
            .await
    }

    /// Deliver to-device messages (`/sendToDevice`): to our users' devices at once, and to
    /// other servers' users as one `m.direct_to_device` per server.
    pub async fn deliver_to_device(
        &self,
        federation: &Federation,
        sender: &AuthedUser,
        (event_type, txn_id): (&ToDeviceEventType, &str),
        messages: &Messages,
    ) -> Result<()> {
        let remote = self
            .send_to_device(sender, event_type, txn_id, messages)
            .await?;
        for (destination, content) in &remote {
            federation
                .queue_edu_for(
                    std::slice::from_ref(destination),
                    "m.direct_to_device",
                    content,
                )
                .await?;
        }
        Ok(())
    }
}

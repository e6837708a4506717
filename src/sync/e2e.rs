//! The end-to-end encryption parts of /sync: to-device messages, one-time key counts, unused
//! fallback key types and device-list changes. Each is one query for the syncing device.

use std::collections::BTreeMap;

use ruma::{OneTimeKeyAlgorithm, OwnedUserId, UInt, UserId};
use serde_json::Value;
use sqlx::PgPool;

use super::token::SyncToken;
use crate::db;
use crate::error::Result;

/// Most to-device messages one sync hands out; the rest follow on the next.
const MAX_TO_DEVICE: i64 = 100;

#[derive(Debug, Default)]
pub struct E2eSync {
    pub to_device: Vec<Value>,
    pub one_time_keys_count: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    pub unused_fallback_key_types: Vec<OneTimeKeyAlgorithm>,
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
    /// Positions for the next token.
    pub to_device_pos: i64,
    pub device_lists_pos: i64,
}

impl E2eSync {
    /// Whether there is news worth answering a long-poll for (key counts are not news).
    pub fn is_empty(&self) -> bool {
        self.to_device.is_empty() && self.changed.is_empty() && self.left.is_empty()
    }
}

/// Read the section for `device`. `since` is the client's token as given (to-device messages
/// up to it are acknowledged and deleted here); `events_upto` is the event position the rest
/// of the sync reads up to.
pub async fn section(
    db: &PgPool,
    user: &UserId,
    device: &str,
    since: Option<SyncToken>,
    events_upto: i64,
) -> Result<E2eSync> {
    let uid = user.as_str();
    let acked = since.map_or(0, |s| s.to_device);
    if acked > 0 {
        db::e2e::delete_to_device_upto(db, uid, device, acked).await?;
    }
    let messages = db::e2e::to_device_after(db, uid, device, acked, MAX_TO_DEVICE).await?;
    let to_device_pos = messages.last().map_or(acked, |m| m.0);
    let to_device = messages
        .into_iter()
        .map(|(_, sender, kind, content)| {
            let content: Value = serde_json::from_str(&content).unwrap_or(Value::Null);
            serde_json::json!({"sender": sender, "type": kind, "content": content})
        })
        .collect();

    let one_time_keys_count = counts(db::e2e::one_time_key_counts(db, uid, device).await?);
    let unused_fallback_key_types = db::e2e::unused_fallback_algorithms(db, uid, device)
        .await?
        .into_iter()
        .map(OneTimeKeyAlgorithm::from)
        .collect();

    let device_lists_pos = db::e2e::max_device_list_stream(db).await?;
    // An initial sync lists no changes: the client queries every key it needs anyway.
    let (changed, left) = match since {
        Some(s) => {
            let changed = db::e2e::changed_users(
                db,
                uid,
                s.device_lists,
                device_lists_pos,
                s.events,
                events_upto,
            )
            .await?;
            let left = db::e2e::left_users(db, uid, s.events, events_upto).await?;
            (user_ids(changed), user_ids(left))
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(E2eSync {
        to_device,
        one_time_keys_count,
        unused_fallback_key_types,
        changed,
        left,
        to_device_pos,
        device_lists_pos: device_lists_pos.max(since.map_or(0, |s| s.device_lists)),
    })
}

/// (algorithm, count) rows as the map /sync and /keys/upload answer with.
pub fn counts(rows: Vec<(String, i64)>) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
    rows.into_iter()
        .map(|(a, n)| {
            (
                OneTimeKeyAlgorithm::from(a),
                UInt::try_from(n).unwrap_or_default(),
            )
        })
        .collect()
}

/// Stored user IDs, skipping any that do not parse.
pub fn user_ids(ids: Vec<String>) -> Vec<OwnedUserId> {
    ids.into_iter()
        .filter_map(|u| OwnedUserId::try_from(u).ok())
        .collect()
}

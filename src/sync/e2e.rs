//! The end-to-end encryption parts of /sync: to-device messages, one-time key counts, unused
//! fallback key types and device-list changes, for the syncing device.

use std::collections::BTreeMap;

use crate::db::lease::Leases;
use ruma::{OneTimeKeyAlgorithm, OwnedUserId, UInt, UserId};
use serde_json::Value;

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

/// Which parts of the section a read covers (one-time key counts always).
#[derive(Debug, Clone, Copy)]
pub struct E2eRead {
    pub to_device: bool,
    pub device_lists: bool,
    /// No membership changed in the user's rooms since the token (as far as the notifier
    /// knows): with no device-list change either, nobody's keys can be new to the user.
    pub members_unchanged: bool,
    /// The token of the read before, in this request: its positions stand for the parts not
    /// read, and its to-device messages were acknowledged already.
    pub carry: Option<SyncToken>,
}

/// Read the section for `device`. `since` is the client's token as given (to-device messages
/// up to it are acknowledged and deleted here); `events_upto` is the event position the rest
/// of the sync reads up to.
pub async fn section(
    db: &Leases,
    user: &UserId,
    device: &str,
    since: Option<SyncToken>,
    events_upto: i64,
    read: &E2eRead,
) -> Result<E2eSync> {
    let uid = user.as_str();
    let acked = since.map_or(0, |s| s.to_device);
    let mut out = E2eSync::default();
    match read.carry {
        Some(prev) if !read.to_device => out.to_device_pos = prev.to_device,
        carry => {
            if acked > 0 && carry.is_none() {
                db::e2e::delete_to_device_upto(db, uid, device, acked).await?;
            }
            let messages = db::e2e::to_device_after(db, uid, device, acked, MAX_TO_DEVICE).await?;
            out.to_device_pos = messages.last().map_or(acked, |m| m.0);
            out.to_device = messages
                .into_iter()
                .map(|(_, sender, kind, content)| {
                    let content: Value = serde_json::from_str(&content).unwrap_or(Value::Null);
                    serde_json::json!({"sender": sender, "type": kind, "content": content})
                })
                .collect();
        }
    }

    let mut one_time = Vec::new();
    for (algorithm, count) in db::e2e::key_counts(db, uid, device).await? {
        match count {
            Some(n) => one_time.push((algorithm, n)),
            None => out
                .unused_fallback_key_types
                .push(OneTimeKeyAlgorithm::from(algorithm)),
        }
    }
    out.one_time_keys_count = counts(one_time);
    out.unused_fallback_key_types
        .sort_by(|a, b| a.as_str().cmp(b.as_str()));

    match read.carry {
        Some(prev) if !read.device_lists => out.device_lists_pos = prev.device_lists,
        _ => {
            let device_lists_pos = db::e2e::max_device_list_stream(db).await?;
            // An initial sync lists no changes: the client queries every key it needs anyway.
            if let Some(s) = since
                && !(device_lists_pos <= s.device_lists && read.members_unchanged)
            {
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
                out.changed = user_ids(changed);
                out.left = user_ids(left);
            }
            out.device_lists_pos = device_lists_pos.max(since.map_or(0, |s| s.device_lists));
        }
    }
    Ok(out)
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

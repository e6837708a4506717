//! The extensions of a sliding sync response: to-device messages (MSC3885), end-to-end
//! encryption (MSC3884: device lists, key counts), account data, receipts (MSC3960) and
//! typing, sharing the code of `/v3/sync`.

use std::collections::{BTreeMap, HashSet};

use ruma::{DeviceId, OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::conn::ConnState;
use super::request::ExtensionsSpec;
use crate::db;
use crate::ephemeral::{EphemeralPositions, EphemeralRead, EphemeralSync};
use crate::error::{Error, Result};
use crate::sync::Sync;
use crate::sync::account_data::{AccountDataEntry, account_data_since};
use crate::sync::e2e::{self, E2eRead, E2eSync};
use crate::sync::token::SyncToken;

/// Rooms as the ephemeral reads take them: (number, ID).
type Rooms<'a> = Vec<(i64, &'a RoomId)>;

/// To-device messages one response hands out at most, whatever the client asks.
const MAX_TO_DEVICE: i64 = 100;

#[derive(Debug, Default)]
pub struct ExtensionsData {
    pub to_device: Option<ToDeviceOut>,
    pub e2ee: Option<E2eSync>,
    pub account_data: Option<AccountDataOut>,
    /// Per room, its `m.receipt` event.
    pub receipts: BTreeMap<OwnedRoomId, Value>,
    /// Per room, its `m.typing` event.
    pub typing: BTreeMap<OwnedRoomId, Value>,
}

#[derive(Debug, Default)]
pub struct ToDeviceOut {
    pub next_batch: String,
    pub events: Vec<Value>,
}

#[derive(Debug, Default)]
pub struct AccountDataOut {
    pub global: Vec<Value>,
    pub rooms: BTreeMap<OwnedRoomId, Vec<Value>>,
}

impl ExtensionsData {
    /// Whether there is nothing the client did not have (key counts are not news).
    pub fn is_empty(&self) -> bool {
        self.to_device.as_ref().is_none_or(|t| t.events.is_empty())
            && self.e2ee.as_ref().is_none_or(E2eSync::is_empty)
            && self
                .account_data
                .as_ref()
                .is_none_or(|a| a.global.is_empty() && a.rooms.is_empty())
            && self.receipts.is_empty()
            && self.typing.is_empty()
    }
}

/// What the extensions' part of a read works from.
pub(super) struct ExtensionsRead<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    pub spec: &'a ExtensionsSpec,
    pub prev: Option<&'a ConnState>,
    /// The joined rooms in the lists' ranges and subscriptions: (number, ID).
    pub rooms: &'a [(i64, &'a str)],
    /// Rooms sent with `initial: true`: their receipts and typing are sent whole.
    pub initial: &'a HashSet<i64>,
    pub upto: i64,
}

impl Sync {
    pub(super) async fn sliding_extensions(
        &self,
        read: &ExtensionsRead<'_>,
        state: &mut ConnState,
    ) -> Result<ExtensionsData> {
        let spec = read.spec;
        let mut out = ExtensionsData::default();
        let db = self.rooms.reads();
        let uid = read.user.as_str();
        if let Some(td) = &spec.to_device {
            let since = match td.since.as_deref() {
                None => 0,
                Some(s) => s
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0 && s.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        Error::invalid_param(format!("Invalid to-device since {s:?}"))
                    })?,
            };
            let device = read.device.as_str();
            if since > 0 {
                db::e2e::delete_to_device_upto(db, uid, device, since).await?;
            }
            let limit = td.limit.unwrap_or(MAX_TO_DEVICE).clamp(1, MAX_TO_DEVICE);
            let messages = db::e2e::to_device_after(db, uid, device, since, limit).await?;
            out.to_device = Some(ToDeviceOut {
                next_batch: messages.last().map_or(since, |m| m.0).to_string(),
                events: messages
                    .into_iter()
                    .map(|(_, sender, kind, content)| {
                        let content: Value = serde_json::from_str(&content).unwrap_or(Value::Null);
                        serde_json::json!({"sender": sender, "type": kind, "content": content})
                    })
                    .collect(),
            });
        }

        state.device_lists = read.prev.map_or(0, |p| p.device_lists);
        if spec.e2ee {
            let since = read.prev.map(|p| SyncToken {
                events: p.events,
                device_lists: p.device_lists,
                ..Default::default()
            });
            let e2e_read = E2eRead {
                // To-device messages are the to_device extension's.
                to_device: false,
                device_lists: true,
                members_unchanged: false,
                carry: Some(SyncToken::default()),
            };
            let section = e2e::section(
                db,
                read.user,
                read.device.as_str(),
                since,
                read.upto,
                &e2e_read,
            )
            .await?;
            state.device_lists = section.device_lists_pos;
            out.e2ee = Some(section);
        }

        state.account_data = read.prev.map_or(0, |p| p.account_data);
        if spec.account_data {
            out.account_data = Some(self.sliding_account_data(read, state).await?);
        }

        self.sliding_ephemeral(read, state, &mut out).await?;
        Ok(out)
    }

    /// Account data changed since the connection's position: global, and for the rooms in
    /// scope; all of a room's when it is sent initially.
    async fn sliding_account_data(
        &self,
        read: &ExtensionsRead<'_>,
        state: &mut ConnState,
    ) -> Result<AccountDataOut> {
        let db = self.rooms.reads();
        let uid = read.user.as_str();
        let after = read.prev.map_or(0, |p| p.account_data);
        let upto = db::sync::max_account_data_stream(db, uid).await?;
        let mut rows = account_data_since(db, read.user, after, read.prev.is_none()).await?;
        let fresh: HashSet<&str> = read
            .rooms
            .iter()
            .filter(|(nid, _)| read.initial.contains(nid))
            .map(|(_, id)| *id)
            .collect();
        if after > 0 && !fresh.is_empty() {
            let key = |e: &AccountDataEntry| (e.room_id.clone(), e.event["type"].to_string());
            let seen: HashSet<(String, String)> = rows.iter().map(key).collect();
            rows.extend(
                account_data_since(db, read.user, 0, false)
                    .await?
                    .into_iter()
                    .filter(|e| fresh.contains(e.room_id.as_str()) && !seen.contains(&key(e))),
            );
        }
        let in_scope: HashSet<&str> = read.rooms.iter().map(|(_, id)| *id).collect();
        let mut out = AccountDataOut::default();
        let mut max = upto.max(after);
        for AccountDataEntry {
            room_id,
            event,
            stream,
        } in rows
        {
            max = max.max(stream);
            if room_id.is_empty() {
                out.global.push(event);
            } else if in_scope.contains(room_id.as_str())
                && let Ok(id) = OwnedRoomId::try_from(room_id.as_str())
            {
                out.rooms.entry(id).or_default().push(event);
            }
        }
        state.account_data = max;
        Ok(out)
    }

    /// Receipts and typing for the joined rooms in scope: changes since the connection's
    /// positions, and everything for rooms sent initially.
    async fn sliding_ephemeral(
        &self,
        read: &ExtensionsRead<'_>,
        state: &mut ConnState,
        out: &mut ExtensionsData,
    ) -> Result<()> {
        let spec = read.spec;
        let prev_positions = read.prev.map(|p| EphemeralPositions {
            typing: p.typing,
            receipts: p.receipts,
            presence: 0,
        });
        let rooms: Vec<(i64, &RoomId)> = read
            .rooms
            .iter()
            .filter_map(|(nid, id)| <&RoomId>::try_from(*id).ok().map(|id| (*nid, id)))
            .collect();
        let (fresh, known): (Rooms<'_>, Rooms<'_>) = match prev_positions {
            Some(_) => rooms
                .iter()
                .partition(|(nid, _)| read.initial.contains(nid)),
            None => (rooms.clone(), Vec::new()),
        };
        let ephemeral_read = |carry: EphemeralPositions| EphemeralRead {
            receipts: spec.receipts,
            presence: false,
            carry,
        };
        // The positions come from the incremental read, or from the whole one on a new
        // connection.
        let carry = prev_positions.unwrap_or_default();
        let mut sections: Vec<EphemeralSync> = Vec::new();
        let incremental = self
            .ephemeral
            .sync_section(read.user, &known, prev_positions, ephemeral_read(carry))
            .await?;
        state.typing = incremental.positions.typing;
        state.receipts = incremental.positions.receipts;
        // Typing serials live in memory: behind the connection's, the server restarted and
        // every typing set is news again.
        let restarted = prev_positions.is_some_and(|p| incremental.positions.typing < p.typing);
        if prev_positions.is_some() {
            sections.push(incremental);
        }
        if restarted && spec.typing && !known.is_empty() {
            let since = prev_positions.map(|p| EphemeralPositions { typing: 0, ..p });
            let mut again = self
                .ephemeral
                .sync_section(
                    read.user,
                    &known,
                    since,
                    EphemeralRead {
                        receipts: false,
                        presence: false,
                        carry,
                    },
                )
                .await?;
            again.rooms.values_mut().for_each(|events| {
                events.retain(|e| e["type"] == "m.typing");
            });
            sections.push(again);
        }
        if !fresh.is_empty() {
            let whole = self
                .ephemeral
                .sync_section(read.user, &fresh, None, ephemeral_read(carry))
                .await?;
            sections.push(whole);
        }
        for section in sections {
            for (room_id, events) in section.rooms {
                for event in events {
                    match event["type"].as_str() {
                        Some("m.typing") if spec.typing => {
                            out.typing.insert(room_id.clone(), event);
                        }
                        Some("m.receipt") if spec.receipts => {
                            out.receipts.insert(room_id.clone(), event);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

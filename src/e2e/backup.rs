//! Server-side room key backups: versions and the encrypted session keys in them.
//!
//! Keys may only be written to the current (newest) version, so a client holding an old
//! version learns that the backup moved on (`M_WRONG_ROOM_KEYS_VERSION`).

use std::collections::BTreeMap;

use ruma::api::client::backup::{BackupAlgorithm, KeyBackupData};
use ruma::api::error::{ErrorKind, WrongRoomKeysVersionErrorData};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, UInt, UserId};

use super::E2e;
use crate::db::{self, e2e::BackupRow};
use crate::error::{Error, Result};

/// A backup version as `GET /room_keys/version` describes it.
pub struct BackupInfo {
    pub version: String,
    pub algorithm: Raw<BackupAlgorithm>,
    pub count: UInt,
    pub etag: String,
}

/// `(etag, count)` after a change of the backed-up keys.
pub type KeysState = (String, UInt);

/// Backed-up keys by room and session.
pub type BackedUpKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>>;

fn no_backup() -> Error {
    Error::not_found("Unknown backup version")
}

/// Versions are our decimal numbers; anything else names no backup.
fn parse_version(v: &str) -> Result<i64> {
    v.parse().map_err(|_| no_backup())
}

fn info(row: BackupRow) -> Result<BackupInfo> {
    let raw = serde_json::value::RawValue::from_string(row.algorithm)
        .map_err(|e| Error::internal(format!("stored backup algorithm: {e}")))?;
    Ok(BackupInfo {
        version: row.version.to_string(),
        algorithm: Raw::from_json(raw),
        count: UInt::try_from(row.count).unwrap_or_default(),
        etag: row.etag.to_string(),
    })
}

fn keys_state(row: &BackupRow) -> KeysState {
    (
        row.etag.to_string(),
        UInt::try_from(row.count).unwrap_or_default(),
    )
}

impl E2e {
    pub async fn create_backup(
        &self,
        user: &UserId,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<String> {
        algorithm
            .deserialize()
            .map_err(|e| Error::bad_json(format!("Invalid backup algorithm: {e}")))?;
        let v = db::e2e::create_backup(&self.db, user.as_str(), algorithm.json().get()).await?;
        Ok(v.to_string())
    }

    /// The named version, or the current one when `version` is `None`.
    pub async fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let v = version.map(parse_version).transpose()?;
        let row = db::e2e::backup(&self.db, user.as_str(), v)
            .await?
            .ok_or_else(no_backup)?;
        info(row)
    }

    /// Replace the auth data of a version; its algorithm cannot change.
    pub async fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<()> {
        let v = parse_version(version)?;
        let new: BackupAlgorithm = algorithm
            .deserialize()
            .map_err(|e| Error::bad_json(format!("Invalid backup algorithm: {e}")))?;
        let row = db::e2e::backup(&self.db, user.as_str(), Some(v))
            .await?
            .ok_or_else(no_backup)?;
        let old: BackupAlgorithm = serde_json::from_str(&row.algorithm)
            .map_err(|e| Error::internal(format!("stored backup algorithm: {e}")))?;
        if old.algorithm() != new.algorithm() {
            return Err(Error::invalid_param(
                "The algorithm of a backup version cannot change",
            ));
        }
        db::e2e::update_backup(&self.db, user.as_str(), v, algorithm.json().get()).await?;
        Ok(())
    }

    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let v = parse_version(version)?;
        if db::e2e::delete_backup(&self.db, user.as_str(), v).await? {
            Ok(())
        } else {
            Err(no_backup())
        }
    }

    /// Store keys into the current version: (room, session, data) triples.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<(OwnedRoomId, String, &Raw<KeyBackupData>)>,
    ) -> Result<KeysState> {
        let uid = user.as_str();
        let mut tx = db::begin(&self.db).await?;
        let current = db::e2e::backup(&mut *tx, uid, None)
            .await?
            .ok_or_else(no_backup)?;
        if version.parse::<i64>().ok() != Some(current.version) {
            return Err(Error::new(
                ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                    current.version.to_string(),
                )),
                "Not the current backup version",
            ));
        }
        let (mut rooms, mut sessions, mut datas) = (Vec::new(), Vec::new(), Vec::new());
        for (room, session, data) in keys {
            rooms.push(room.to_string());
            sessions.push(session);
            datas.push(data.json().get().to_owned());
        }
        db::e2e::put_backup_keys(&mut *tx, uid, current.version, &rooms, &sessions, &datas).await?;
        db::e2e::bump_backup_etag(&mut *tx, uid, current.version).await?;
        let row = db::e2e::backup(&mut *tx, uid, Some(current.version))
            .await?
            .ok_or_else(no_backup)?;
        tx.commit().await?;
        Ok(keys_state(&row))
    }

    /// Backed-up keys of a version, optionally of one room or one session.
    pub async fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&ruma::RoomId>,
        session_id: Option<&str>,
    ) -> Result<BackedUpKeys> {
        let v = parse_version(version)?;
        db::e2e::backup(&self.db, user.as_str(), Some(v))
            .await?
            .ok_or_else(no_backup)?;
        let rows = db::e2e::backup_keys(
            &self.db,
            user.as_str(),
            v,
            room_id.map(|r| r.as_str()),
            session_id,
        )
        .await?;
        let mut out = BackedUpKeys::new();
        for (room, session, data) in rows {
            let Ok(room) = OwnedRoomId::try_from(room) else {
                continue;
            };
            let raw = serde_json::value::RawValue::from_string(data)
                .map_err(|e| Error::internal(format!("stored backup key: {e}")))?;
            out.entry(room)
                .or_default()
                .insert(session, Raw::from_json(raw));
        }
        Ok(out)
    }

    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&ruma::RoomId>,
        session_id: Option<&str>,
    ) -> Result<KeysState> {
        let uid = user.as_str();
        let v = parse_version(version)?;
        let mut tx = db::begin(&self.db).await?;
        db::e2e::backup(&mut *tx, uid, Some(v))
            .await?
            .ok_or_else(no_backup)?;
        db::e2e::delete_backup_keys(&mut *tx, uid, v, room_id.map(|r| r.as_str()), session_id)
            .await?;
        db::e2e::bump_backup_etag(&mut *tx, uid, v).await?;
        let row = db::e2e::backup(&mut *tx, uid, Some(v))
            .await?
            .ok_or_else(no_backup)?;
        tx.commit().await?;
        Ok(keys_state(&row))
    }
}

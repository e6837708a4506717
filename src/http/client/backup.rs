//! `POST/GET /_matrix/client/v3/room_keys/version`, `GET/PUT/DELETE /room_keys/version/{version}`,
//! `PUT/GET/DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#server-side-key-backups)

use std::collections::BTreeMap;

use axum::Router;
use ruma::api::client::backup::{
    RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
    create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
    delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
    get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, create_version_route);
    let r = route(r, latest_version_route);
    let r = route(r, get_version_route);
    let r = route(r, update_version_route);
    let r = route(r, delete_version_route);
    let r = route(r, put_keys_route);
    let r = route(r, put_room_keys_route);
    let r = route(r, put_session_key_route);
    let r = route(r, get_keys_route);
    let r = route(r, get_room_keys_route);
    let r = route(r, get_session_key_route);
    let r = route(r, delete_keys_route);
    let r = route(r, delete_room_keys_route);
    route(r, delete_session_key_route)
}

/// # `POST /_matrix/client/v3/room_keys/version`
async fn create_version_route(
    state: AppState,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let version = state
        .e2e
        .create_backup(&req.auth.user_id, &req.body.algorithm)
        .await?;
    Ok(create_backup_version::v3::Response::new(version))
}

/// # `GET /_matrix/client/v3/room_keys/version`
async fn latest_version_route(
    state: AppState,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let i = state.e2e.backup_info(&req.auth.user_id, None).await?;
    Ok(get_latest_backup_info::v3::Response::new(
        i.algorithm,
        i.count,
        i.etag,
        i.version,
    ))
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
async fn get_version_route(
    state: AppState,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let i = state
        .e2e
        .backup_info(&req.auth.user_id, Some(&req.body.version))
        .await?;
    Ok(get_backup_info::v3::Response::new(
        i.algorithm,
        i.count,
        i.etag,
        i.version,
    ))
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
async fn update_version_route(
    state: AppState,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    state
        .e2e
        .update_backup(&req.auth.user_id, &req.body.version, &req.body.algorithm)
        .await?;
    Ok(update_backup_version::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
async fn delete_version_route(
    state: AppState,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    state
        .e2e
        .delete_backup(&req.auth.user_id, &req.body.version)
        .await?;
    Ok(delete_backup_version::v3::Response::new())
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
async fn put_keys_route(
    state: AppState,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let keys = req
        .body
        .rooms
        .iter()
        .flat_map(|(room, backup)| {
            backup
                .sessions
                .iter()
                .map(move |(s, d)| (room.clone(), s.clone(), d))
        })
        .collect();
    let (etag, count) = state
        .e2e
        .put_backup_keys(&req.auth.user_id, &req.body.version, keys)
        .await?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
async fn put_room_keys_route(
    state: AppState,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let keys = b
        .sessions
        .iter()
        .map(|(s, d)| (b.room_id.clone(), s.clone(), d))
        .collect();
    let (etag, count) = state
        .e2e
        .put_backup_keys(&req.auth.user_id, &b.version, keys)
        .await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn put_session_key_route(
    state: AppState,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let keys = vec![(b.room_id.clone(), b.session_id.clone(), &b.session_data)];
    let (etag, count) = state
        .e2e
        .put_backup_keys(&req.auth.user_id, &b.version, keys)
        .await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

/// # `GET /_matrix/client/v3/room_keys/keys`
async fn get_keys_route(
    state: AppState,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let keys = state
        .e2e
        .backup_keys(&req.auth.user_id, &req.body.version, None, None)
        .await?;
    let rooms: BTreeMap<_, _> = keys
        .into_iter()
        .map(|(room, sessions)| (room, RoomKeyBackup::new(sessions)))
        .collect();
    Ok(get_backup_keys::v3::Response::new(rooms))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`
async fn get_room_keys_route(
    state: AppState,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let mut keys = state
        .e2e
        .backup_keys(&req.auth.user_id, &b.version, Some(&b.room_id), None)
        .await?;
    // A room without keys answers an empty map, as Synapse does.
    let sessions = keys.remove(&b.room_id).unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn get_session_key_route(
    state: AppState,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let mut keys = state
        .e2e
        .backup_keys(
            &req.auth.user_id,
            &b.version,
            Some(&b.room_id),
            Some(&b.session_id),
        )
        .await?;
    let data = keys
        .remove(&b.room_id)
        .and_then(|mut s| s.remove(&b.session_id))
        .ok_or_else(|| Error::not_found("No key backed up for this session"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(data))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
async fn delete_keys_route(
    state: AppState,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let (etag, count) = state
        .e2e
        .delete_backup_keys(&req.auth.user_id, &req.body.version, None, None)
        .await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
async fn delete_room_keys_route(
    state: AppState,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let (etag, count) = state
        .e2e
        .delete_backup_keys(&req.auth.user_id, &b.version, Some(&b.room_id), None)
        .await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn delete_session_key_route(
    state: AppState,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let (etag, count) = state
        .e2e
        .delete_backup_keys(
            &req.auth.user_id,
            &b.version,
            Some(&b.room_id),
            Some(&b.session_id),
        )
        .await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(
        etag, count,
    ))
}

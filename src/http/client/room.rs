//! `POST /_matrix/client/v3/createRoom`, `POST /rooms/{roomId}/upgrade`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#creation),
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3roomsroomidupgrade)

use axum::Router;
use ruma::api::client::room::Visibility;
use ruma::api::client::room::{create_room, upgrade_room};
use ruma::room::RoomType;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::create::{CreateRoom, Preset};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, create_room_route);
    route(r, upgrade_room_route)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
async fn upgrade_room_route(
    state: AppState,
    req: Ruma<upgrade_room::v3::Request>,
) -> Result<upgrade_room::v3::Response> {
    let b = req.body;
    let profile = state.accounts.profile(&req.auth.user_id).await?;
    let replacement = state
        .rooms
        .upgrade_room(
            &req.auth.user_id,
            &b.room_id,
            b.new_version,
            &b.additional_creators,
            profile,
        )
        .await?;
    Ok(upgrade_room::v3::Response::new(replacement))
}

fn object(raw: &serde_json::value::RawValue, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(raw.get()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
    }
}

/// # `POST /_matrix/client/v3/createRoom`
async fn create_room_route(
    state: AppState,
    req: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let user = req.auth;
    let body = req.body;
    let preset = body.preset.as_ref().map(|p| match p.as_str() {
        "public_chat" => Ok(Preset::PublicChat),
        "trusted_private_chat" => Ok(Preset::TrustedPrivateChat),
        "private_chat" => Ok(Preset::PrivateChat),
        other => Err(Error::bad_json(format!("Unknown preset {other:?}"))),
    });
    let preset = preset.transpose()?;
    if !matches!(body.visibility, Visibility::Public | Visibility::Private) {
        return Err(Error::bad_json(format!(
            "Unknown visibility {:?}",
            body.visibility.as_str()
        )));
    }
    let creation_content = match &body.creation_content {
        Some(raw) => {
            let mut m = object(raw.json(), "creation_content")?;
            // The server sets these itself.
            m.remove("creator");
            m.remove("room_version");
            if let Some(t) = m.get("type")
                && !t.is_string()
            {
                return Err(Error::bad_json("creation_content.type must be a string"));
            }
            let _: Option<RoomType> = None;
            m
        }
        None => Map::new(),
    };
    let power_level_override = match &body.power_level_content_override {
        Some(raw) => Some(object(raw.json(), "power_level_content_override")?),
        None => None,
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let v: Value = serde_json::from_str(raw.json().get())
            .map_err(|e| Error::bad_json(format!("initial_state: {e}")))?;
        let t = v["type"]
            .as_str()
            .ok_or_else(|| Error::bad_json("initial_state event needs a type"))?;
        let k = v["state_key"].as_str().unwrap_or("");
        if !v["content"].is_object() {
            return Err(Error::bad_json("initial_state event needs object content"));
        }
        initial_state.push((t.to_owned(), k.to_owned(), v["content"].clone()));
    }
    let (displayname, avatar_url) = state.accounts.profile(&user.user_id).await?;
    let room_id = state
        .federation
        .create_room(
            &state.rooms,
            &user.user_id,
            CreateRoom {
                version: body.room_version,
                preset,
                public_visibility: body.visibility == Visibility::Public,
                name: body.name,
                topic: body.topic,
                alias_localpart: body.room_alias_name,
                invite: body.invite,
                is_direct: body.is_direct,
                creation_content,
                power_level_override,
                initial_state,
                creator_displayname: displayname,
                creator_avatar_url: avatar_url,
                invitee_profiles: Default::default(),
            },
        )
        .await?;
    Ok(create_room::v3::Response::new(room_id))
}

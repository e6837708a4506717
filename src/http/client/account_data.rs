//! `GET/PUT /_matrix/client/v3/user/{userId}/account_data/{type}` and the per-room variant
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#client-config)

use axum::Router;
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::serde::Raw;

use super::require_self;
use crate::account::PUSH_RULES;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_global_route);
    let r = route(r, set_global_route);
    let r = route(r, get_room_route);
    route(r, set_room_route)
}

fn not_found() -> Error {
    Error::not_found("Account data not found")
}

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn get_global_route(
    state: AppState,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    let raw = state
        .accounts
        .account_data(&req.auth.user_id, None, &data_type)
        .await?
        .ok_or_else(not_found)?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        raw,
    )))
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn set_global_route(
    state: AppState,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    if data_type == PUSH_RULES {
        return Err(Error::bad_json(
            "Push rules are changed through the /pushrules API",
        ));
    }
    state
        .accounts
        .set_account_data(&req.auth.user_id, None, &data_type, req.body.data.json())
        .await?;
    Ok(set_global_account_data::v3::Response::new())
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn get_room_route(
    state: AppState,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    let raw = state
        .accounts
        .account_data(&req.auth.user_id, Some(&req.body.room_id), &data_type)
        .await?
        .ok_or_else(not_found)?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(
        raw,
    )))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn set_room_route(
    state: AppState,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    if data_type == "m.fully_read" {
        // The spec routes the read marker through /read_markers, which also sends receipts.
        return Err(Error::bad_json(
            "m.fully_read is set through the /read_markers API",
        ));
    }
    state
        .accounts
        .set_account_data(
            &req.auth.user_id,
            Some(&req.body.room_id),
            &data_type,
            req.body.data.json(),
        )
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}

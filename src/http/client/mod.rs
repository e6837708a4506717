//! Client-server API routes, one file per spec section.

mod account;
mod account_data;
mod admin;
mod admin_register;
mod backup;
mod context;
mod device;
mod directory;
mod discovery;
pub mod filter;
mod hierarchy;
mod keys;
mod legacy;
mod media;
mod members;
mod membership;
mod message;
mod openid;
mod pages;
mod presence;
mod profile;
mod push_rules;
mod pushers;
mod receipt;
mod register;
mod relations;
mod report;
mod room;
mod search;
mod session;
mod sliding_sync;
mod state;
mod summary;
mod sync;
mod tags;
mod thirdparty;
mod to_device;
mod typing;
mod user_directory;
mod voip;

use axum::Router;

pub(super) use pushers::missing_set_pusher_params;

use crate::account::AuthedUser;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::room::timeline::{At, TopoToken};
use crate::sync::token::SyncToken;

/// A position in any token this server hands out: `t…` (`prev_batch`, `start`, `end`) or a
/// sync token `s…` (`next_batch`), which clients may pass wherever the spec takes a
/// pagination token (js-sdk loads members `at` its sync token, nio pages from one).
/// Client-format events as ruma's raw events of any kind.
fn to_raw<T>(events: &[serde_json::Value]) -> Result<Vec<ruma::serde::Raw<T>>> {
    events
        .iter()
        .map(|v| crate::room::raw(v).map(ruma::serde::Raw::from_json))
        .collect()
}

fn position(token: &str) -> Result<At> {
    match token.starts_with('s') {
        true => Ok(At::Stream(SyncToken::parse(token)?.events)),
        false => Ok(At::Topo(TopoToken::parse(token)?)),
    }
}

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = discovery::routes(r);
    let r = register::routes(r);
    let r = admin_register::routes(r);
    let r = admin::routes(r);
    let r = session::routes(r);
    let r = account::routes(r);
    let r = device::routes(r);
    let r = profile::routes(r);
    let r = account_data::routes(r);
    let r = tags::routes(r);
    let r = thirdparty::routes(r);
    let r = push_rules::routes(r);
    let r = pushers::routes(r);
    let r = filter::routes(r);
    let r = room::routes(r);
    let r = directory::routes(r);
    let r = hierarchy::routes(r);
    let r = membership::routes(r);
    let r = message::routes(r);
    let r = pages::routes(r);
    let r = legacy::routes(r);
    let r = members::routes(r);
    let r = context::routes(r);
    let r = state::routes(r);
    let r = keys::routes(r);
    let r = to_device::routes(r);
    let r = backup::routes(r);
    let r = typing::routes(r);
    let r = receipt::routes(r);
    let r = presence::routes(r);
    let r = media::routes(r);
    let r = voip::routes(r);
    let r = relations::routes(r);
    let r = summary::routes(r);
    let r = report::routes(r);
    let r = openid::routes(r);
    let r = search::routes(r);
    let r = user_directory::routes(r);
    let r = sliding_sync::routes(r);
    sync::routes(r)
}

/// Endpoints with a `{userId}` in the path act only on the caller's own data.
fn require_self(user: &AuthedUser, target: &ruma::UserId) -> Result<()> {
    if user.user_id == target {
        Ok(())
    } else {
        Err(Error::forbidden("You cannot act on another user's data"))
    }
}

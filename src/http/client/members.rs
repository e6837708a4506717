//! `GET /rooms/{roomId}/members`, `GET /rooms/{roomId}/joined_members`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidmembers)

use std::collections::BTreeMap;

use axum::Router;
use ruma::api::client::membership::{get_member_events, joined_members};
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;
use ruma::{OwnedMxcUri, OwnedUserId};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::raw;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, members_route);
    route(r, joined_members_route)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members_route(
    state: AppState,
    req: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let body = req.body;
    let at = match body.at.as_deref() {
        Some(t) => Some(
            state
                .rooms
                .position(&body.room_id, super::position(t)?, false)
                .await?,
        ),
        None => None,
    };
    let membership = body.membership.as_ref().map(known_membership).transpose()?;
    let not_membership = body
        .not_membership
        .as_ref()
        .map(known_membership)
        .transpose()?;
    let events = state
        .rooms
        .members(
            &req.auth.user_id,
            &body.room_id,
            at,
            membership,
            not_membership,
        )
        .await?;
    let chunk = events
        .iter()
        .map(|v| raw(v).map(Raw::from_json))
        .collect::<Result<Vec<_>>>()?;
    Ok(get_member_events::v3::Response::new(chunk))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
async fn joined_members_route(
    state: AppState,
    req: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let members = state
        .rooms
        .joined_members(&req.auth.user_id, &req.body.room_id)
        .await?;
    let joined: BTreeMap<OwnedUserId, joined_members::v3::RoomMember> = members
        .into_iter()
        .map(|m| {
            let mut member = joined_members::v3::RoomMember::new();
            member.display_name = m.display_name;
            member.avatar_url = m.avatar_url.map(OwnedMxcUri::from);
            (m.user_id, member)
        })
        .collect();
    Ok(joined_members::v3::Response::new(joined))
}

/// A membership the spec names, as a filter value; anything else is the client's error
/// rather than a filter that silently matches nothing.
fn known_membership(m: &MembershipState) -> Result<&MembershipState> {
    use MembershipState as M;
    match m {
        M::Join | M::Invite | M::Leave | M::Ban | M::Knock => Ok(m),
        other => Err(Error::invalid_param(format!(
            "Unknown membership {:?}",
            other.as_str()
        ))),
    }
}

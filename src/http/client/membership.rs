//! `POST /rooms/{roomId}/join`, `POST /join/{roomIdOrAlias}`, `POST /knock/{roomIdOrAlias}`,
//! `/leave`, `/invite`, `/kick`, `/ban`, `/unban`, `/forget`, `GET /joined_rooms`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#room-membership)

use axum::Router;
use ruma::api::client::knock::knock_room;
use ruma::api::client::membership::{
    ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias, joined_rooms,
    kick_user, leave_room, unban_user,
};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::Moderation;
use crate::room::membership::JoinContent;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, join_by_id_route);
    let r = route(r, join_route);
    let r = route(r, knock_route);
    let r = route(r, leave_route);
    let r = route(r, invite_route);
    let r = route(r, kick_route);
    let r = route(r, ban_route);
    let r = route(r, unban_route);
    let r = route(r, forget_route);
    route(r, joined_rooms_route)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
async fn join_by_id_route(
    state: AppState,
    req: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let b = &req.body;
    let target: &ruma::RoomOrAliasId = <&ruma::RoomOrAliasId>::from(&*b.room_id);
    let body = body_object(&req.raw_body);
    let room_id = join(&state, &req.auth, target, &[], b.reason.as_deref(), body).await?;
    Ok(join_room_by_id::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
async fn join_route(
    state: AppState,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let b = &req.body;
    let room_id = join(
        &state,
        &req.auth,
        &b.room_id_or_alias,
        &b.via,
        b.reason.as_deref(),
        body_object(&req.raw_body),
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

async fn join(
    state: &AppState,
    caller: &crate::account::AuthedUser,
    target: &ruma::RoomOrAliasId,
    via: &[ruma::OwnedServerName],
    reason: Option<&str>,
    body: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<ruma::OwnedRoomId> {
    let user = &*caller.user_id;
    if caller.is_guest {
        state.rooms.check_guest_may_join(target).await?;
    }
    let profile = state.accounts.profile(user).await?;
    let content = JoinContent::new(&profile, body);
    state
        .federation
        .join_room(&state.rooms, user, target, via, reason, &content)
        .await
}

/// A join request's body as an object: its keys other than `reason` go into the member
/// event (the parser has checked it is an object, or empty).
fn body_object(raw: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice(raw).ok()
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
async fn knock_route(
    state: AppState,
    req: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let b = &req.body;
    let room_id = state
        .federation
        .knock_room(
            &state.rooms,
            &req.auth.user_id,
            &b.room_id_or_alias,
            &b.via,
            b.reason.as_deref(),
        )
        .await?;
    Ok(knock_room::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
async fn leave_route(
    state: AppState,
    req: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    let b = &req.body;
    let user = &req.auth.user_id;
    let reason = b.reason.as_deref();
    if let Err(e) = state
        .federation
        .leave_room(&state.rooms, user, &b.room_id, reason)
        .await
    {
        // An invite nobody can be told of the rejection of is rejected here alone, as
        // Synapse does, rather than staying in the user's sync for good.
        if !state
            .rooms
            .leave_out_of_band(user, &b.room_id, reason)
            .await?
        {
            return Err(e);
        }
    }
    Ok(leave_room::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
async fn invite_route(
    state: AppState,
    req: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(target) = &req.body.recipient else {
        // A third-party invite needs an identity server to look the address up and to store
        // the invite; this server has none. Synapse refuses the same way (403) when it may
        // not look third-party identifiers up.
        return Err(Error::forbidden(
            "Third-party invites need an identity server, and this server has none configured",
        ));
    };
    let reason = target.reason.as_deref();
    state
        .federation
        .invite(
            &state.rooms,
            &req.auth.user_id,
            &req.body.room_id,
            &target.user_id,
            reason,
        )
        .await?;
    Ok(invite_user::v3::Response::new())
}

/// A handler of one moderation endpoint: kick, ban and unban take the same body and differ
/// only in what they do.
macro_rules! moderation {
    ($(#[$doc:meta])* $name:ident, $api:ident, $action:expr) => {
        $(#[$doc])*
        async fn $name(
            state: AppState,
            req: Ruma<$api::v3::Request>,
        ) -> Result<$api::v3::Response> {
            let b = &req.body;
            state
                .rooms
                .moderate(
                    &req.auth.user_id,
                    &b.room_id,
                    &b.user_id,
                    $action,
                    b.reason.as_deref(),
                )
                .await?;
            Ok($api::v3::Response::new())
        }
    };
}

moderation!(
    /// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
    kick_route,
    kick_user,
    Moderation::Kick
);

moderation!(
    /// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
    ban_route,
    ban_user,
    Moderation::Ban
);

moderation!(
    /// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
    unban_route,
    unban_user,
    Moderation::Unban
);

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
async fn forget_route(
    state: AppState,
    req: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    state
        .rooms
        .forget(&req.auth.user_id, &req.body.room_id)
        .await?;
    Ok(forget_room::v3::Response::new())
}

/// # `GET /_matrix/client/v3/joined_rooms`
async fn joined_rooms_route(
    state: AppState,
    req: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    Ok(joined_rooms::v3::Response::new(
        state.rooms.joined_rooms(&req.auth.user_id).await?,
    ))
}

//! `PUT/GET/DELETE /directory/room/{roomAlias}`, `GET /rooms/{roomId}/aliases`,
//! `GET/PUT /directory/list/room/{roomId}`, `GET/POST /publicRooms`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#room-aliases),
//! [spec](https://spec.matrix.org/latest/client-server-api/#listing-rooms)

use axum::Router;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::room::{Visibility, aliases};
use ruma::directory::{Filter, RoomNetwork};
use ruma::{ServerName, UInt};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::directory::PublicRoomsPage;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, create_alias_route);
    let r = route(r, get_alias_route);
    let r = route(r, delete_alias_route);
    let r = route(r, aliases_route);
    let r = route(r, get_visibility_route);
    let r = route(r, set_visibility_route);
    let r = route(r, public_rooms_route);
    route(r, public_rooms_filtered_route)
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn create_alias_route(
    state: AppState,
    req: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    state
        .rooms
        .create_alias(&req.auth.user_id, &req.body.room_alias, &req.body.room_id)
        .await?;
    Ok(create_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
async fn get_alias_route(
    state: AppState,
    req: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response> {
    let alias = &req.body.room_alias;
    let (room_id, servers) = if alias.server_name() == state.keys.server_name() {
        state.rooms.resolve_alias(alias).await?
    } else {
        state.federation.remote_alias(alias).await?
    };
    Ok(get_alias::v3::Response::new(room_id, servers))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn delete_alias_route(
    state: AppState,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    state
        .rooms
        .delete_alias(&req.auth.user_id, &req.body.room_alias)
        .await?;
    Ok(delete_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn aliases_route(
    state: AppState,
    req: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    let aliases = state
        .rooms
        .local_aliases(&req.auth.user_id, &req.body.room_id)
        .await?;
    Ok(aliases::v3::Response::new(aliases))
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn get_visibility_route(
    state: AppState,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let visibility = if state.rooms.is_published(&req.body.room_id).await? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
async fn set_visibility_route(
    state: AppState,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let public = match req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        ref other => {
            return Err(Error::invalid_param(format!(
                "Unknown visibility {:?}",
                other.as_str()
            )));
        }
    };
    state
        .rooms
        .set_published(&req.auth.user_id, &req.body.room_id, public)
        .await?;
    Ok(set_room_visibility::v3::Response::new())
}

/// # `GET /_matrix/client/v3/publicRooms`
async fn public_rooms_route(
    state: AppState,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let b = req.body;
    let page = list(
        &state,
        b.server.as_deref(),
        b.limit,
        b.since.as_deref(),
        &Filter::new(),
        &RoomNetwork::Matrix,
    )
    .await?;
    let mut res = get_public_rooms::v3::Response::new(page.chunk);
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.total_room_count_estimate = Some(UInt::new_saturating(page.total));
    Ok(res)
}

/// # `POST /_matrix/client/v3/publicRooms`
async fn public_rooms_filtered_route(
    state: AppState,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let b = req.body;
    let page = list(
        &state,
        b.server.as_deref(),
        b.limit,
        b.since.as_deref(),
        &b.filter,
        &b.room_network,
    )
    .await?;
    let mut res = get_public_rooms_filtered::v3::Response::new();
    res.chunk = page.chunk;
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.total_room_count_estimate = Some(UInt::new_saturating(page.total));
    Ok(res)
}

async fn list(
    state: &AppState,
    server: Option<&ServerName>,
    limit: Option<UInt>,
    since: Option<&str>,
    filter: &Filter,
    network: &RoomNetwork,
) -> Result<PublicRoomsPage> {
    if let Some(server) = server
        && server != state.rooms.server_name()
    {
        return state
            .federation
            .remote_public_rooms(server, limit, since, filter, network)
            .await;
    }
    state
        .rooms
        .public_rooms(limit, since, filter, network)
        .await
}

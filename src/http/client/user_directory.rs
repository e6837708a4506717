//! `POST /_matrix/client/v3/user_directory/search`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3user_directorysearch)

use axum::Router;
use ruma::OwnedMxcUri;
use ruma::api::client::user_directory::search_users::v3::{Request, Response, User};

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, search_users_route)
}

/// # `POST /_matrix/client/v3/user_directory/search`
async fn search_users_route(state: AppState, req: Ruma<Request>) -> Result<Response> {
    let (found, limited) = state
        .rooms
        .search_user_directory(
            &req.auth.user_id,
            &req.body.search_term,
            u64::from(req.body.limit),
        )
        .await?;
    let results = found
        .into_iter()
        .map(|u| {
            let mut user = User::new(u.user_id);
            user.display_name = u.display_name;
            user.avatar_url = u.avatar_url.as_deref().map(OwnedMxcUri::from);
            user
        })
        .collect();
    Ok(Response::new(results, limited))
}

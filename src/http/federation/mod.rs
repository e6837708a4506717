//! Server-server API routes.

mod directory;
mod discovery;
mod events;
mod hierarchy;
mod media;
mod membership;
mod notary;
mod openid;
mod query;
pub mod transactions;
mod user_keys;

use axum::Router;

use crate::app::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = discovery::routes(r);
    let r = directory::routes(r);
    let r = notary::routes(r);
    let r = membership::routes(r);
    let r = events::routes(r);
    let r = hierarchy::routes(r);
    let r = transactions::routes(r);
    let r = query::routes(r);
    let r = media::routes(r);
    let r = openid::routes(r);
    user_keys::routes(r)
}

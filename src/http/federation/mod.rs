//! Server-server API routes.

mod directory;
mod discovery;
mod notary;
mod query;

use axum::Router;

use crate::app::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = discovery::routes(r);
    let r = directory::routes(r);
    let r = notary::routes(r);
    query::routes(r)
}

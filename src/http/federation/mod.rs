//! Server-server API routes.

mod discovery;

use axum::Router;

use crate::app::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    discovery::routes(r)
}

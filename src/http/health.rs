//! `GET /health`: whether this server can serve, for load balancers and service managers.
//! `200 OK` when the database answers, `503` with a Matrix error body when it does not
//! (down, restarting, or slower than the check allows), as Synapse's `/health` answers `OK`.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::Error;

/// How long the database has to answer before the server counts as unhealthy.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/health", axum::routing::get(health))
}

async fn health(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(CHECK_TIMEOUT, crate::db::ping(&state.db)).await {
        Ok(Ok(())) => "OK".into_response(),
        Ok(Err(e)) => Error::from(e).into_response(),
        Err(_) => Error::from(sqlx::Error::PoolTimedOut).into_response(),
    }
}

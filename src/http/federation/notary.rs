//! `GET /_matrix/key/v2/query/{serverName}` (and its older form with a key ID),
//! `POST /_matrix/key/v2/query`
//!
//! Trellis as a notary: other servers' keys as their origin signed them, countersigned.
//! [spec](https://spec.matrix.org/latest/server-server-api/#querying-keys-through-another-server)

use axum::Router;
use ruma::api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch};
use ruma::serde::Raw;
use ruma::{CanonicalJsonObject, ServerName};

use crate::account::now_ms;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, query_one_route);
    let r = r.route(
        "/_matrix/key/v2/query/{server_name}/{key_id}",
        axum::routing::get(query_one_by_key_id_route),
    );
    route(r, query_batch_route)
}

/// Most servers one batch query may ask about.
const MAX_SERVERS: usize = 100;

async fn notarised(
    state: &AppState,
    server: &ServerName,
    min_valid_until: i64,
) -> Result<Option<Raw<ruma::api::federation::discovery::ServerSigningKeys>>> {
    let obj: Option<CanonicalJsonObject> = state
        .federation
        .remote_keys
        .notarised(server, min_valid_until, &state.keys)
        .await?;
    obj.map(|o| {
        let json = serde_json::to_string(&o).map_err(|e| Error::internal(e.to_string()))?;
        Raw::from_json_string(json).map_err(|e| Error::internal(e.to_string()))
    })
    .transpose()
}

/// # `GET /_matrix/key/v2/query/{serverName}`
async fn query_one_route(
    state: AppState,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    let min = i64::try_from(u64::from(req.body.minimum_valid_until_ts.0)).unwrap_or(i64::MAX);
    let keys = notarised(&state, &req.body.server_name, min.max(now_ms())).await?;
    Ok(get_remote_server_keys::v2::Response::new(
        keys.into_iter().collect(),
    ))
}

/// What the older query form may say besides the path.
#[derive(serde::Deserialize)]
struct QueryParams {
    minimum_valid_until_ts: Option<u64>,
}

/// # `GET /_matrix/key/v2/query/{serverName}/{keyId}`
///
/// The form MSC3938 removed from the spec, still asked for by deployed servers: the
/// server's keys, whichever one is named, as Synapse answers it.
async fn query_one_by_key_id_route(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path((server_name, _key_id)): axum::extract::Path<(String, String)>,
    axum::extract::Query(params): axum::extract::Query<QueryParams>,
) -> Result<axum::Json<serde_json::Value>> {
    let server =
        ServerName::parse(&server_name).map_err(|_| Error::invalid_param("Invalid server name"))?;
    let min = params
        .minimum_valid_until_ts
        .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
    let keys = notarised(&state, &server, min.max(now_ms())).await?;
    let keys: Vec<_> = keys.into_iter().collect();
    Ok(axum::Json(serde_json::json!({ "server_keys": keys })))
}

/// # `POST /_matrix/key/v2/query`
async fn query_batch_route(
    state: AppState,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    if req.body.server_keys.len() > MAX_SERVERS {
        return Err(Error::invalid_param(format!(
            "At most {MAX_SERVERS} servers per query"
        )));
    }
    let mut out = Vec::new();
    for (server, key_ids) in &req.body.server_keys {
        let min = key_ids
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|t| i64::try_from(u64::from(t.0)).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0)
            .max(now_ms());
        if let Some(k) = notarised(&state, server, min).await? {
            out.push(k);
        }
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(out))
}

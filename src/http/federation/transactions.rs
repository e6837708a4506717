//! `PUT /_matrix/federation/v1/send/{txnId}`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv1sendtxnid)

use axum::Router;
use ruma::ServerName;
use ruma::api::federation::transactions::send_transaction_message;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

/// The spec's caps on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, send_route)
}

/// A transaction from another server: PDUs through the inbound pipeline (one result each),
/// EDUs applied. A retried transaction gets the answer it got the first time.
async fn send_route(
    state: AppState,
    req: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    let origin = &req.auth;
    let body = &req.body;
    check(origin, body)?;
    let txn_id = body.transaction_id.as_str();
    let fed = &state.federation;
    if let Some(results) = fed.seen_transaction(origin, txn_id).await? {
        return Ok(send_transaction_message::v1::Response::new(results));
    }
    let results = fed.receive_pdus(&state.rooms, origin, &body.pdus).await;
    crate::federation::edus::apply(&state.rooms, &state.ephemeral, origin, &body.edus).await;
    state.e2e.apply_edus(origin, &body.edus).await;
    fed.record_transaction(origin, txn_id, &results).await?;
    Ok(send_transaction_message::v1::Response::new(results))
}

/// What a transaction must be before any of it is looked at: sent by the server that signed
/// the request, within the spec's caps.
pub fn check(origin: &ServerName, body: &send_transaction_message::v1::Request) -> Result<()> {
    if body.origin != *origin {
        return Err(Error::forbidden(
            "Transaction origin does not match the signature",
        ));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(Error::bad_json("Too many PDUs or EDUs in one transaction"));
    }
    Ok(())
}

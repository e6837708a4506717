//! The outbound federation queue and the record of inbound transactions.

use sqlx::{PgConnection, PgExecutor};

/// The server part of a user ID column, in SQL (everything after the first ':').
pub(super) const SERVER_OF_USER: &str = "substring(user_id from position(':' in user_id) + 1)";

/// Queue an EDU (`{"edu_type", "content"}` JSON) for each destination.
pub async fn enqueue_edu(
    e: impl PgExecutor<'_>,
    destinations: &[&str],
    edu: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO federation_outbox (destination, edu) SELECT unnest($1::text[]), $2")
        .bind(destinations)
        .bind(edu)
        .execute(e)
        .await?;
    Ok(())
}

/// Servers other than `ours` that share a room with joined member `user_id` (where their
/// device list changes and presence go).
pub async fn servers_sharing_rooms(
    e: impl PgExecutor<'_>,
    user_id: &str,
    ours: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT DISTINCT {SERVER_OF_USER} FROM room_members
         WHERE membership = 'join'
           AND room_nid IN (SELECT room_nid FROM room_members WHERE user_id = $1 AND membership = 'join')
           AND {SERVER_OF_USER} <> $2"
    ))
    .bind(user_id)
    .bind(ours)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Servers other than `ours` with a joined member in the room.
pub async fn servers_in_room(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    ours: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT DISTINCT {SERVER_OF_USER} FROM room_members
         WHERE room_nid = $1 AND membership = 'join' AND {SERVER_OF_USER} <> $2"
    ))
    .bind(room_nid)
    .bind(ours)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Destinations with anything queued.
pub async fn pending_destinations(e: impl PgExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT destination FROM federation_outbox")
        .fetch_all(e)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// One queued item: a PDU's JSON (joined from `events`) or an EDU.
#[derive(Debug, sqlx::FromRow)]
pub struct Queued {
    pub position: i64,
    pub pdu: Option<String>,
    pub edu: Option<String>,
}

/// The oldest queued PDUs (up to `max_pdus`) and EDUs (up to `max_edus`) for a destination.
pub async fn next_batch(
    e: &mut PgConnection,
    destination: &str,
    max_pdus: i64,
    max_edus: i64,
) -> Result<Vec<Queued>, sqlx::Error> {
    let mut rows: Vec<Queued> = sqlx::query_as(
        "SELECT o.position, e.json AS pdu, NULL::text AS edu
         FROM federation_outbox o JOIN events e USING (event_nid)
         WHERE o.destination = $1 AND o.event_nid IS NOT NULL
         ORDER BY o.position LIMIT $2",
    )
    .bind(destination)
    .bind(max_pdus)
    .fetch_all(&mut *e)
    .await?;
    rows.extend(
        sqlx::query_as::<_, Queued>(
            "SELECT position, NULL::text AS pdu, edu FROM federation_outbox
             WHERE destination = $1 AND edu IS NOT NULL ORDER BY position LIMIT $2",
        )
        .bind(destination)
        .bind(max_edus)
        .fetch_all(&mut *e)
        .await?,
    );
    // A PDU whose event row vanished cannot be sent; it is dropped with the batch.
    rows.sort_by_key(|q| q.position);
    Ok(rows)
}

/// Remove queue rows once their transaction was answered.
pub async fn remove(e: impl PgExecutor<'_>, positions: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM federation_outbox WHERE position = ANY($1)")
        .bind(positions)
        .execute(e)
        .await?;
    Ok(())
}

/// Drop a destination's whole queue (it answered that it will never accept them).
pub async fn clear_destination(
    e: impl PgExecutor<'_>,
    destination: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM federation_outbox WHERE destination = $1")
        .bind(destination)
        .execute(e)
        .await?;
    Ok(())
}

/// The answer already given to a transaction, if it was processed.
pub async fn inbound_txn(
    e: impl PgExecutor<'_>,
    origin: &str,
    txn_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2",
    )
    .bind(origin)
    .bind(txn_id)
    .fetch_optional(e)
    .await?;
    Ok(row.map(|r| r.0))
}

pub async fn record_inbound_txn(
    e: impl PgExecutor<'_>,
    origin: &str,
    txn_id: &str,
    response: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(origin)
    .bind(txn_id)
    .bind(response)
    .bind(now_ms)
    .execute(e)
    .await?;
    Ok(())
}

/// Whether a user of `server` is joined to the room.
pub async fn server_joined(
    e: impl PgExecutor<'_>,
    room_nid: i64,
    server: &str,
) -> Result<bool, sqlx::Error> {
    let (b,): (bool,) = sqlx::query_as(&format!(
        "SELECT EXISTS (SELECT 1 FROM room_members
                        WHERE room_nid = $1 AND membership = 'join' AND {SERVER_OF_USER} = $2)"
    ))
    .bind(room_nid)
    .bind(server)
    .fetch_one(e)
    .await?;
    Ok(b)
}

//! When a redaction takes effect: marks on `events.redacted_by`, and `pending_redactions`
//! for redactions that came before what they redact.

use sqlx::PgConnection;

/// An accepted redaction stored by the current transaction, with what deciding its effect
/// needs.
pub struct NewRedaction<'a> {
    pub redaction_nid: i64,
    /// The event it names (interned, stored or not).
    pub target_nid: i64,
    pub room_nid: i64,
    /// Its sender had the redact power level in the state before it.
    pub by_power: bool,
    pub sender_server: &'a str,
}

/// In one statement, decide the redactions that this transaction makes decidable: each new
/// redaction whose target is stored, and each waiting one whose target is among `stored`
/// (taken out of the waiting list). A redaction marks its target when the target is in the
/// redaction's room and the redaction's sender had the power, or is on the server of the
/// target's sender. New redactions of events not stored yet wait. The event rows must be
/// written already. Returns how many events were marked.
pub async fn apply(
    tx: &mut PgConnection,
    new: &[NewRedaction<'_>],
    stored: &[i64],
) -> Result<u64, sqlx::Error> {
    let col = |f: fn(&NewRedaction<'_>) -> i64| new.iter().map(f).collect::<Vec<i64>>();
    let by_power: Vec<bool> = new.iter().map(|r| r.by_power).collect();
    let servers: Vec<&str> = new.iter().map(|r| r.sender_server).collect();
    let done = sqlx::query(
        "WITH r AS (
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bool[],
                                  $5::text[])
                 AS r(redaction_nid, target_nid, room_nid, by_power, sender_server)
         ),
         waiting AS (
             INSERT INTO pending_redactions
                 (target_nid, redaction_nid, room_nid, by_power, sender_server)
             SELECT target_nid, redaction_nid, room_nid, by_power, sender_server FROM r
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_nid = r.target_nid)
             ON CONFLICT DO NOTHING
         ),
         taken AS (
             DELETE FROM pending_redactions p WHERE p.target_nid = ANY($6)
             RETURNING p.redaction_nid, p.target_nid, p.room_nid, p.by_power, p.sender_server
         ),
         decided AS (SELECT * FROM r UNION ALL SELECT * FROM taken)
         UPDATE events e SET redacted_by = d.redaction_nid
         FROM decided d
         WHERE e.event_nid = d.target_nid AND e.room_nid = d.room_nid
           AND e.redacted_by IS NULL
           AND (d.by_power
                OR d.sender_server = substring(e.sender from position(':' in e.sender) + 1))",
    )
    .bind(col(|r| r.redaction_nid))
    .bind(col(|r| r.target_nid))
    .bind(col(|r| r.room_nid))
    .bind(by_power)
    .bind(servers)
    .bind(stored)
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}

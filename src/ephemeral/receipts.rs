//! Read receipts: which receipt kinds we store, and how stored rows become `m.receipt`
//! events. Storage is Postgres (`db::receipts`): unlike typing, a receipt must survive a
//! restart, since clients draw unread counts and read markers from it.

use std::collections::HashMap;

use ruma::events::receipt::ReceiptThread;
use serde_json::{Map, Value, json};

use crate::db::receipts::ReceiptRow;
use crate::error::{Error, Result};

/// A receipt type stored in the receipts table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// `m.read`: seen by every member.
    Read,
    /// `m.read.private`: seen only by its owner.
    ReadPrivate,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Read => "m.read",
            ReceiptKind::ReadPrivate => "m.read.private",
        }
    }
}

/// The stored form of a receipt's thread: '' unthreaded, 'main', or the thread root's ID.
pub fn thread_key(thread: &ReceiptThread) -> Result<String> {
    match thread {
        ReceiptThread::Unthreaded => Ok(String::new()),
        ReceiptThread::Main => Ok("main".to_owned()),
        ReceiptThread::Thread(root) => Ok(root.to_string()),
        _ => Err(Error::invalid_param(
            "thread_id must be \"main\" or an event ID",
        )),
    }
}

/// One `m.receipt` event per room, from rows of any number of rooms:
/// `{event_id: {receipt_type: {user_id: {ts, thread_id?}}}}`.
pub fn receipt_events(rows: Vec<ReceiptRow>) -> HashMap<i64, Value> {
    let mut contents: HashMap<i64, Map<String, Value>> = HashMap::new();
    for r in rows {
        let mut receipt = json!({"ts": r.ts});
        if !r.thread_id.is_empty() {
            receipt["thread_id"] = json!(r.thread_id);
        }
        let by_event = contents.entry(r.room_nid).or_default();
        let by_type = by_event
            .entry(r.event_id)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.entry(r.receipt_type).or_insert_with(|| json!({})));
        if let Some(Value::Object(users)) = by_type {
            // Rows come in stream order, so a later receipt of the same user (another
            // thread) on the same event wins, as the newest should.
            users.insert(r.user_id, receipt);
        }
    }
    contents
        .into_iter()
        .map(|(room, content)| (room, json!({"type": "m.receipt", "content": content})))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(room: i64, user: &str, kind: &str, thread: &str, event: &str) -> ReceiptRow {
        ReceiptRow {
            room_nid: room,
            user_id: user.into(),
            receipt_type: kind.into(),
            thread_id: thread.into(),
            event_id: event.into(),
            ts: 5,
        }
    }

    #[test]
    fn groups_by_room_event_type_user() {
        let events = receipt_events(vec![
            row(1, "@a:x", "m.read", "", "$e1"),
            row(1, "@b:x", "m.read", "main", "$e1"),
            row(1, "@a:x", "m.read.private", "", "$e2"),
            row(2, "@a:x", "m.read", "", "$e3"),
        ]);
        assert_eq!(events.len(), 2);
        let c = &events[&1]["content"];
        assert_eq!(c["$e1"]["m.read"]["@a:x"], json!({"ts": 5}));
        assert_eq!(
            c["$e1"]["m.read"]["@b:x"],
            json!({"ts": 5, "thread_id": "main"})
        );
        assert_eq!(c["$e2"]["m.read.private"]["@a:x"]["ts"], 5);
        assert_eq!(events[&2]["type"], "m.receipt");
    }

    #[test]
    fn thread_keys() {
        assert_eq!(thread_key(&ReceiptThread::Unthreaded).unwrap(), "");
        assert_eq!(thread_key(&ReceiptThread::Main).unwrap(), "main");
    }
}

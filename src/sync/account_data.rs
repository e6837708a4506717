//! Account data as both syncs hand it out: `/v3/sync` and sliding sync's `account_data`
//! extension read it here, so they agree on what a client starting from nothing receives.

use ruma::UserId;
use serde_json::Value;

use crate::account::{PUSH_RULES, default_push_rules_content};
use crate::db;
use crate::error::Result;

/// One piece of account data, as an event ready for a sync response.
pub(crate) struct AccountDataEntry {
    /// Empty for global account data.
    pub room_id: String,
    /// `{"type": ..., "content": ...}`.
    pub event: Value,
    /// Its position in the user's account data stream (0 for the push rule defaults, which
    /// are stored nowhere).
    pub stream: i64,
}

/// The user's account data written after position `after`, oldest first. With `whole` (a
/// sync from nothing: initial, full state, a new sliding sync connection) it is all of it,
/// and `m.push_rules` is there even when the user never changed a rule: clients compute
/// notifications from it, so they get the server defaults, as from Synapse. A later sync
/// sends push rules again only once a change stores them.
pub(crate) async fn account_data_since(
    db: &db::lease::Leases,
    user: &UserId,
    after: i64,
    whole: bool,
) -> Result<Vec<AccountDataEntry>> {
    let after = if whole { 0 } else { after };
    let mut out: Vec<AccountDataEntry> = db::sync::account_data_since(db, user.as_str(), after)
        .await?
        .into_iter()
        .map(|(room_id, kind, content, stream)| {
            let content: Value = serde_json::from_str(&content).unwrap_or(Value::Null);
            AccountDataEntry {
                room_id,
                event: serde_json::json!({"type": kind, "content": content}),
                stream,
            }
        })
        .collect();
    let has_push_rules = || {
        out.iter()
            .any(|e| e.room_id.is_empty() && e.event["type"] == PUSH_RULES)
    };
    if whole && !has_push_rules() {
        out.push(AccountDataEntry {
            room_id: String::new(),
            event: serde_json::json!({
                "type": PUSH_RULES,
                "content": default_push_rules_content(user)?,
            }),
            stream: 0,
        });
    }
    Ok(out)
}

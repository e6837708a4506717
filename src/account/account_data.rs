//! A user's account data (global and per room), tags, push rules and stored sync filters.

use ruma::UserId;

use super::Accounts;
use crate::db;
use crate::error::{Error, Result};
use crate::notify::Kinds;

/// Account data and push rules (push rules live in account data as `m.push_rules`, which is
/// also how /sync delivers them).
impl Accounts {
    pub async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&ruma::RoomId>,
        data_type: &str,
    ) -> Result<Option<Box<serde_json::value::RawValue>>> {
        let room = room_id.map_or(db::account_data::GLOBAL, |r| r.as_str());
        Ok(db::account_data::get(&self.db, user_id.as_str(), room, data_type).await?)
    }

    pub async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&ruma::RoomId>,
        data_type: &str,
        content: &serde_json::value::RawValue,
    ) -> Result<()> {
        if !content.get().trim_start().starts_with('{') {
            return Err(Error::bad_json(
                "Account data content must be a JSON object",
            ));
        }
        let room = room_id.map_or(db::account_data::GLOBAL, |r| r.as_str());
        self.put_account_data(user_id, room, data_type, content)
            .await?;
        if data_type == PUSH_RULES {
            self.push.bump();
        }
        self.notifier.publish_user(user_id, Kinds::ACCOUNT_DATA);
        Ok(())
    }

    /// The users `user_id` ignores (`m.ignored_user_list`), whose events their reads leave out.
    pub async fn ignored_users(&self, user_id: &UserId) -> Result<Vec<String>> {
        Ok(db::account_data::ignored_users(&self.db, user_id.as_str()).await?)
    }

    /// The user's tags on a room (`m.tag` room account data): tag name to its content.
    pub async fn tags(
        &self,
        user_id: &UserId,
        room_id: &ruma::RoomId,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let stored = self.account_data(user_id, Some(room_id), TAGS).await?;
        Ok(stored
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
            .and_then(
                |mut v| match v.get_mut("tags").map(serde_json::Value::take) {
                    Some(serde_json::Value::Object(tags)) => Some(tags),
                    _ => None,
                },
            )
            .unwrap_or_default())
    }

    /// Tag a room (`Some` content, a JSON object, `order` a number in [0, 1] if given) or
    /// remove a tag (`None`); /sync delivers the room's `m.tag` account data afterwards.
    pub async fn change_tag(
        &self,
        user_id: &UserId,
        room_id: &ruma::RoomId,
        tag: &str,
        content: Option<&serde_json::value::RawValue>,
    ) -> Result<()> {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(Error::invalid_param(format!(
                "A tag is 1 to {MAX_TAG_LEN} bytes"
            )));
        }
        if let Some(c) = content {
            let value: serde_json::Value = serde_json::from_str(c.get())
                .map_err(|e| Error::bad_json(format!("Tag content: {e}")))?;
            let Some(object) = value.as_object() else {
                return Err(Error::bad_json("Tag content must be a JSON object"));
            };
            if let Some(order) = object.get("order")
                && !order.as_f64().is_some_and(|o| (0.0..=1.0).contains(&o))
            {
                return Err(Error::bad_json("A tag's order is a number from 0 to 1"));
            }
        }
        // Under the user's stream lock, as every account data write (see
        // `put_account_data`): a sync never moves past a position not yet committed.
        let mut tx = db::begin(&self.db).await?;
        db::account_data::lock_user_stream(&mut *tx, user_id.as_str()).await?;
        db::account_data::change_tag(&mut *tx, user_id.as_str(), room_id.as_str(), tag, content)
            .await?;
        tx.commit().await?;
        self.notifier.publish_user(user_id, Kinds::ACCOUNT_DATA);
        Ok(())
    }

    /// The user's push rules: what they stored, or the server defaults.
    pub async fn push_rules(&self, user_id: &UserId) -> Result<ruma::push::Ruleset> {
        let stored = self.account_data(user_id, None, PUSH_RULES).await?;
        if let Some(raw) = stored
            && let Ok(content) = serde_json::from_str::<PushRulesContent>(raw.get())
        {
            return Ok(content.global);
        }
        Ok(ruma::push::Ruleset::server_default(user_id))
    }

    pub async fn set_push_rules(
        &self,
        user_id: &UserId,
        global: ruma::push::Ruleset,
    ) -> Result<()> {
        let json = serde_json::value::to_raw_value(&PushRulesContent { global })
            .map_err(|e| Error::internal(format!("push rules: {e}")))?;
        self.put_account_data(user_id, db::account_data::GLOBAL, PUSH_RULES, &json)
            .await?;
        self.push.bump();
        self.notifier.publish_user(user_id, Kinds::ACCOUNT_DATA);
        Ok(())
    }

    /// Write one piece of account data under the user's stream lock, in a transaction of
    /// its own, so it commits before any later write of the user takes a position.
    async fn put_account_data(
        &self,
        user_id: &UserId,
        room: &str,
        data_type: &str,
        content: &serde_json::value::RawValue,
    ) -> Result<()> {
        let mut tx = db::begin(&self.db).await?;
        db::account_data::lock_user_stream(&mut *tx, user_id.as_str()).await?;
        db::account_data::put(&mut *tx, user_id.as_str(), room, data_type, content).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Store a sync filter; returns its ID.
    pub async fn create_filter(&self, user_id: &UserId, filter_json: &str) -> Result<String> {
        Ok(db::filters::insert(&self.db, user_id.as_str(), filter_json)
            .await?
            .to_string())
    }

    pub async fn filter(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> Result<Box<serde_json::value::RawValue>> {
        let not_found = || Error::not_found("No such filter");
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        db::filters::get(&self.db, user_id.as_str(), id)
            .await?
            .ok_or_else(not_found)
    }
}

/// The account data type push rules are stored under.
pub const PUSH_RULES: &str = "m.push_rules";
/// The room account data type that holds a user's tags on a room.
pub const TAGS: &str = "m.tag";
/// The longest tag name, in bytes.
const MAX_TAG_LEN: usize = 255;

#[derive(serde::Serialize, serde::Deserialize)]
struct PushRulesContent {
    global: ruma::push::Ruleset,
}

/// The `m.push_rules` account data content of a user who never changed a rule: the server
/// default ruleset. It is stored nowhere (a stored copy would freeze the defaults of the day
/// it was written), so whoever hands out account data adds it where the user has none.
pub fn default_push_rules_content(user_id: &UserId) -> Result<serde_json::Value> {
    serde_json::to_value(PushRulesContent {
        global: ruma::push::Ruleset::server_default(user_id),
    })
    .map_err(|e| Error::internal(format!("default push rules: {e}")))
}

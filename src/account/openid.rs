//! OpenID tokens: a user asks for one (`/user/{userId}/openid/request_token`) and hands it
//! to a third party (an integration manager, a widget), which asks us who it stands for
//! (`/_matrix/federation/v1/openid/userinfo`). Tokens live an hour and are kept as hashes.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use super::tokens::{hash_token, new_access_token};
use super::{Accounts, now_ms};
use crate::db;
use crate::error::{Error, Result};

/// How long an OpenID token is good for, as Synapse.
pub const OPENID_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

impl Accounts {
    /// A new OpenID token for `user`, and how long it lives.
    pub async fn openid_token(&self, user: &UserId) -> Result<(String, Duration)> {
        let token = new_access_token();
        let now = now_ms();
        let lifetime = i64::try_from(OPENID_TOKEN_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        db::openid::insert(
            &self.db,
            &hash_token(&token),
            user.as_str(),
            now.saturating_add(lifetime),
            now,
        )
        .await?;
        Ok((token, OPENID_TOKEN_LIFETIME))
    }

    /// The user an OpenID token stands for; 401 `M_UNKNOWN_TOKEN` for an unknown or expired
    /// one.
    pub async fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        let user = db::openid::user_of(&self.db, &hash_token(token), now_ms())
            .await?
            .ok_or_else(Error::unknown_token)?;
        OwnedUserId::try_from(user)
            .map_err(|e| Error::internal(format!("stored OpenID user invalid: {e}")))
    }
}

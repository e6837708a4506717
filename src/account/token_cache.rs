//! Recently seen access tokens, so that most requests skip the token lookup in Postgres.
//!
//! Every way a token stops being valid in this process (logout, device removal,
//! deactivation, password change with logout) drops the user's entries here first. Entries
//! also expire, which bounds how long another process sharing the database could see a token
//! it revoked still accepted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::UserId;

use super::AuthedUser;

/// How long a token is trusted without asking the database again.
const TTL: Duration = Duration::from_secs(60);
/// Most tokens remembered; past it the cache starts again empty.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// The token's user, when the entry was made, when the token expires (ms since the epoch).
type Entry = (AuthedUser, Instant, Option<i64>);

impl TokenCache {
    /// The token's user, if remembered and not expired at `now_ms`.
    pub fn get(&self, hash: &[u8; 32], now_ms: i64) -> Option<AuthedUser> {
        let mut entries = self.entries.lock();
        match entries.get(hash) {
            Some((user, at, expires))
                if at.elapsed() < TTL && expires.is_none_or(|t| now_ms < t) =>
            {
                Some(user.clone())
            }
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, hash: [u8; 32], user: AuthedUser, expires_ts: Option<i64>) {
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(hash, (user, Instant::now(), expires_ts));
    }

    /// Forget every token of `user_id` (some of them were revoked).
    pub fn forget_user(&self, user_id: &UserId) {
        self.entries
            .lock()
            .retain(|_, (u, _, _)| u.user_id != user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> AuthedUser {
        AuthedUser {
            user_id: UserId::parse(id).unwrap(),
            device_id: "DEV".into(),
            is_guest: false,
        }
    }

    #[test]
    fn remembers_and_forgets_per_user() {
        let cache = TokenCache::default();
        cache.insert([1; 32], user("@a:x"), None);
        cache.insert([2; 32], user("@a:x"), None);
        cache.insert([3; 32], user("@b:x"), None);
        assert_eq!(cache.get(&[1; 32], 0).unwrap().user_id, "@a:x");
        cache.forget_user(&UserId::parse("@a:x").unwrap());
        assert!(cache.get(&[1; 32], 0).is_none());
        assert!(cache.get(&[2; 32], 0).is_none());
        assert_eq!(cache.get(&[3; 32], 0).unwrap().user_id, "@b:x");
    }

    #[test]
    fn expired_tokens_are_not_answered() {
        let cache = TokenCache::default();
        cache.insert([1; 32], user("@a:x"), Some(1_000));
        assert!(cache.get(&[1; 32], 999).is_some());
        assert!(cache.get(&[1; 32], 1_000).is_none());
    }
}

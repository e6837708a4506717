//! The user directory (`POST /user_directory/search`): users who share a room with the
//! searcher or are joined to a public room, found by word prefixes of their user ID and
//! display name, as Synapse does. Nothing is kept for it beyond indexes: membership and
//! profiles are read where the append path and the profile endpoints keep them, so a join, a
//! display name change or a deactivation shows at once.

use ruma::{OwnedUserId, UserId};

use super::Rooms;
use crate::db;
use crate::error::{Error, Result};

/// Results when the client names no limit is ruma's default (10); the most one answer holds.
pub const MAX_LIMIT: u64 = 50;
/// The longest search term accepted, in bytes.
pub const MAX_TERM_LEN: usize = 1000;
/// Words of a term beyond this many are not searched for.
const MAX_WORDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

impl Rooms {
    /// Users `searcher` may find whose user ID or display name has a word starting with each
    /// word of `term`, best first, at most `limit`; and whether more were found.
    pub async fn search_user_directory(
        &self,
        searcher: &UserId,
        term: &str,
        limit: u64,
    ) -> Result<(Vec<DirectoryUser>, bool)> {
        if term.len() > MAX_TERM_LEN {
            return Err(Error::invalid_param(format!(
                "search_term may hold at most {MAX_TERM_LEN} bytes"
            )));
        }
        let Some(query) = prefix_query(term) else {
            return Ok((Vec::new(), false));
        };
        let limit = limit.clamp(1, MAX_LIMIT) as usize;
        let rows =
            db::user_directory::search(self.db(), searcher.as_str(), &query, limit as i64 + 1)
                .await?;
        let mut limited = rows.len() > limit || rows.first().is_some_and(|r| r.capped);
        let mut users = Vec::with_capacity(limit);
        for row in rows.into_iter().take(limit) {
            // A remote member event may name anything as its state key; skip what is no user.
            let Ok(user_id) = OwnedUserId::try_from(row.user_id) else {
                limited = true;
                continue;
            };
            let present = |s: Option<String>| s.filter(|s| !s.is_empty());
            users.push(DirectoryUser {
                user_id,
                display_name: present(row.displayname),
                avatar_url: present(row.avatar_url),
            });
        }
        Ok((users, limited))
    }
}

/// The term as a `to_tsquery('simple', …)` text: each word (a run of letters and digits,
/// as the index splits user IDs and display names) a prefix, all required. `None` when the
/// term holds no word.
fn prefix_query(term: &str) -> Option<String> {
    let words: Vec<String> = term
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_WORDS)
        .map(|w| format!("'{}':*", w.replace('\\', "\\\\").replace('\'', "''")))
        .collect();
    (!words.is_empty()).then(|| words.join(" & "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_become_prefix_queries() {
        assert_eq!(prefix_query("ali"), Some("'ali':*".to_owned()));
        assert_eq!(
            prefix_query("@alice.smith:example.org"),
            Some("'alice':* & 'smith':* & 'example':* & 'org':*".to_owned())
        );
        assert_eq!(
            prefix_query("  Zoë  O'Brien "),
            Some("'Zoë':* & 'O':* & 'Brien':*".to_owned())
        );
        assert_eq!(prefix_query(" .:@ "), None);
        assert_eq!(prefix_query(""), None);
        let many = "a ".repeat(40);
        assert_eq!(
            prefix_query(&many).map(|q| q.matches('&').count()),
            Some(MAX_WORDS - 1)
        );
    }
}

//! Sync tokens: `s<events>_<account_data>`, positions in each stream. Opaque to clients,
//! parsed strictly.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncToken {
    pub events: i64,
    pub account_data: i64,
}

impl SyncToken {
    pub fn parse(s: &str) -> Result<SyncToken> {
        let bad = || Error::invalid_param(format!("Invalid sync token {s:?}"));
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let mut parts = rest.split('_');
        let (Some(e), Some(a), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let events: i64 = e.parse().map_err(|_| bad())?;
        let account_data: i64 = a.parse().map_err(|_| bad())?;
        if events < 0 || account_data < 0 {
            return Err(bad());
        }
        Ok(SyncToken {
            events,
            account_data,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}", self.events, self.account_data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let t = SyncToken {
            events: 42,
            account_data: 7,
        };
        assert_eq!(SyncToken::parse(&t.to_string()).unwrap(), t);
        for bad in [
            "", "s", "s1", "s1_", "s1_2_3", "t1_2", "s-1_2", "sa_b", "s1_2 ",
        ] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}

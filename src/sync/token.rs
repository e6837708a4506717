//! Sync tokens: `s<events>_<account_data>_<to_device>_<device_lists>_<typing>_<receipts>_<presence>`,
//! positions in each stream. Opaque to clients, parsed strictly.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncToken {
    pub events: i64,
    pub account_data: i64,
    /// The last to-device message handed to the syncing device; a later sync with this
    /// token acknowledges (deletes) everything up to it.
    pub to_device: i64,
    /// Position in the device-list (key change) stream.
    pub device_lists: i64,
    /// Serial of the in-memory typing sets.
    pub typing: i64,
    /// Position in the receipts stream.
    pub receipts: i64,
    /// Serial of the in-memory presence map.
    pub presence: i64,
}

impl SyncToken {
    pub fn parse(s: &str) -> Result<SyncToken> {
        let bad = || Error::invalid_param(format!("Invalid sync token {s:?}"));
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let mut parts = rest.split('_');
        // Digits only: `str::parse` would also take a sign.
        let mut next = || -> Result<i64> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let token = SyncToken {
            events: next()?,
            account_data: next()?,
            to_device: next()?,
            device_lists: next()?,
            typing: next()?,
            receipts: next()?,
            presence: next()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(token)
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.account_data,
            self.to_device,
            self.device_lists,
            self.typing,
            self.receipts,
            self.presence
        )
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
            to_device: 3,
            device_lists: 9,
            typing: 5,
            receipts: 11,
            presence: 2,
        };
        assert_eq!(t.to_string(), "s42_7_3_9_5_11_2");
        assert_eq!(SyncToken::parse(&t.to_string()).unwrap(), t);
        for bad in [
            "",
            "s",
            "s1",
            "s1_",
            "s1_2",
            "s1_2_3",
            "s1_2_3_",
            "s1_2_3_4",
            "s1_2_3_4_5_6",
            "s1_2_3_4_5_6_",
            "s1_2_3_4_5_6_7_8",
            "t1_2_3_4_5_6_7",
            "s-1_2_3_4_5_6_7",
            "s1_2_3_4_5_6_-7",
            "sa_b_c_d_e_f_g",
            "s1_2_3_4_5_6_7 ",
            "s+1_2_3_4_5_6_7",
            "s1_2_3_4__6_7",
        ] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}

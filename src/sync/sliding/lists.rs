//! Lists: the user's rooms a list's filters keep, most recent first (by bump stamp), and
//! the part of them its ranges cover.

use super::request::ListFilters;

/// A room as the lists see it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub room_nid: i64,
    pub room_id: String,
    pub bump_stamp: i64,
    pub is_dm: bool,
    /// Invited (or knocking): not joined yet.
    pub is_invite: bool,
    pub encrypted: bool,
    pub room_type: Option<String>,
}

impl ListFilters {
    pub fn keeps(&self, c: &Candidate) -> bool {
        self.is_dm.is_none_or(|want| want == c.is_dm)
            && self.is_invite.is_none_or(|want| want == c.is_invite)
            && self.is_encrypted.is_none_or(|want| want == c.encrypted)
            && (self.room_types.is_empty() || self.room_types.contains(&c.room_type))
            && !self.not_room_types.contains(&c.room_type)
    }
}

/// Sort the candidates by recency: highest bump stamp first, ties by room ID so the order
/// is stable from one request to the next.
pub fn sort_by_recency(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        b.bump_stamp
            .cmp(&a.bump_stamp)
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
}

/// The list over `sorted` candidates: how many the filters keep, and the rooms within the
/// ranges (inclusive, overlapping ranges naming a room once), in list order.
pub fn select(
    sorted: &[Candidate],
    filters: &ListFilters,
    ranges: &[(u64, u64)],
) -> (u64, Vec<i64>) {
    let kept: Vec<&Candidate> = sorted.iter().filter(|c| filters.keeps(c)).collect();
    let in_range = |i: usize| {
        let i = i as u64;
        ranges.iter().any(|(a, b)| *a <= i && i <= *b)
    };
    let rooms = kept
        .iter()
        .enumerate()
        .filter(|(i, _)| in_range(*i))
        .map(|(_, c)| c.room_nid)
        .collect();
    (kept.len() as u64, rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(nid: i64, bump: i64) -> Candidate {
        Candidate {
            room_nid: nid,
            room_id: format!("!{nid}:x"),
            bump_stamp: bump,
            is_dm: nid % 2 == 0,
            is_invite: false,
            encrypted: false,
            room_type: None,
        }
    }

    #[test]
    fn most_recent_first_within_ranges() {
        let mut rooms = vec![room(1, 10), room(2, 30), room(3, 20), room(4, 5)];
        sort_by_recency(&mut rooms);
        let all = ListFilters::default();
        assert_eq!(select(&rooms, &all, &[(0, 1)]), (4, vec![2, 3]));
        assert_eq!(select(&rooms, &all, &[(1, 1), (3, 9)]), (4, vec![3, 4]));
        assert_eq!(
            select(&rooms, &all, &[(0, 2), (1, 3)]),
            (4, vec![2, 3, 1, 4])
        );
        let dms = ListFilters {
            is_dm: Some(true),
            ..Default::default()
        };
        assert_eq!(select(&rooms, &dms, &[(0, 0)]), (2, vec![2]));
    }

    #[test]
    fn room_type_filters() {
        let mut space = room(1, 1);
        space.room_type = Some("m.space".into());
        let plain = room(3, 2);
        let no_spaces = ListFilters {
            not_room_types: vec![Some("m.space".into())],
            ..Default::default()
        };
        assert!(!no_spaces.keeps(&space));
        assert!(no_spaces.keeps(&plain));
        let only_plain = ListFilters {
            room_types: vec![None],
            ..Default::default()
        };
        assert!(only_plain.keeps(&plain));
        assert!(!only_plain.keeps(&space));
    }
}

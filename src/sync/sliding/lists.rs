//! Lists: the user's rooms a list's filters keep, most recent first (by bump stamp), and
//! the part of them its ranges cover.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedRoomId, RoomId};

use super::request::ListFilters;

/// The children of the spaces lists filter by: each joined space named by a `spaces`
/// filter, with the rooms it names as children.
pub type SpaceChildren = HashMap<OwnedRoomId, HashSet<OwnedRoomId>>;

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
    pub fn keeps(&self, c: &Candidate, children: &SpaceChildren) -> bool {
        let in_spaces = |spaces: &Vec<OwnedRoomId>| {
            let Ok(room_id) = <&RoomId>::try_from(c.room_id.as_str()) else {
                return false;
            };
            spaces
                .iter()
                .any(|s| children.get(s).is_some_and(|kids| kids.contains(room_id)))
        };
        self.is_dm.is_none_or(|want| want == c.is_dm)
            && self.is_invite.is_none_or(|want| want == c.is_invite)
            && self.is_encrypted.is_none_or(|want| want == c.encrypted)
            && (self.room_types.is_empty() || self.room_types.contains(&c.room_type))
            && !self.not_room_types.contains(&c.room_type)
            && self.spaces.as_ref().is_none_or(in_spaces)
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
    children: &SpaceChildren,
) -> (u64, Vec<i64>) {
    let kept: Vec<&Candidate> = sorted
        .iter()
        .filter(|c| filters.keeps(c, children))
        .collect();
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
        let none = SpaceChildren::new();
        let all = ListFilters::default();
        assert_eq!(select(&rooms, &all, &[(0, 1)], &none), (4, vec![2, 3]));
        assert_eq!(
            select(&rooms, &all, &[(1, 1), (3, 9)], &none),
            (4, vec![3, 4])
        );
        assert_eq!(
            select(&rooms, &all, &[(0, 2), (1, 3)], &none),
            (4, vec![2, 3, 1, 4])
        );
        let dms = ListFilters {
            is_dm: Some(true),
            ..Default::default()
        };
        assert_eq!(select(&rooms, &dms, &[(0, 0)], &none), (2, vec![2]));
    }

    #[test]
    fn room_type_filters() {
        let none = SpaceChildren::new();
        let mut space = room(1, 1);
        space.room_type = Some("m.space".into());
        let plain = room(3, 2);
        let no_spaces = ListFilters {
            not_room_types: vec![Some("m.space".into())],
            ..Default::default()
        };
        assert!(!no_spaces.keeps(&space, &none));
        assert!(no_spaces.keeps(&plain, &none));
        let only_plain = ListFilters {
            room_types: vec![None],
            ..Default::default()
        };
        assert!(only_plain.keeps(&plain, &none));
        assert!(!only_plain.keeps(&space, &none));
    }

    #[test]
    fn space_filters_keep_the_children_of_the_spaces_named() {
        let id = |s: &str| OwnedRoomId::try_from(s).expect("room id");
        let children = SpaceChildren::from([
            (id("!s1:x"), HashSet::from([id("!1:x"), id("!2:x")])),
            (id("!s2:x"), HashSet::from([id("!3:x")])),
        ]);
        let mut rooms = vec![room(1, 1), room(2, 2), room(3, 3), room(4, 4)];
        sort_by_recency(&mut rooms);
        let filter = |spaces: Vec<OwnedRoomId>| ListFilters {
            spaces: Some(spaces),
            ..Default::default()
        };
        let all = [(0, 99)];
        assert_eq!(
            select(&rooms, &filter(vec![id("!s1:x")]), &all, &children),
            (2, vec![2, 1])
        );
        assert_eq!(
            select(
                &rooms,
                &filter(vec![id("!s1:x"), id("!s2:x")]),
                &all,
                &children
            ),
            (3, vec![3, 2, 1])
        );
        // A space not among the joined ones has no children; an empty list keeps nothing.
        assert_eq!(
            select(&rooms, &filter(vec![id("!s3:x")]), &all, &children),
            (0, vec![])
        );
        assert_eq!(
            select(&rooms, &filter(vec![]), &all, &children),
            (0, vec![])
        );
        // Without the filter, every room.
        assert_eq!(
            select(&rooms, &ListFilters::default(), &all, &children).0,
            4
        );
    }
}

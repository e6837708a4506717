//! The pagination overview the seed's sync design asks for: for a snapshot of a room, the
//! `from` token of every page of N events passing a filter, oldest page first, so a
//! forum-style client can show "page X of Y" and jump to any page with /messages.

use ruma::{RoomId, UserId};

use super::Rooms;
use super::timeline::{EventFilter, TopoToken};
use crate::db;
use crate::error::{Error, Result};

/// Largest page size, as for /messages.
pub const MAX_PER_PAGE: i64 = 1000;
/// Rows read per batch while walking the room.
const BATCH: i64 = 1000;

pub struct PageIndex {
    /// `from` tokens for `/messages?dir=f&limit=per_page`, oldest page first.
    pub pages: Vec<TopoToken>,
    /// Events passing the filter (and visible to the caller) in the snapshot.
    pub total: u64,
}

impl Rooms {
    /// Walk the room once, oldest first, applying history visibility and `filter` exactly as
    /// /messages does, and note where every page starts. The snapshot ends at the newest event
    /// when the call starts, so later events only ever extend the last page.
    pub async fn page_index(
        &self,
        user: &UserId,
        room_id: &RoomId,
        per_page: i64,
        filter: &EventFilter,
    ) -> Result<PageIndex> {
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(Error::invalid_param(format!(
                "per_page must be 1 to {MAX_PER_PAGE}"
            )));
        }
        let room = self.room(room_id).await?;
        self.check_can_read(&room, user).await?;
        let end =
            db::events::timeline_page(self.db(), room.room_nid, (i64::MAX, i64::MAX), false, 1)
                .await?
                .first()
                .map(TopoToken::of);
        let Some(end) = end else {
            return Ok(PageIndex {
                pages: Vec::new(),
                total: 0,
            });
        };

        let mut pages = Vec::new();
        let mut total: u64 = 0;
        let mut cursor = TopoToken::START;
        let mut previous = TopoToken::START;
        'walk: loop {
            let rows = db::events::timeline_page(
                self.db(),
                room.room_nid,
                (cursor.depth, cursor.stream),
                true,
                BATCH,
            )
            .await?;
            let exhausted = (rows.len() as i64) < BATCH;
            let Some(last) = rows.last() else { break };
            cursor = TopoToken::of(last);
            let visible = self.filter_visible(&room, user, rows).await?;
            let client = self.to_client(&room, &visible).await?;
            for (row, ev) in visible.iter().zip(client) {
                let at = TopoToken::of(row);
                if (at.depth, at.stream) > (end.depth, end.stream) {
                    break 'walk;
                }
                if filter.matches(row, &ev) {
                    if total.is_multiple_of(per_page as u64) {
                        pages.push(previous);
                    }
                    total += 1;
                    previous = at;
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(PageIndex { pages, total })
    }
}

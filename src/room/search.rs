//! Server-side search over room events (`POST /search`).
//!
//! A search reads the rooms the user may search (joined, or left and not forgotten, up to
//! the departure), asks the search index for the matches in them (`db::search`), then
//! keeps what history visibility lets the user see, exactly as `/messages` does, so a page
//! is:
//! 1. the rooms searched: the user's, narrowed by the filter and by the group a `next_batch`
//!    names;
//! 2. a chunk of matches after the `next_batch` position, in rank or recent order (the
//!    first chunk also counts every match);
//! 3. the chunk's visible events; while the page is short and matches remain, a further
//!    chunk (twice as large, at most [`MAX_ROUNDS`] chunks);
//! 4. the words matched (`highlights`), the context of each result when asked, groups and
//!    the rooms' state.
//!
//! `next_batch` is the position of the last result returned (or of the last match read when
//! the rounds ran out), so a page never repeats or skips a result whatever arrives meanwhile:
//! recent order continues below a stream position; rank order below a (rank, position) pair,
//! among the events that existed when the first page was read (the token keeps that bound).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::Rooms;
use super::reads::Around;
use super::timeline::{EventFilter, parse_event_id};
use crate::db::{self, rooms::RoomRow, search::After, search::Hit};
use crate::error::{Error, Result};

/// Results per page when the filter names no limit, and the most one page returns.
pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 100;
/// The most context events returned on each side of a result.
pub const MAX_CONTEXT: u64 = 20;
/// The longest search term accepted, in bytes.
pub const MAX_TERM_LEN: usize = 1000;
/// Chunks of matches read for one page before it is returned short (with a `next_batch`).
const MAX_ROUNDS: u32 = 8;
/// The largest chunk of matches read at once.
const MAX_CHUNK: i64 = 1000;

/// The event keys a search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `content.body` of `m.room.message`.
    Body,
    /// `content.name` of `m.room.name`.
    Name,
    /// `content.topic` of `m.room.topic`.
    Topic,
}

impl Key {
    pub const ALL: [Key; 3] = [Key::Body, Key::Name, Key::Topic];

    fn event_type(self) -> &'static str {
        match self {
            Key::Body => "m.room.message",
            Key::Name => "m.room.name",
            Key::Topic => "m.room.topic",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Key::Body => "body",
            Key::Name => "name",
            Key::Topic => "topic",
        }
    }

    fn of_type(event_type: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.event_type() == event_type)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Rank,
    Recent,
}

/// A group of results: one room's, or one sender's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Room(OwnedRoomId),
    Sender(OwnedUserId),
}

/// Context asked for around each result.
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    pub before: u64,
    pub after: u64,
    /// Also the senders' profiles as of the context's last event.
    pub profile: bool,
}

/// One search, as the client asked it.
#[derive(Debug, Clone)]
pub struct Search {
    pub term: String,
    pub keys: Vec<Key>,
    pub rooms: Option<Vec<OwnedRoomId>>,
    pub not_rooms: Vec<OwnedRoomId>,
    /// Senders, types and `contains_url` of the filter.
    pub filter: EventFilter,
    pub limit: u64,
    pub order: Order,
    pub context: Option<ContextLimits>,
    pub include_state: bool,
    pub group_by_room: bool,
    pub group_by_sender: bool,
    pub next_batch: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// The events around a result, in client format.
#[derive(Debug, Clone)]
pub struct FoundContext {
    /// Newest first.
    pub before: Vec<Value>,
    /// Oldest first.
    pub after: Vec<Value>,
    pub start: String,
    pub end: String,
    /// The senders' profiles, when asked.
    pub profiles: BTreeMap<OwnedUserId, Profile>,
}

#[derive(Debug, Clone)]
pub struct Found {
    pub event: Value,
    pub rank: f64,
    pub context: Option<FoundContext>,
}

/// The results of one group on a page.
#[derive(Debug, Clone)]
pub struct GroupPage {
    pub results: Vec<OwnedEventId>,
    /// Where the group's first result stands on the page (1 for the first result).
    pub order: u64,
    /// Continues this group alone.
    pub next_batch: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// Matches in the rooms searched (before history visibility is applied, so approximate).
    pub count: u64,
    pub results: Vec<Found>,
    pub next_batch: Option<String>,
    pub highlights: Vec<String>,
    /// The current state of each room of the results (as of leaving, for a room left).
    pub state: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub by_room: Option<BTreeMap<OwnedRoomId, GroupPage>>,
    pub by_sender: Option<BTreeMap<OwnedUserId, GroupPage>>,
}

impl Rooms {
    /// One page of search results for `user`.
    pub async fn search(&self, user: &UserId, s: &Search) -> Result<SearchPage> {
        let term = s.term.trim();
        if term.is_empty() {
            return Err(Error::invalid_param("search_term must not be empty"));
        }
        if term.len() > MAX_TERM_LEN {
            return Err(Error::invalid_param(format!(
                "search_term may hold at most {MAX_TERM_LEN} bytes"
            )));
        }
        let token = s.next_batch.as_deref().map(Token::parse).transpose()?;
        if token.as_ref().is_some_and(|t| t.order() != s.order) {
            return Err(Error::invalid_param(
                "next_batch was given for another order_by",
            ));
        }
        let group = token.as_ref().and_then(|t| t.group.clone());
        let rooms = self.rooms_to_search(user, s, group.as_ref()).await?;
        let senders: Option<Vec<String>> = match (&group, &s.filter.senders) {
            (Some(Group::Sender(g)), Some(senders)) => {
                Some(senders.iter().filter(|x| *x == g).cloned().collect())
            }
            (Some(Group::Sender(g)), None) => Some(vec![g.to_string()]),
            (_, senders) => senders.clone(),
        };
        let types: Vec<&str> = s.keys.iter().map(|k| k.event_type()).collect();
        let type_patterns = s.filter.types.as_deref().map(EventFilter::like_patterns);
        let not_type_patterns = EventFilter::like_patterns(&s.filter.not_types);
        let upto = match &token {
            Some(t) => t.upto,
            None => self.stream().safe_position(),
        };
        let nids: Vec<i64> = rooms.iter().map(|r| r.room.room_nid).collect();
        let until: Vec<Option<i64>> = rooms.iter().map(|r| r.until).collect();
        let by_nid: HashMap<i64, &RoomRow> =
            rooms.iter().map(|r| (r.room.room_nid, &r.room)).collect();
        let limit = s.limit.clamp(1, MAX_LIMIT) as usize;
        let query = db::search::EventSearch {
            term,
            rooms: &nids,
            until: &until,
            types: &types,
            senders: senders.as_deref(),
            not_senders: &s.filter.not_senders,
            type_patterns: type_patterns.as_deref(),
            not_type_patterns: &not_type_patterns,
            contains_url: s.filter.contains_url,
            upto,
            by_rank: s.order == Order::Rank,
            after: token.as_ref().map(|t| t.after),
            limit: limit as i64 + 1,
            count: true,
        };
        let (page, count, next) = match nids.is_empty() || types.is_empty() {
            true => (Vec::new(), 0, None),
            false => self.collect(user, &by_nid, query, limit).await?,
        };
        let next_token = |group: Option<Group>| {
            next.map(|after| {
                Token {
                    by_rank: s.order == Order::Rank,
                    upto,
                    after,
                    group,
                }
                .encode()
            })
        };

        let results = self.found(user, &by_nid, &page, s.context).await?;
        let highlights = self.highlights(term, &results).await?;

        let mut out = SearchPage {
            count,
            highlights,
            next_batch: next_token(group.clone()),
            ..SearchPage::default()
        };
        if s.group_by_room {
            out.by_room = Some(groups(
                &results,
                |e| e["room_id"].as_str(),
                |id| {
                    let room = OwnedRoomId::try_from(id).ok()?;
                    Some((room.clone(), next_token(Some(Group::Room(room)))))
                },
            ));
        }
        if s.group_by_sender {
            out.by_sender = Some(groups(
                &results,
                |e| e["sender"].as_str(),
                |id| {
                    let sender = OwnedUserId::try_from(id).ok()?;
                    Some((sender.clone(), next_token(Some(Group::Sender(sender)))))
                },
            ));
        }
        if s.include_state {
            for found in &results {
                let Some(room_id) = found.event["room_id"].as_str() else {
                    continue;
                };
                let room_id = OwnedRoomId::try_from(room_id)
                    .map_err(|e| Error::internal(format!("stored room ID invalid: {e}")))?;
                if let Entry::Vacant(slot) = out.state.entry(room_id) {
                    let state = self.current_state(user, slot.key()).await?;
                    slot.insert(state);
                }
            }
        }
        out.results = results;
        Ok(out)
    }

    /// The page's events in client format (one batched read of redactions per room), in
    /// order, each with its context when asked.
    async fn found(
        &self,
        user: &UserId,
        rooms: &HashMap<i64, &RoomRow>,
        page: &[Hit],
        context: Option<ContextLimits>,
    ) -> Result<Vec<Found>> {
        let room_of = |nid: i64| {
            rooms
                .get(&nid)
                .copied()
                .ok_or_else(|| Error::internal("search result outside the rooms searched"))
        };
        let mut client: HashMap<i64, Value> = HashMap::new();
        for (room_nid, events) in by_room(page) {
            let formatted = self.to_client(room_of(room_nid)?, &events).await?;
            client.extend(events.iter().map(|e| e.event_nid).zip(formatted));
        }
        let mut results = Vec::with_capacity(page.len());
        for hit in page {
            let context = match context {
                Some(limits) => {
                    let room = room_of(hit.event.room_nid)?;
                    Some(self.found_context(user, room, &hit.event, limits).await?)
                }
                None => None,
            };
            results.push(Found {
                event: client.remove(&hit.event.event_nid).unwrap_or(Value::Null),
                rank: f64::from(hit.rank),
                context,
            });
        }
        Ok(results)
    }

    /// Up to `limit` visible matches from the query's position on, the count of matches, and
    /// where the next page starts (`None`: no visible match follows). Chunks are read until
    /// the page is full and one more visible match is seen, or the matches end, or
    /// [`MAX_ROUNDS`] chunks were read (the next page then starts after the last one read).
    async fn collect(
        &self,
        user: &UserId,
        rooms: &HashMap<i64, &RoomRow>,
        mut query: db::search::EventSearch<'_>,
        limit: usize,
    ) -> Result<(Vec<Hit>, u64, Option<After>)> {
        let mut page: Vec<Hit> = Vec::with_capacity(limit);
        let mut count = 0;
        for _ in 0..MAX_ROUNDS {
            let (hits, total) = db::search::search_events(self.db(), &query).await?;
            if let Some(total) = total {
                count = u64::try_from(total).unwrap_or(0);
            }
            let exhausted = (hits.len() as i64) < query.limit;
            let visible = self.visible_hits(user, rooms, &hits).await?;
            let last_read = hits.last().map(position);
            for hit in hits {
                if !visible.contains(&hit.event.event_nid) {
                    continue;
                }
                if page.len() == limit {
                    let next = page.last().map(position);
                    return Ok((page, count, next));
                }
                page.push(hit);
            }
            if exhausted {
                return Ok((page, count, None));
            }
            query.after = last_read;
            query.count = false;
            query.limit = (query.limit * 2).min(MAX_CHUNK);
        }
        Ok((page, count, query.after))
    }

    /// The rooms searched: the user's, narrowed by the filter's rooms and by `group`.
    async fn rooms_to_search(
        &self,
        user: &UserId,
        s: &Search,
        group: Option<&Group>,
    ) -> Result<Vec<db::search::SearchableRoom>> {
        let mut rooms = db::search::searchable_rooms(self.db(), user.as_str()).await?;
        rooms.retain(|r| {
            let id = r.room.room_id.as_str();
            s.rooms
                .as_ref()
                .is_none_or(|only| only.iter().any(|x| x.as_str() == id))
                && !s.not_rooms.iter().any(|x| x.as_str() == id)
                && match group {
                    Some(Group::Room(g)) => g.as_str() == id,
                    _ => true,
                }
        });
        Ok(rooms)
    }

    /// The event numbers of the hits `user` may see under history visibility. The state
    /// entries visibility reads are loaded for every room at once, then checked room by room.
    async fn visible_hits(
        &self,
        user: &UserId,
        rooms: &HashMap<i64, &RoomRow>,
        hits: &[Hit],
    ) -> Result<HashSet<i64>> {
        let groups: Vec<i64> = hits
            .iter()
            .filter_map(|h| h.event.state_after.or(h.event.state_before))
            .collect();
        self.prepare_visibility(user, &groups).await?;
        let mut visible = HashSet::new();
        for (room_nid, events) in by_room(hits) {
            let Some(room) = rooms.get(&room_nid) else {
                continue;
            };
            for e in self.filter_visible(room, user, events).await? {
                visible.insert(e.event_nid);
            }
        }
        Ok(visible)
    }

    /// The events around one result, and the senders' profiles as of the last of them.
    async fn found_context(
        &self,
        user: &UserId,
        room: &RoomRow,
        event: &db::events::StoredEvent,
        limits: ContextLimits,
    ) -> Result<FoundContext> {
        let before = i64::try_from(limits.before.min(MAX_CONTEXT)).unwrap_or(0);
        let after = i64::try_from(limits.after.min(MAX_CONTEXT)).unwrap_or(0);
        let Around {
            before,
            after,
            start,
            end,
            last,
        } = self
            .around(
                user.into(),
                room,
                event,
                before,
                after,
                &EventFilter::default(),
            )
            .await?;
        let mut profiles = BTreeMap::new();
        if limits.profile
            && let Some(group) = last.state_after.or(last.state_before)
        {
            let target = self.to_client(room, std::slice::from_ref(event)).await?;
            let events: Vec<&Value> = before.iter().chain(&target).chain(&after).collect();
            for member in self.sender_members(room, group, &events).await? {
                let Some(user_id) = member["state_key"]
                    .as_str()
                    .and_then(|u| OwnedUserId::try_from(u).ok())
                else {
                    continue;
                };
                let field = |name: &str| {
                    member["content"][name]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                profiles.insert(
                    user_id,
                    Profile {
                        displayname: field("displayname"),
                        avatar_url: field("avatar_url"),
                    },
                );
            }
        }
        Ok(FoundContext {
            before,
            after,
            start: start.to_string(),
            end: end.to_string(),
            profiles,
        })
    }

    /// The words of the results that matched the term (as `ts_headline` marks them),
    /// lower-cased, sorted and without repeats: stemming and prefixes mean they need not
    /// be the words typed.
    async fn highlights(&self, term: &str, results: &[Found]) -> Result<Vec<String>> {
        let texts: Vec<String> = results
            .iter()
            .filter_map(|f| {
                let key = Key::of_type(f.event["type"].as_str()?)?;
                // Postgres text holds no NUL; the index reads one as U+FFFD too.
                let text = f.event["content"][key.field()].as_str()?;
                Some(text.replace('\0', "\u{fffd}"))
            })
            .collect();
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let selectors: Vec<(String, String)> = texts.iter().map(|t| selectors_for(t)).collect();
        let options: Vec<String> = selectors
            .iter()
            .map(|(start, stop)| {
                format!("StartSel=\"{start}\", StopSel=\"{stop}\", HighlightAll=true")
            })
            .collect();
        let headlines = db::search::headlines(self.db(), term, &texts, &options).await?;
        let mut words: Vec<String> = headlines
            .iter()
            .zip(&selectors)
            .flat_map(|(h, (start, stop))| marked_words(h, start, stop))
            .collect();
        words.sort();
        words.dedup();
        Ok(words)
    }
}

/// The hits' events by room, each room's in the hits' order.
fn by_room(hits: &[Hit]) -> BTreeMap<i64, Vec<db::events::StoredEvent>> {
    let mut out: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for hit in hits {
        out.entry(hit.event.room_nid)
            .or_default()
            .push(hit.event.clone());
    }
    out
}

/// Selectors for `ts_headline` that do not occur in `text`: runs of `<` and of `>`.
fn selectors_for(text: &str) -> (String, String) {
    let mut start = "<".to_owned();
    while text.contains(&start) {
        start.push('<');
    }
    let mut stop = ">".to_owned();
    while text.contains(&stop) {
        stop.push('>');
    }
    (start, stop)
}

/// The words between `start` and `stop` in a headline, lower-cased.
fn marked_words(headline: &str, start: &str, stop: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = headline;
    while let Some(at) = rest.find(start) {
        let after = &rest[at + start.len()..];
        let Some(end) = after.find(stop) else {
            break;
        };
        let word = after[..end].trim();
        if !word.is_empty() {
            out.push(word.to_lowercase());
        }
        rest = &after[end + stop.len()..];
    }
    out
}

/// The results grouped by the key `of` reads from each event, in the order each group's
/// first result stands; `make` turns a key into its map key and the group's `next_batch`.
fn groups<K: Ord>(
    results: &[Found],
    of: impl Fn(&Value) -> Option<&str>,
    make: impl Fn(&str) -> Option<(K, Option<String>)>,
) -> BTreeMap<K, GroupPage> {
    let mut out: BTreeMap<K, GroupPage> = BTreeMap::new();
    for (index, found) in results.iter().enumerate() {
        let Some((key, next_batch)) = of(&found.event).and_then(&make) else {
            continue;
        };
        let Some(event_id) = found.event["event_id"]
            .as_str()
            .and_then(|id| parse_event_id(id).ok())
        else {
            continue;
        };
        out.entry(key)
            .or_insert_with(|| GroupPage {
                results: Vec::new(),
                order: index as u64 + 1,
                next_batch,
            })
            .results
            .push(event_id);
    }
    out
}

/// The position of a hit in its order.
fn position(hit: &Hit) -> After {
    After {
        rank: hit.rank,
        stream: hit.event.stream_ordering.unwrap_or(0),
    }
}

/// A `next_batch`: rank order `r<upto>_<rank bits, 8 hex digits>_<stream>`, recent order
/// `t<upto>_<stream>`, either followed by `~r<room ID>` or `~s<user ID>` for a group's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    by_rank: bool,
    /// The highest stream position searched (see [`db::search::EventSearch::upto`]).
    upto: i64,
    after: After,
    group: Option<Group>,
}

impl Token {
    fn order(&self) -> Order {
        match self.by_rank {
            true => Order::Rank,
            false => Order::Recent,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = match self.by_rank {
            true => format!(
                "r{}_{:08x}_{}",
                self.upto,
                self.after.rank.to_bits(),
                self.after.stream
            ),
            false => format!("t{}_{}", self.upto, self.after.stream),
        };
        match &self.group {
            Some(Group::Room(room)) => {
                out.push_str("~r");
                out.push_str(room.as_str());
            }
            Some(Group::Sender(user)) => {
                out.push_str("~s");
                out.push_str(user.as_str());
            }
            None => {}
        }
        out
    }

    pub fn parse(s: &str) -> Result<Token> {
        let bad = || Error::invalid_param("Invalid next_batch");
        // The group's ID comes last and may hold any character; the position holds no `~`.
        let (position, group) = match s.split_once('~') {
            None => (s, None),
            Some((position, tail)) => {
                let group = if let Some(id) = tail.strip_prefix('r') {
                    Group::Room(OwnedRoomId::try_from(id).map_err(|_| bad())?)
                } else if let Some(id) = tail.strip_prefix('s') {
                    Group::Sender(OwnedUserId::try_from(id).map_err(|_| bad())?)
                } else {
                    return Err(bad());
                };
                (position, Some(group))
            }
        };
        let number = |x: &str| -> Result<i64> {
            // `i64::from_str` takes a leading `+`, which no token of ours holds.
            match x.starts_with('+') {
                true => Err(bad()),
                false => x.parse().map_err(|_| bad()),
            }
        };
        let (by_rank, rest) = match (position.strip_prefix('r'), position.strip_prefix('t')) {
            (Some(rest), _) => (true, rest),
            (_, Some(rest)) => (false, rest),
            _ => return Err(bad()),
        };
        let parts: Vec<&str> = rest.split('_').collect();
        let (upto, rank, stream) = match (by_rank, parts.as_slice()) {
            (true, [upto, bits, stream]) => {
                if bits.len() != 8 || !bits.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                let bits = u32::from_str_radix(bits, 16).map_err(|_| bad())?;
                let rank = f32::from_bits(bits);
                if !rank.is_finite() || rank < 0.0 {
                    return Err(bad());
                }
                (number(upto)?, rank, number(stream)?)
            }
            (false, [upto, stream]) => (number(upto)?, 0.0, number(stream)?),
            _ => return Err(bad()),
        };
        Ok(Token {
            by_rank,
            upto,
            after: After { rank, stream },
            group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(by_rank: bool, group: Option<Group>) -> Token {
        Token {
            by_rank,
            upto: 1234,
            after: After {
                rank: if by_rank { 0.0607927 } else { 0.0 },
                stream: -17,
            },
            group,
        }
    }

    #[test]
    fn tokens_round_trip() {
        let room = OwnedRoomId::try_from("!a~b_c:example.org").unwrap();
        let user = OwnedUserId::try_from("@x~y:example.org").unwrap();
        for by_rank in [true, false] {
            for group in [
                None,
                Some(Group::Room(room.clone())),
                Some(Group::Sender(user.clone())),
            ] {
                let t = token(by_rank, group);
                assert_eq!(Token::parse(&t.encode()).unwrap(), t, "{}", t.encode());
            }
        }
    }

    #[test]
    fn tokens_reject_garbage() {
        for bad in [
            "",
            "r",
            "t",
            "t1",
            "t1_",
            "t_1",
            "tx_1",
            "t1_2_3",
            "t+1_2",
            "r1_3d78e5b0",
            "r1_3d78e5b_2",
            "r1_zzzzzzzz_2",
            "r1_7fc00000_2",
            "r1_bf800000_2",
            "s1_2",
            "t1_2~",
            "t1_2~x!a:b",
            "t1_2~rnot-a-room",
            "t1_2~snot-a-user",
            "t1_2~~r!a:b",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn highlighted_words_are_read_between_selectors() {
        let text = "a <b> c";
        let (start, stop) = selectors_for(text);
        assert_eq!((start.as_str(), stop.as_str()), ("<<", ">>"));
        assert_eq!(
            marked_words("The <<Runners>> ran <<RUN>> <<unclosed", "<<", ">>"),
            vec!["runners", "run"]
        );
    }
}

//! Waiting for what a user would see: a condition on the room list or on a room's timeline,
//! checked each time the SDK's stream of changes moves, bounded by [`WAIT`]. The bound only
//! ends a wait that would otherwise hang; no wait depends on how long anything takes. A
//! failed sync service ends the wait at once, with its error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use eyeball_im::VectorDiff;
use futures_util::{Stream, StreamExt, pin_mut};
use imbl::Vector;
use matrix_sdk::Room;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk_ui::room_list_service::RoomListItem;
use matrix_sdk_ui::room_list_service::filters::new_filter_non_left;
use matrix_sdk_ui::sync_service::State as SyncState;
use matrix_sdk_ui::timeline::{
    AnyOtherStateEventContentChange, EventTimelineItem, RoomExt, Timeline, TimelineItem,
    TimelineItemContent,
};

use crate::users::User;

/// The longest any one wait may take before it counts as a failure: far beyond what a
/// passing run needs, even on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(120);

/// Run `fut` until it finishes, failing after [`WAIT`] or as soon as the sync service of one
/// of `users` fails.
pub async fn within<T>(
    what: &str,
    users: &[&User],
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let failed = futures_util::future::select_all(users.iter().map(|u| Box::pin(sync_failure(u))));
    tokio::select! {
        r = tokio::time::timeout(WAIT, fut) => match r {
            Ok(r) => r.with_context(|| format!("while waiting for {what}")),
            Err(_) => bail!("{what}: not seen within {}s", WAIT.as_secs()),
        },
        (e, _, _) = failed => Err(e.context(format!("while waiting for {what}"))),
    }
}

/// Resolves when the user's sync service reports an error (and never otherwise).
async fn sync_failure(user: &User) -> anyhow::Error {
    let mut state = user.sync.state();
    let mut current = state.get();
    loop {
        if let SyncState::Error(e) = &current {
            return anyhow!("the sync service of {} failed: {e}", user.name);
        }
        match state.next().await {
            Some(s) => current = s,
            None => std::future::pending::<()>().await,
        }
    }
}

/// Wait until the user's room list (all rooms not left, in the order the SDK sorts them for
/// display) satisfies `check`, which says why it does not yet with an `Err`; returns the
/// rooms then. The condition is checked again whenever the list changes and after every
/// sync response, since counts and names change without the list moving.
pub async fn room_list<F>(user: &User, what: &str, check: F) -> Result<Vec<Room>>
where
    F: Fn(&[Room]) -> Result<(), String>,
{
    let service = user.room_list();
    let list = service.all_rooms().await.context("the room list")?;
    let (stream, controller) = list.entries_with_dynamic_adapters(200);
    controller.set_filter(Box::new(new_filter_non_left()));
    pin_mut!(stream);
    let mut updates = user.client.subscribe_to_all_room_updates();
    let mut entries: Vector<RoomListItem> = Vector::new();
    let mut last = String::from("nothing was listed yet");
    within(what, &[user], async {
        loop {
            tokio::select! {
                diffs = stream.next() => {
                    let diffs = diffs.context("the room list stream ended")?;
                    for d in diffs {
                        d.apply(&mut entries);
                    }
                }
                // A lagging receiver is as good a reason to look again as an update.
                _ = updates.recv() => {}
            }
            let rooms: Vec<Room> = entries.iter().map(|r| r.clone().into_inner()).collect();
            match check(&rooms) {
                Ok(()) => return Ok(rooms),
                Err(why) => last = why,
            }
        }
    })
    .await
    .map_err(|e| e.context(format!("last seen: {last}")))
}

/// Wait until `check` (an `Ok(Some(_))`) holds of what the user's client has stored,
/// checking again after every sync response that changed a room: the room list shows a
/// room as soon as a response names it, before the response's state is stored.
pub async fn stored<T, F, Fut>(user: &User, what: &str, check: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    // Subscribed before the first check: an update landing in between is not missed.
    let mut updates = user.client.subscribe_to_all_room_updates();
    let mut last = String::from("not checked yet");
    within(what, &[user], async {
        loop {
            match check().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(why) => last = why,
            }
            // A lagging receiver is as good a reason to look again as an update.
            let _ = updates.recv().await;
        }
    })
    .await
    .map_err(|e| e.context(format!("last seen: {last}")))
}

/// Wait until `check` (an `Ok(())`) holds of `room` in the user's client, checking again
/// whenever the room's info changes (its state, counts, direct targets from account data)
/// or a sync response changed a room.
pub async fn room_state<F, Fut>(user: &User, room: &Room, what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    // Subscribed before the first check: a change landing in between is not missed.
    let mut info = room.subscribe_info();
    let mut updates = user.client.subscribe_to_all_room_updates();
    let mut last = String::from("not checked yet");
    within(what, &[user], async {
        loop {
            match check().await {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            tokio::select! {
                changed = info.next() => {
                    changed.context("the room's info stream ended")?;
                }
                _ = updates.recv() => {}
            }
        }
    })
    .await
    .map_err(|e| e.context(format!("last seen: {last}")))
}

/// The room's name as the room list shows it.
pub fn display_name(room: &Room) -> String {
    room.cached_display_name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

type Diffs = Pin<Box<dyn Stream<Item = Vec<VectorDiff<Arc<TimelineItem>>>> + Send>>;

/// A room's timeline as a user sees it, kept up to date from the SDK's stream of changes.
pub struct TimelineView {
    pub timeline: Timeline,
    pub items: Vector<Arc<TimelineItem>>,
    diffs: Diffs,
    owner: String,
}

/// A message as a timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sender: OwnedUserId,
    pub body: String,
    /// Whether it came encrypted (and was decrypted).
    pub encrypted: bool,
    /// Whether it is still only a local echo.
    pub local: bool,
}

impl TimelineView {
    /// Open `room`'s timeline as a client's room screen does: subscribe to the room through
    /// the room list service (a larger timeline and more state), then build the timeline.
    pub async fn open(user: &User, room: &Room) -> Result<TimelineView> {
        user.room_list().subscribe_to_rooms(&[room.room_id()]).await;
        let timeline = room.timeline().await.context("building the timeline")?;
        let (items, diffs) = timeline.subscribe().await;
        Ok(TimelineView {
            timeline,
            items,
            diffs: Box::pin(diffs),
            owner: user.name.clone(),
        })
    }

    /// Wait until the items satisfy `check` (an `Err` says why not yet).
    pub async fn until<F>(&mut self, user: &User, what: &str, check: F) -> Result<()>
    where
        F: Fn(&TimelineView) -> Result<(), String>,
    {
        let mut last = match check(self) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        let what = format!("{what} (in {}'s timeline)", self.owner);
        let result = within(&what, &[user], async {
            loop {
                let diffs = self
                    .diffs
                    .next()
                    .await
                    .context("the timeline stream ended")?;
                for d in diffs {
                    d.apply(&mut self.items);
                }
                match check(self) {
                    Ok(()) => return Ok(()),
                    Err(why) => last = why,
                }
            }
        })
        .await;
        result.map_err(|e| e.context(format!("last seen: {last}")))
    }

    fn events(&self) -> impl Iterator<Item = &EventTimelineItem> {
        self.items.iter().filter_map(|i| i.as_event())
    }

    /// The messages in timeline order.
    pub fn messages(&self) -> Vec<Message> {
        self.events()
            .filter_map(|e| {
                let m = e.content().as_message()?;
                Some(Message {
                    sender: e.sender().to_owned(),
                    body: m.body().to_owned(),
                    encrypted: e.encryption_info().is_some(),
                    local: e.is_local_echo(),
                })
            })
            .collect()
    }

    /// The last event item showing the message `body`.
    pub fn item_of(&self, body: &str) -> Option<&EventTimelineItem> {
        self.events()
            .filter(|e| e.content().as_message().is_some_and(|m| m.body() == body))
            .last()
    }

    /// Whether an event by `sender` is shown as redacted.
    pub fn has_redacted_from(&self, sender: &OwnedUserId) -> bool {
        self.events()
            .any(|e| e.sender() == sender && e.content().is_redacted())
    }

    /// The event ID of the message `body`, once the server has it.
    pub fn event_id_of(&self, body: &str) -> Option<matrix_sdk::ruma::OwnedEventId> {
        self.events()
            .find(|e| e.content().as_message().is_some_and(|m| m.body() == body))
            .and_then(|e| e.event_id().map(ToOwned::to_owned))
    }

    /// Who has read up to the message `body`, as its read receipts show.
    pub fn read_by(&self, body: &str) -> Vec<OwnedUserId> {
        self.events()
            .filter(|e| e.content().as_message().is_some_and(|m| m.body() == body))
            .flat_map(|e| e.read_receipts().keys().cloned())
            .collect()
    }

    /// How many items are encrypted events the client could not decrypt (yet).
    pub fn undecrypted(&self) -> usize {
        self.events()
            .filter(|e| e.content().is_unable_to_decrypt())
            .count()
    }

    /// Whether the room's creation event is the first event shown.
    pub fn starts_at_creation(&self) -> bool {
        self.events().next().is_some_and(|e| {
            matches!(
                e.content(),
                TimelineItemContent::OtherState(s)
                    if matches!(s.content(), AnyOtherStateEventContentChange::RoomCreate(_))
            )
        })
    }

    /// Page back until the timeline reaches the room's creation, as scrolling up does.
    pub async fn back_to_creation(&mut self, user: &User) -> Result<()> {
        let timeline = &self.timeline;
        within("paginating back to the start", &[user], async {
            // Each page moves back at least one event, so a room of this suite's size
            // reaches its start well within this many pages.
            for _ in 0..200 {
                if timeline
                    .paginate_backwards(20)
                    .await
                    .context("paginating backwards")?
                {
                    return Ok(());
                }
            }
            bail!("still not at the start after 200 pages")
        })
        .await?;
        self.until(user, "the room's creation at the top", |v| {
            match v.starts_at_creation() {
                true => Ok(()),
                false => Err(format!("{} items, none the creation first", v.items.len())),
            }
        })
        .await
    }

    /// Send a text message from this timeline, as the composer does.
    pub async fn send_text(&self, body: &str) -> Result<()> {
        use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
        self.timeline
            .send(RoomMessageEventContent::text_plain(body).into())
            .await
            .with_context(|| format!("sending {body:?}"))?;
        Ok(())
    }
}

/// Bodies of `messages` for a failure report, at most the last 8.
pub fn summary(messages: &[Message]) -> String {
    let skip = messages.len().saturating_sub(8);
    let shown: Vec<String> = messages[skip..]
        .iter()
        .map(|m| format!("{}: {:?}", m.sender, m.body))
        .collect();
    format!("{} messages, last: [{}]", messages.len(), shown.join(", "))
}

//! The journeys, in order. Later ones use the users the first logs in; a case whose users
//! are missing fails at once, naming what it needed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::StreamExt;
use matrix_sdk::room::edit::EditedContent;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::session::get_login_types::v3::LoginType;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{
    RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use matrix_sdk::ruma::events::{
    AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
};
use matrix_sdk::ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomOrAliasId};
use matrix_sdk::sliding_sync::Version;
use matrix_sdk::{Room, RoomState};
use matrix_sdk_ui::notification_client::{
    NotificationClient, NotificationEvent, NotificationProcessSetup, NotificationStatus,
};
use matrix_sdk_ui::timeline::ReactionStatus;

use crate::Args;
use crate::users::{self, User};
use crate::wait::{self, TimelineView, display_name, summary};

pub struct CaseResult {
    pub name: &'static str,
    pub passed: bool,
}

/// What the cases share: the users, once logged in.
struct World {
    homeserver: String,
    federated: String,
    /// Appended to user names so that a suite can run again against the same servers.
    suffix: String,
    alice: Option<User>,
    bob: Option<User>,
    /// On the second server, logged in by the first case that needs her.
    carol: Option<User>,
}

impl World {
    fn users(&self) -> Result<(&User, &User)> {
        match (&self.alice, &self.bob) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => bail!("needs alice and bob from the case login-and-discovery"),
        }
    }

    /// Alice, and carol on the second server (logged in on first use).
    async fn across(&mut self) -> Result<(&User, &User)> {
        if self.carol.is_none() {
            let name = format!("carol{}", self.suffix);
            users::register(&self.federated, &name, &password(&name)).await?;
            let client = users::anonymous(&self.federated).await?;
            let carol = users::log_in(client, &name, &password(&name)).await?;
            carol
                .client
                .account()
                .set_display_name(Some("Carol Queen"))
                .await
                .context("carol setting her display name")?;
            self.carol = Some(carol);
        }
        match (&self.alice, &self.carol) {
            (Some(a), Some(c)) => {
                ensure!(
                    a.id()?.server_name() != c.id()?.server_name(),
                    "carol is on alice's server"
                );
                Ok((a, c))
            }
            _ => bail!("needs alice from the case login-and-discovery"),
        }
    }
}

type CaseFn = for<'a> fn(
    &'a mut World,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// The cases in the order they run.
const CASES: &[(&str, CaseFn)] = &[
    ("login-and-discovery", |w| Box::pin(login_and_discovery(w))),
    ("room-list", |w| Box::pin(room_list(w))),
    ("timeline-live-and-back", |w| {
        Box::pin(timeline_live_and_back(w))
    }),
    ("direct-message", |w| Box::pin(direct_message(w))),
    ("send-from-sdk", |w| Box::pin(send_from_sdk(w))),
    ("edit-react-redact", |w| Box::pin(edit_react_redact(w))),
    ("many-rooms", |w| Box::pin(many_rooms(w))),
    ("encrypted-room", |w| Box::pin(encrypted_room(w))),
    ("notification", |w| Box::pin(notification(w))),
    ("new-device", |w| Box::pin(new_device(w))),
    ("sync-restart", |w| Box::pin(sync_restart(w))),
    ("federated-room", |w| Box::pin(federated_room(w))),
    ("federated-encrypted-invite", |w| {
        Box::pin(federated_encrypted_invite(w))
    }),
];

pub async fn run(args: &Args) -> Vec<CaseResult> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut world = World {
        homeserver: args.homeserver.clone(),
        federated: args.federated.clone(),
        suffix: format!("{millis:x}"),
        alice: None,
        bob: None,
        carol: None,
    };
    let mut results = Vec::new();
    for (i, (name, case)) in CASES.iter().enumerate() {
        // Logging in is what every other case needs: it always runs.
        let wanted =
            i == 0 || args.only.is_empty() || args.only.iter().any(|w| name.contains(w.as_str()));
        if !wanted {
            continue;
        }
        let started = Instant::now();
        let outcome = case(&mut world).await;
        let secs = started.elapsed().as_secs_f64();
        match &outcome {
            Ok(()) => println!("PASS {name} ({secs:.1}s)"),
            Err(e) => println!("FAIL {name} ({secs:.1}s): {e:#}"),
        }
        results.push(CaseResult {
            name,
            passed: outcome.is_ok(),
        });
    }
    for user in [&world.alice, &world.bob, &world.carol]
        .into_iter()
        .flatten()
    {
        user.stop().await;
    }
    results
}

fn password(name: &str) -> String {
    format!("{name}-secret-password")
}

/// `/versions` and well-known discovery, login flows, no OAuth 2.0 server (the SDK must
/// fall back to passwords, as Element X does), then alice and bob log in with passwords and
/// their clients sync with simplified sliding sync.
async fn login_and_discovery(w: &mut World) -> Result<()> {
    let probe = users::anonymous(&w.homeserver).await?;
    let versions = probe
        .server_versions()
        .await
        .context("GET /_matrix/client/versions")?;
    ensure!(!versions.is_empty(), "/versions named no spec version");
    ensure!(
        matches!(probe.sliding_sync_version(), Version::Native),
        "the SDK did not find simplified sliding sync in /versions: {:?}",
        probe.sliding_sync_version()
    );
    let flows = probe
        .matrix_auth()
        .get_login_types()
        .await
        .context("GET /_matrix/client/v3/login")?;
    ensure!(
        flows
            .flows
            .iter()
            .any(|f| matches!(f, LoginType::Password(_))),
        "GET /login offers no password login: {:?}",
        flows.flows
    );
    match probe.oauth().server_metadata().await {
        Err(e) if e.is_not_supported() => {}
        Err(e) => bail!("asking for OAuth 2.0 metadata should say unsupported, not: {e}"),
        Ok(m) => bail!("the server claims an OAuth 2.0 server: {}", m.issuer),
    }

    let alice_name = format!("alice{}", w.suffix);
    let bob_name = format!("bob{}", w.suffix);
    for name in [&alice_name, &bob_name] {
        users::register(&w.homeserver, name, &password(name)).await?;
    }

    // Alice's client starts from the server's name (the host and port it is reached at),
    // as a user types it, and finds the API through the well-known file.
    let server = users::authority(&w.homeserver)?;
    let discovering = users::discovered(&server).await?;
    let found = discovering.homeserver();
    ensure!(
        found.as_str().trim_end_matches('/') == w.homeserver.trim_end_matches('/'),
        "well-known discovery of {server} led to {found}, not {}",
        w.homeserver
    );
    let alice = users::log_in(discovering, &alice_name, &password(&alice_name)).await?;
    let bob_client = users::anonymous(&w.homeserver).await?;
    let bob = users::log_in(bob_client, &bob_name, &password(&bob_name)).await?;
    for (u, name) in [(&alice, "Alice Liddell"), (&bob, "Bob Hatter")] {
        u.client
            .account()
            .set_display_name(Some(name))
            .await
            .with_context(|| format!("{} setting a display name", u.name))?;
        ensure!(
            matches!(u.client.sliding_sync_version(), Version::Native),
            "{} does not sync with simplified sliding sync",
            u.name
        );
    }
    w.alice = Some(alice);
    w.bob = Some(bob);
    Ok(())
}

/// Create a room as `creator` with `name`, inviting `invite`; `encrypted` adds the
/// encryption state event.
async fn create_room(
    creator: &User,
    name: &str,
    preset: RoomPreset,
    invite: &[OwnedUserId],
    encrypted: bool,
) -> Result<Room> {
    let mut req = CreateRoomRequest::new();
    req.name = Some(name.to_owned());
    req.preset = Some(preset);
    req.invite = invite.to_vec();
    if encrypted {
        req.initial_state = vec![
            InitialStateEvent::with_empty_state_key(
                RoomEncryptionEventContent::with_recommended_defaults(),
            )
            .to_raw_any(),
        ];
    }
    creator
        .client
        .create_room(req)
        .await
        .with_context(|| format!("{} creating the room {name:?}", creator.name))
}

/// Wait until `user` is invited by `inviter` to every room of `rooms` (seen in their room
/// list), then join each.
async fn accept_invites(user: &User, inviter: &OwnedUserId, rooms: &[OwnedRoomId]) -> Result<()> {
    let listed = wait::room_list(user, "the invites in the room list", |list| {
        let invited = rooms
            .iter()
            .filter(|id| {
                list.iter()
                    .any(|r| r.room_id() == *id && r.state() == RoomState::Invited)
            })
            .count();
        match invited == rooms.len() {
            true => Ok(()),
            false => Err(format!("{invited} of {} invites listed", rooms.len())),
        }
    })
    .await?;
    for id in rooms {
        let room = listed
            .iter()
            .find(|r| r.room_id() == id)
            .ok_or_else(|| anyhow!("{id} left the list"))?;
        // The invite screen names who invited: the user's own invite among the stripped
        // state.
        let invite = wait::stored(user, "the details of the invite", || async {
            match room.invite_details().await {
                Ok(invite) => Ok(Some(invite)),
                Err(e) => Err(format!("{e}")),
            }
        })
        .await
        .with_context(|| format!("{}'s invite to {id}", user.name))?;
        ensure!(
            invite.inviter_id == *inviter,
            "the invite to {id} names {} as the inviter, not {inviter}",
            invite.inviter_id
        );
        room.join()
            .await
            .with_context(|| format!("{} joining {id}", user.name))?;
    }
    wait::room_list(user, "the joined rooms in the room list", |list| {
        let joined = rooms
            .iter()
            .filter(|id| {
                list.iter()
                    .any(|r| r.room_id() == *id && r.state() == RoomState::Joined)
            })
            .count();
        match joined == rooms.len() {
            true => Ok(()),
            false => Err(format!("{joined} of {} rooms joined", rooms.len())),
        }
    })
    .await?;
    Ok(())
}

async fn send_text(user: &User, room_id: &RoomId, body: &str) -> Result<()> {
    let room = user
        .client
        .get_room(room_id)
        .ok_or_else(|| anyhow!("{} does not know {room_id}", user.name))?;
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .with_context(|| format!("{} sending {body:?}", user.name))?;
    Ok(())
}

/// What the room list shows of `rooms` (names and unread notification counts), in list
/// order.
fn shown(list: &[Room], rooms: &[OwnedRoomId]) -> Vec<(String, u64)> {
    list.iter()
        .filter(|r| rooms.iter().any(|id| r.room_id() == id))
        .map(|r| {
            (
                display_name(r),
                r.unread_notification_counts().notification_count,
            )
        })
        .collect()
}

/// Wait until bob's room list shows `rooms` as `want`: names and unread counts, most recent
/// first.
async fn expect_list(
    user: &User,
    what: &str,
    rooms: &[OwnedRoomId],
    want: &[(&str, u64)],
) -> Result<()> {
    let want: Vec<(String, u64)> = want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    wait::room_list(user, what, |list| {
        let got = shown(list, rooms);
        match got == want {
            true => Ok(()),
            false => Err(format!("{got:?}, want {want:?}")),
        }
    })
    .await
    .map(|_| ())
}

/// Bob's `RoomListService` lists three rooms alice invited him to, most recent first, with
/// their names and unread counts; reading one clears its count, and a new message moves a
/// room to the top.
async fn room_list(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let bob_id = bob.id()?;
    let mut ids = Vec::new();
    for name in ["Gamma", "Alpha", "Beta"] {
        let room = create_room(
            alice,
            name,
            RoomPreset::PrivateChat,
            std::slice::from_ref(&bob_id),
            false,
        )
        .await?;
        ids.push(room.room_id().to_owned());
    }
    accept_invites(bob, &alice.id()?, &ids).await?;
    // Gamma gets one message, then Alpha two, then Beta three: Beta is the most recent.
    for (id, count) in ids.iter().zip(1..) {
        for n in 1..=count {
            send_text(alice, id, &format!("news {n} of {count}")).await?;
        }
    }
    expect_list(
        bob,
        "Beta, Alpha, Gamma with 3, 2 and 1 unread",
        &ids,
        &[("Beta", 3), ("Alpha", 2), ("Gamma", 1)],
    )
    .await?;

    // Bob reads Beta: its count drops to nothing, the order stays.
    let beta = bob
        .client
        .get_room(&ids[2])
        .ok_or_else(|| anyhow!("bob does not know Beta"))?;
    let mut view = TimelineView::open(bob, &beta).await?;
    // The list sent Beta with its latest event only: the screen pages back for the rest.
    view.back_to_creation(bob).await?;
    view.until(bob, "Beta's three messages", |v| {
        let n = v.messages().len();
        match n >= 3 {
            true => Ok(()),
            false => Err(summary(&v.messages())),
        }
    })
    .await?;
    view.timeline
        .mark_as_read(ReceiptType::Read)
        .await
        .context("bob marking Beta as read")?;
    expect_list(
        bob,
        "Beta read",
        &ids,
        &[("Beta", 0), ("Alpha", 2), ("Gamma", 1)],
    )
    .await?;
    // Alice sees where bob has read to.
    let alice_beta = alice
        .client
        .get_room(&ids[2])
        .ok_or_else(|| anyhow!("alice does not know Beta"))?;
    let mut alice_view = TimelineView::open(alice, &alice_beta).await?;
    alice_view
        .until(alice, "bob's read receipt on the last message", |v| {
            let readers = v.read_by("news 3 of 3");
            match readers.contains(&bob_id) {
                true => Ok(()),
                false => Err(format!("read by {readers:?}")),
            }
        })
        .await?;

    // A message in Gamma brings it to the top.
    send_text(alice, &ids[0], "Gamma again").await?;
    expect_list(
        bob,
        "Gamma moved to the top",
        &ids,
        &[("Gamma", 2), ("Beta", 0), ("Alpha", 2)],
    )
    .await?;

    // A private read receipt (Element X's choice when receipts are not shared) clears a
    // count too.
    let gamma = bob
        .client
        .get_room(&ids[0])
        .ok_or_else(|| anyhow!("bob does not know Gamma"))?;
    let mut gamma_view = TimelineView::open(bob, &gamma).await?;
    gamma_view
        .until(bob, "Gamma's latest message", |v| {
            match v.messages().last() {
                Some(m) if m.body == "Gamma again" => Ok(()),
                _ => Err(summary(&v.messages())),
            }
        })
        .await?;
    gamma_view
        .timeline
        .mark_as_read(ReceiptType::ReadPrivate)
        .await
        .context("bob marking Gamma as read privately")?;
    expect_list(
        bob,
        "Gamma read privately",
        &ids,
        &[("Gamma", 0), ("Beta", 0), ("Alpha", 2)],
    )
    .await?;

    // Bob leaves Alpha: it drops out of his list.
    let alpha = bob
        .client
        .get_room(&ids[1])
        .ok_or_else(|| anyhow!("bob does not know Alpha"))?;
    alpha.leave().await.context("bob leaving Alpha")?;
    expect_list(
        bob,
        "Alpha gone after leaving it",
        &ids,
        &[("Gamma", 0), ("Beta", 0)],
    )
    .await?;
    ensure!(
        alpha.state() == RoomState::Left,
        "bob's client has Alpha as {:?}, not left",
        alpha.state()
    );
    Ok(())
}

/// Alice opens a direct chat with bob: the room has no name, so both lists name it after
/// the other (from the heroes the server sends), and both clients know it as direct.
async fn direct_message(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let (alice_id, bob_id) = (alice.id()?, bob.id()?);
    let mut req = CreateRoomRequest::new();
    req.is_direct = true;
    req.preset = Some(RoomPreset::TrustedPrivateChat);
    req.invite = vec![bob_id.clone()];
    let room = alice
        .client
        .create_room(req)
        .await
        .context("alice creating a direct chat")?;
    let id = room.room_id().to_owned();
    // Before bob answers, alice's list already names the chat after him: the invite
    // carries his profile.
    wait::room_list(alice, "the new chat named after bob", |list| {
        match list.iter().find(|r| r.room_id() == id) {
            Some(r) if display_name(r) == "Bob Hatter" => Ok(()),
            Some(r) => Err(format!("named {:?}", display_name(r))),
            None => Err("not listed".to_owned()),
        }
    })
    .await?;
    accept_invites(bob, &alice_id, std::slice::from_ref(&id)).await?;
    for (user, other) in [(bob, "Alice Liddell"), (alice, "Bob Hatter")] {
        wait::room_list(
            user,
            &format!("the direct chat named {other}"),
            |list| match list.iter().find(|r| r.room_id() == id) {
                Some(r) if display_name(r) == other => Ok(()),
                Some(r) => Err(format!("named {:?}", display_name(r))),
                None => Err("not listed".to_owned()),
            },
        )
        .await?;
        let room = user
            .client
            .get_room(&id)
            .ok_or_else(|| anyhow!("{} does not know the direct chat", user.name))?;
        wait::room_state(user, &room, "the chat marked direct", || async {
            match room.is_direct().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("not direct".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .with_context(|| format!("{}'s view of the direct chat", user.name))?;
    }
    Ok(())
}

/// A shared room with `history` messages from alice before bob looks at it.
async fn room_with_history(
    alice: &User,
    bob: &User,
    name: &str,
    history: usize,
    encrypted: bool,
) -> Result<OwnedRoomId> {
    let room = create_room(
        alice,
        name,
        RoomPreset::PrivateChat,
        &[bob.id()?],
        encrypted,
    )
    .await?;
    let id = room.room_id().to_owned();
    accept_invites(bob, &alice.id()?, std::slice::from_ref(&id)).await?;
    for n in 1..=history {
        send_text(alice, &id, &format!("history {n}")).await?;
    }
    Ok(id)
}

fn history_bodies(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("history {i}")).collect()
}

/// Bob's timeline of a room with 45 messages pages back to the room's creation, every
/// message once and in order, and shows alice's new message live.
async fn timeline_live_and_back(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    const HISTORY: usize = 45;
    let id = room_with_history(alice, bob, "History", HISTORY, false).await?;
    let room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    let mut view = TimelineView::open(bob, &room).await?;
    view.back_to_creation(bob).await?;
    let want = history_bodies(HISTORY);
    view.until(bob, "every message once, in order", |v| {
        let got: Vec<String> = v.messages().into_iter().map(|m| m.body).collect();
        match got == want {
            true => Ok(()),
            false => Err(summary(&v.messages())),
        }
    })
    .await?;

    let alice_room = alice
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("alice does not know the room"))?;
    let alice_view = TimelineView::open(alice, &alice_room).await?;
    alice_view.send_text("live from alice").await?;
    let alice_id = alice.id()?;
    view.until(bob, "alice's live message at the bottom", |v| {
        let messages = v.messages();
        match messages.last() {
            Some(m) if m.body == "live from alice" && m.sender == alice_id => Ok(()),
            _ => Err(summary(&messages)),
        }
    })
    .await
}

/// Bob sends from his timeline: the local echo becomes the event the server stored, and
/// alice sees it.
async fn send_from_sdk(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let id = room_with_history(alice, bob, "Chat", 1, false).await?;
    let bob_room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    let mut bob_view = TimelineView::open(bob, &bob_room).await?;
    let alice_room = alice
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("alice does not know the room"))?;
    let mut alice_view = TimelineView::open(alice, &alice_room).await?;
    let bob_id = bob.id()?;
    // Typing first: alice's client hears that bob is typing.
    let (_guard, mut typing) = alice_room.subscribe_to_typing_notifications();
    bob_room
        .typing_notice(true)
        .await
        .context("bob's typing notice")?;
    wait::within("bob typing, in alice's room", &[alice], async {
        loop {
            let typists = typing.recv().await.context("typing notifications ended")?;
            if typists.contains(&bob_id) {
                return Ok(());
            }
        }
    })
    .await?;
    bob_view.send_text("hello from bob's SDK").await?;
    bob_view
        .until(bob, "bob's message sent (no longer a local echo)", |v| {
            let sent = v
                .messages()
                .iter()
                .any(|m| m.body == "hello from bob's SDK" && !m.local);
            match sent {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await?;
    alice_view
        .until(alice, "bob's message", |v| {
            let seen = v
                .messages()
                .iter()
                .any(|m| m.body == "hello from bob's SDK" && m.sender == bob_id);
            match seen {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await
}

/// Wait until `view` shows `body` from `sender`, decrypted.
async fn expect_decrypted(
    view: &mut TimelineView,
    user: &User,
    sender: &OwnedUserId,
    body: &str,
) -> Result<()> {
    view.until(user, &format!("{body:?} decrypted"), |v| {
        let found = v
            .messages()
            .into_iter()
            .find(|m| m.body == body && &m.sender == sender);
        match found {
            Some(m) if m.encrypted => Ok(()),
            Some(_) => Err(format!("{body:?} shown but not as an encrypted event")),
            None => Err(format!(
                "{}; {} not decrypted",
                summary(&v.messages()),
                v.undecrypted()
            )),
        }
    })
    .await
}

/// An encrypted room: each user's device keys reach the other through the server, the room
/// key travels to-device (Olm) through the encryption sync, and each decrypts the other's
/// Megolm message.
async fn encrypted_room(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let id = room_with_history(alice, bob, "Secret", 0, true).await?;
    let (alice_id, bob_id) = (alice.id()?, bob.id()?);
    let alice_room = alice
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("alice does not know the room"))?;
    let bob_room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    ensure!(
        alice_room
            .latest_encryption_state()
            .await
            .context("alice's room encryption state")?
            .is_encrypted(),
        "alice's client does not see the room as encrypted"
    );
    let mut alice_view = TimelineView::open(alice, &alice_room).await?;
    let mut bob_view = TimelineView::open(bob, &bob_room).await?;

    alice_view.send_text("a secret from alice").await?;
    expect_decrypted(&mut bob_view, bob, &alice_id, "a secret from alice").await?;
    bob_view.send_text("a secret from bob").await?;
    expect_decrypted(&mut alice_view, alice, &bob_id, "a secret from bob").await?;

    // Each saw the other's device through the server's key directory.
    let bob_devices = alice
        .client
        .encryption()
        .get_user_devices(&bob_id)
        .await
        .context("alice's view of bob's devices")?;
    let bob_device = bob
        .client
        .device_id()
        .ok_or_else(|| anyhow!("bob has no device"))?;
    ensure!(
        bob_devices.get(bob_device).is_some(),
        "alice's client does not know bob's device {bob_device}"
    );
    Ok(())
}

/// Carol, on the second server, joins alice's public room over federation: it appears in
/// her room list with its name, her timeline holds its history back to the creation, and
/// messages go both ways.
async fn federated_room(w: &mut World) -> Result<()> {
    let (alice, carol) = w.across().await?;
    federated_journey(alice, carol).await
}

async fn federated_journey(alice: &User, carol: &User) -> Result<()> {
    let alice_id = alice.id()?;
    let carol_id = carol.id()?;
    let origin: OwnedServerName = alice_id.server_name().to_owned();
    let room = create_room(alice, "Over the fence", RoomPreset::PublicChat, &[], false).await?;
    let id = room.room_id().to_owned();
    send_text(alice, &id, "before carol came").await?;

    carol
        .client
        .join_room_by_id_or_alias(<&RoomOrAliasId>::from(&*id), std::slice::from_ref(&origin))
        .await
        .with_context(|| format!("carol joining {id} through {origin}"))?;
    wait::room_list(carol, "the federated room in carol's list", |list| {
        let found = list.iter().find(|r| r.room_id() == id);
        match found {
            Some(r) if r.state() == RoomState::Joined && display_name(r) == "Over the fence" => {
                Ok(())
            }
            Some(r) => Err(format!("listed as {:?} ({:?})", display_name(r), r.state())),
            None => Err(format!("{} rooms, not this one", list.len())),
        }
    })
    .await?;
    let carol_room = carol
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("carol does not know the room"))?;
    let mut carol_view = TimelineView::open(carol, &carol_room).await?;
    carol_view.back_to_creation(carol).await?;
    carol_view
        .until(carol, "alice's message from before the join", |v| {
            let seen = v
                .messages()
                .iter()
                .any(|m| m.body == "before carol came" && m.sender == alice_id);
            match seen {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await?;

    let mut alice_view = TimelineView::open(alice, &room).await?;
    alice_view.send_text("welcome, carol").await?;
    carol_view
        .until(carol, "alice's live message", |v| {
            match v.messages().last() {
                Some(m) if m.body == "welcome, carol" && m.sender == alice_id => Ok(()),
                _ => Err(summary(&v.messages())),
            }
        })
        .await?;
    carol_view.send_text("thanks, alice").await?;
    alice_view
        .until(alice, "carol's message over federation", |v| {
            let seen = v
                .messages()
                .iter()
                .any(|m| m.body == "thanks, alice" && m.sender == carol_id && !m.local);
            match seen {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await
}

/// Alice invites carol, on the second server, to an encrypted room: the invite reaches
/// carol's list with its name and inviter, she joins through it, and each decrypts the
/// other's message (device keys queried and room keys sent to-device across the servers).
async fn federated_encrypted_invite(w: &mut World) -> Result<()> {
    let (alice, carol) = w.across().await?;
    let (alice_id, carol_id) = (alice.id()?, carol.id()?);
    let room = create_room(
        alice,
        "Across the border",
        RoomPreset::PrivateChat,
        std::slice::from_ref(&carol_id),
        true,
    )
    .await?;
    let id = room.room_id().to_owned();
    accept_invites(carol, &alice_id, std::slice::from_ref(&id)).await?;
    let carol_room = carol
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("carol does not know the room"))?;
    wait::room_list(carol, "the room's name in carol's list", |list| match list
        .iter()
        .find(|r| r.room_id() == id)
    {
        Some(r) if display_name(r) == "Across the border" => Ok(()),
        Some(r) => Err(format!("named {:?}", display_name(r))),
        None => Err("not listed".to_owned()),
    })
    .await?;
    let mut carol_view = TimelineView::open(carol, &carol_room).await?;
    let mut alice_view = TimelineView::open(alice, &room).await?;
    // Alice's client must know carol has joined before it shares the room key with her.
    wait::room_state(alice, &room, "carol's join", || async {
        match room.joined_members_count() {
            2 => Ok(()),
            n => Err(format!("{n} joined")),
        }
    })
    .await?;
    alice_view.send_text("a secret for carol").await?;
    expect_decrypted(&mut carol_view, carol, &alice_id, "a secret for carol").await?;
    carol_view.send_text("a secret for alice").await?;
    expect_decrypted(&mut alice_view, alice, &carol_id, "a secret for alice").await
}

/// Alice reacts to bob's message, bob edits it and then deletes it: each change reaches the
/// other's timeline as Element X shows it (the reaction under the message, the edit in
/// place, the deletion as a redacted item).
async fn edit_react_redact(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let (alice_id, bob_id) = (alice.id()?, bob.id()?);
    let id = room_with_history(alice, bob, "Workshop", 0, false).await?;
    let alice_room = alice
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("alice does not know the room"))?;
    let bob_room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    let mut alice_view = TimelineView::open(alice, &alice_room).await?;
    let mut bob_view = TimelineView::open(bob, &bob_room).await?;
    bob_view.send_text("a first draft").await?;
    bob_view
        .until(bob, "his draft sent", |v| {
            match v.item_of("a first draft") {
                Some(e) if e.event_id().is_some() => Ok(()),
                _ => Err(summary(&v.messages())),
            }
        })
        .await?;
    let (draft, draft_id) = bob_view
        .item_of("a first draft")
        .and_then(|e| Some((e.identifier(), e.event_id()?.to_owned())))
        .ok_or_else(|| anyhow!("bob's timeline lost his draft"))?;
    alice_view
        .until(alice, "bob's draft", |v| match v.item_of("a first draft") {
            Some(_) => Ok(()),
            None => Err(summary(&v.messages())),
        })
        .await?;

    let target = alice_view
        .item_of("a first draft")
        .map(|e| e.identifier())
        .ok_or_else(|| anyhow!("alice's timeline lost the message"))?;
    alice_view
        .timeline
        .toggle_reaction(&target, "👍")
        .await
        .context("alice reacting")?;
    let reaction = |v: &TimelineView, sent_only: bool| {
        v.item_of("a first draft").is_some_and(|e| {
            e.content()
                .reactions()
                .and_then(|r| r.get("👍"))
                .and_then(|by| by.get(&alice_id))
                .is_some_and(|r| {
                    !sent_only || matches!(r.status, ReactionStatus::RemoteToRemote(_))
                })
        })
    };
    // Sent first (the server has the reaction), then seen by bob: a failure says which.
    alice_view
        .until(alice, "her reaction sent", |v| match reaction(v, true) {
            true => Ok(()),
            false => Err("the 👍 is not sent yet".to_owned()),
        })
        .await?;
    bob_view
        .until(bob, "alice's reaction", |v| match reaction(v, false) {
            true => Ok(()),
            false => Err(format!("no 👍 from alice yet; {}", summary(&v.messages()))),
        })
        .await?;

    bob_view
        .timeline
        .edit(
            &draft,
            EditedContent::RoomMessage(RoomMessageEventContentWithoutRelation::text_plain(
                "the final text",
            )),
        )
        .await
        .context("bob editing his message")?;
    alice_view
        .until(alice, "bob's edit in place", |v| {
            let edited = v.item_of("the final text").is_some_and(|e| {
                e.sender() == bob_id && e.content().as_message().is_some_and(|m| m.is_edited())
            });
            match edited && v.item_of("a first draft").is_none() {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await?;

    bob_view
        .until(bob, "his own edit", |v| match v.item_of("the final text") {
            Some(_) => Ok(()),
            None => Err(summary(&v.messages())),
        })
        .await?;

    bob_room
        .redact(&draft_id, Some("changed my mind"), None)
        .await
        .context("bob deleting his message")?;
    alice_view
        .until(alice, "bob's message deleted", |v| {
            match v.item_of("the final text").is_none() && v.has_redacted_from(&bob_id) {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await
}

/// More rooms than the room list's first window (20): the SDK widens its range and lists
/// them all, most recent first.
async fn many_rooms(w: &mut World) -> Result<()> {
    let (alice, _) = w.users()?;
    const ROOMS: usize = 30;
    let mut ids = Vec::new();
    for n in 0..ROOMS {
        let room = create_room(
            alice,
            &format!("Room {n:02}"),
            RoomPreset::PrivateChat,
            &[],
            false,
        )
        .await?;
        ids.push(room.room_id().to_owned());
    }
    // The last touched is the most recent: room 00, then 29 down to 01.
    for id in &ids[1..] {
        send_text(alice, id, "tick").await?;
    }
    send_text(alice, &ids[0], "tock").await?;
    let mut want: Vec<String> = vec!["Room 00".to_owned()];
    want.extend((1..ROOMS).rev().map(|n| format!("Room {n:02}")));
    wait::room_list(alice, "all 30 rooms, most recent first", |list| {
        let got: Vec<String> = list
            .iter()
            .filter(|r| ids.iter().any(|id| r.room_id() == id))
            .map(display_name)
            .collect();
        match got == want {
            true => Ok(()),
            false => Err(format!("{} listed: {:?}", got.len(), got)),
        }
    })
    .await
    .map(|_| ())
}

/// A push notification's content, fetched as Element X does when one arrives: the SDK's
/// notification client runs a sliding sync of its own subscribed to the room, finds the
/// event there and decrypts it, with the sender's name and the room's.
async fn notification(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let id = room_with_history(alice, bob, "Whispers", 0, true).await?;
    let alice_room = alice
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("alice does not know the room"))?;
    let bob_room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    let alice_view = TimelineView::open(alice, &alice_room).await?;
    let mut bob_view = TimelineView::open(bob, &bob_room).await?;
    // Bob's timeline decrypting it tells that the room key reached his device.
    alice_view.send_text("psst, bob").await?;
    expect_decrypted(&mut bob_view, bob, &alice.id()?, "psst, bob").await?;
    let event_id = bob_view
        .event_id_of("psst, bob")
        .ok_or_else(|| anyhow!("the message has no event ID in bob's timeline"))?;

    let notifications = NotificationClient::new(
        bob.client.clone(),
        NotificationProcessSetup::SingleProcess {
            sync_service: bob.sync.clone(),
        },
    )
    .await
    .context("bob's notification client")?;
    let status = wait::within("the notification's content", &[bob], async {
        notifications
            .get_notification_with_sliding_sync(&id, &event_id)
            .await
            .context("fetching the notification through sliding sync")
    })
    .await?;
    let item = match status {
        NotificationStatus::Event(item) => item,
        other => bail!("no notification content: {}", status_name(&other)),
    };
    ensure!(
        item.sender_display_name.as_deref() == Some("Alice Liddell"),
        "the notification names the sender {:?}",
        item.sender_display_name
    );
    ensure!(
        item.room_computed_display_name == "Whispers",
        "the notification names the room {:?}",
        item.room_computed_display_name
    );
    ensure!(
        item.is_room_encrypted == Some(true),
        "the notification's room is not known as encrypted"
    );
    let body = match &item.event {
        NotificationEvent::Timeline(ev) => match &**ev {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncMessageLikeEvent::Original(m),
            )) => m.content.body().to_owned(),
            other => bail!("the notification holds a {} event", other.event_type()),
        },
        NotificationEvent::Invite(_) => bail!("the notification is an invite"),
    };
    ensure!(body == "psst, bob", "the notification reads {body:?}");
    Ok(())
}

fn status_name(status: &NotificationStatus) -> &'static str {
    match status {
        NotificationStatus::Event(_) => "an event",
        NotificationStatus::EventNotFound => "event not found",
        NotificationStatus::EventFilteredOut => "filtered out",
        NotificationStatus::EventRedacted => "redacted",
    }
}

/// Bob signs in on a second device while he shares an encrypted room with alice: her client
/// learns of the new device from the e2ee extension's device list changes, and shares the
/// room key with it too, so the new device reads her next message.
async fn new_device(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let (alice_id, bob_id) = (alice.id()?, bob.id()?);
    let id = room_with_history(alice, bob, "Two phones", 0, true).await?;
    let alice_room = alice
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("alice does not know the room"))?;
    let bob_room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    let alice_view = TimelineView::open(alice, &alice_room).await?;
    let mut bob_view = TimelineView::open(bob, &bob_room).await?;
    // Alice's client knows bob's first device once her first message is shared with him.
    alice_view.send_text("before the new phone").await?;
    expect_decrypted(&mut bob_view, bob, &alice_id, "before the new phone").await?;

    // Subscribed before the second device exists, so its arrival is not missed.
    let mut devices = Box::pin(
        alice
            .client
            .encryption()
            .devices_stream()
            .await
            .context("alice's device updates")?,
    );
    let second = users::log_in(
        users::anonymous(&w.homeserver).await?,
        &bob.name,
        &password(&bob.name),
    )
    .await?;
    let result = async {
        let device = second
            .client
            .device_id()
            .map(ToOwned::to_owned)
            .ok_or_else(|| anyhow!("bob's second client has no device"))?;
        wait::within(
            "bob's new device in alice's client",
            &[alice, &second],
            async {
                loop {
                    let known = alice
                        .client
                        .encryption()
                        .get_device(&bob_id, &device)
                        .await
                        .context("alice's view of bob's devices")?;
                    if known.is_some() {
                        return Ok(());
                    }
                    devices
                        .next()
                        .await
                        .context("alice's device updates ended")?;
                }
            },
        )
        .await?;
        let second_room = wait::stored(&second, "the room on bob's second device", || async {
            match second.client.get_room(&id) {
                Some(r) if r.state() == RoomState::Joined => Ok(Some(r)),
                _ => Err("not there yet".to_owned()),
            }
        })
        .await?;
        let mut second_view = TimelineView::open(&second, &second_room).await?;
        alice_view.send_text("for both your phones").await?;
        expect_decrypted(&mut second_view, &second, &alice_id, "for both your phones").await?;
        expect_decrypted(&mut bob_view, bob, &alice_id, "for both your phones").await
    }
    .await;
    second.stop().await;
    result
}

/// Element X stops syncing in the background and starts again in the foreground: the
/// connections resume from their positions, and what happened meanwhile arrives.
async fn sync_restart(w: &mut World) -> Result<()> {
    let (alice, bob) = w.users()?;
    let id = room_with_history(alice, bob, "Later", 1, true).await?;
    let bob_room = bob
        .client
        .get_room(&id)
        .ok_or_else(|| anyhow!("bob does not know the room"))?;
    let mut bob_view = TimelineView::open(bob, &bob_room).await?;
    bob_view
        .until(bob, "the first message", |v| {
            match v.messages().iter().any(|m| m.body == "history 1") {
                true => Ok(()),
                false => Err(summary(&v.messages())),
            }
        })
        .await?;
    bob.sync.stop().await;
    send_text(alice, &id, "while bob was away").await?;
    bob.sync.start().await;
    expect_decrypted(&mut bob_view, bob, &alice.id()?, "while bob was away").await
}

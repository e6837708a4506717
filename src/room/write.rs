//! The types every writer shares with the store: what writes go to ([`Store`]), and what a
//! writer hands it ([`Checked`]: an event that went through the checks, with what it does to
//! the room). A leaf of the write path: the modules that build, check and store events all
//! import it, and it imports none of them.

use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use sqlx::PgPool;

use super::pdu::Pdu;
use super::state_cache::StateCache;
use super::stream::StreamPositions;
use crate::db::events::NewEvent;
use crate::db::rooms::RoomRow;
use crate::keys::ServerKeys;

/// Where a client transaction ID is recorded, so a retry finds the same event.
pub struct TxnRef<'a> {
    pub device_id: &'a str,
    pub txn_id: &'a str,
}

/// What the append path writes to and signs with.
pub struct Store<'a> {
    pub db: &'a PgPool,
    pub keys: &'a ServerKeys,
    pub stream: &'a Arc<StreamPositions>,
    pub state: &'a StateCache,
    pub nids: &'a super::nids::EventNids,
    pub push: &'a super::push::PushContexts,
    pub tips: &'a super::tips::Tips,
    pub writer: &'a super::writer::PlainWriter,
    /// Told when a write queued events for other servers (the federation sender waits on it).
    pub outbox: &'a Arc<tokio::sync::Notify>,
}

/// How a newly stored event reaches other servers.
pub enum FanOut<'a> {
    /// Our own event: every server with a joined member, and the target's server of a
    /// membership change (who may just have left).
    Local,
    /// A remote event we accepted on its server's behalf (send_join, send_leave, send_knock):
    /// every server in the room except its origin, which has it.
    Forward { origin: &'a str },
    /// A remote event received by /send: its origin sends it to the others itself.
    None,
}

/// One entry of the current state that changes, with the membership it sets if it is an
/// m.room.member event: (user ID, membership).
#[derive(Debug, Clone)]
pub struct StateChange {
    pub state_key_nid: i64,
    pub event_nid: i64,
    pub member: Option<(String, MembershipState)>,
}

/// What the event does to the room's current state.
pub enum Current {
    /// Nothing (a message on the current state, a rejected or soft-failed event).
    Keep,
    /// The state after the event becomes current: it extends every forward extremity.
    /// `also` lists entries where the state before it differs from the old current state.
    Extend { also: Vec<StateChange> },
    /// The current state is the resolution of the old one with the state after the event;
    /// `changes` are the entries that differ from the old current state, `removed` the state
    /// keys it no longer has (an entry whose only events lost the resolution).
    Resolved {
        changes: Vec<StateChange>,
        removed: Vec<i64>,
    },
}

/// An event that went through the checks, ready to store.
pub struct Checked<'a> {
    pub event_id: &'a ruma::EventId,
    pub json: &'a str,
    pub pdu: &'a Pdu,
    pub room: &'a RoomRow,
    pub state_before: Option<i64>,
    /// Failed authorisation: stored for the graph's sake, never state, never shown.
    pub rejected: Option<String>,
    /// Passed auth at its own place in the graph but not against the current state.
    pub soft_failed: bool,
    pub current: Current,
    pub txn: Option<TxnRef<'a>>,
    pub fan_out: FanOut<'a>,
    /// Backfilled history: placed before everything in the stream (a negative position),
    /// never a forward extremity, never current state.
    pub historical: bool,
}

impl<'a> Checked<'a> {
    /// An event that passed every check, with the state it stands on, what it does to the
    /// current state and how it reaches other servers. Callers set what differs on top:
    /// a rejection or soft failure, a client transaction, backfilled history.
    pub fn accepted(
        event_id: &'a ruma::EventId,
        json: &'a str,
        pdu: &'a Pdu,
        room: &'a RoomRow,
        state_before: Option<i64>,
        current: Current,
        fan_out: FanOut<'a>,
    ) -> Self {
        Checked {
            event_id,
            json,
            pdu,
            room,
            state_before,
            rejected: None,
            soft_failed: false,
            current,
            txn: None,
            fan_out,
            historical: false,
        }
    }
}

/// The row of `pdu` (stored as `json`), numbered `event_nid` in room `room_nid`, as an
/// accepted timeline event: the one place a PDU's fields become an event row. Callers set
/// what differs on top (outlier, rejection, soft failure, state groups).
pub fn event_row<'a>(
    pdu: &'a Pdu,
    json: &'a str,
    room_nid: i64,
    event_nid: i64,
    kind: &'a str,
    state_key_nid: Option<i64>,
) -> NewEvent<'a> {
    NewEvent {
        state_key_nid,
        ..NewEvent::new(
            event_nid,
            room_nid,
            kind,
            pdu.sender.as_str(),
            i64::try_from(u64::from(pdu.origin_server_ts.0)).unwrap_or(i64::MAX),
            pdu.depth.max(1),
            json,
        )
    }
}

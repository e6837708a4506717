//! Which client endpoints guest accounts may call.
//!
//! The spec's Guest Access module lists them (reading rooms and media, joining, leaving and
//! sending, their own profile and devices, end-to-end keys); Synapse also lets guests keep
//! the ephemeral side of a room they joined going (typing, receipts, read markers, presence),
//! read profiles and the room directory, log out, and upgrade their account through
//! `/register`. Every other endpoint taking an access token answers a guest's with
//! `403 M_GUEST_ACCESS_FORBIDDEN`. The list is of ruma request types, so it follows the
//! routes through every path version.

use std::any::TypeId;

use ruma::api::client::{
    account::{register, whoami},
    authenticated_media as media, context, device, directory, discovery, keys, membership, message,
    presence, profile, read_marker, receipt, room, session, state, sync, to_device, typing, voip,
};

use crate::error::Error;

/// Whether a guest may call the endpoint of request type `T`.
pub fn allowed<T: 'static>() -> bool {
    ALLOWED.contains(&TypeId::of::<T>())
}

/// The error for a guest calling any other endpoint.
pub fn forbidden() -> Error {
    Error::new(
        ruma::api::error::ErrorKind::GuestAccessForbidden,
        "Guest access not allowed",
    )
}

static ALLOWED: std::sync::LazyLock<Vec<TypeId>> = std::sync::LazyLock::new(|| {
    vec![
        // Retrieving events and media (spec).
        TypeId::of::<state::get_state_events::v3::Request>(),
        TypeId::of::<state::get_state_event_for_key::v3::Request>(),
        TypeId::of::<context::get_context::v3::Request>(),
        TypeId::of::<room::get_room_event::v3::Request>(),
        TypeId::of::<message::get_message_events::v3::Request>(),
        TypeId::of::<membership::get_member_events::v3::Request>(),
        TypeId::of::<sync::sync_events::v3::Request>(),
        TypeId::of::<sync::sync_events::v5::Request>(),
        TypeId::of::<media::get_content::v1::Request>(),
        TypeId::of::<media::get_content_as_filename::v1::Request>(),
        TypeId::of::<media::get_content_thumbnail::v1::Request>(),
        // Sending events (spec).
        TypeId::of::<membership::join_room_by_id::v3::Request>(),
        TypeId::of::<membership::join_room_by_id_or_alias::v3::Request>(),
        TypeId::of::<membership::leave_room::v3::Request>(),
        TypeId::of::<message::send_message_event::v3::Request>(),
        TypeId::of::<state::send_state_event::v3::Request>(),
        TypeId::of::<to_device::send_event_to_device::v3::Request>(),
        // Their own account (spec), and upgrading it.
        TypeId::of::<profile::set_display_name::v3::Request>(),
        TypeId::of::<profile::set_avatar_url::v3::Request>(),
        TypeId::of::<device::get_devices::v3::Request>(),
        TypeId::of::<device::get_device::v3::Request>(),
        TypeId::of::<device::update_device::v3::Request>(),
        TypeId::of::<whoami::v3::Request>(),
        TypeId::of::<register::v3::Request>(),
        TypeId::of::<session::logout::v3::Request>(),
        // End-to-end encryption (spec; key changes as Synapse).
        TypeId::of::<keys::upload_keys::v3::Request>(),
        TypeId::of::<keys::get_keys::v3::Request>(),
        TypeId::of::<keys::claim_keys::v3::Request>(),
        TypeId::of::<keys::get_key_changes::v3::Request>(),
        // What Synapse lets guests do besides.
        TypeId::of::<typing::create_typing_event::v3::Request>(),
        TypeId::of::<receipt::create_receipt::v3::Request>(),
        TypeId::of::<read_marker::set_read_marker::v3::Request>(),
        TypeId::of::<presence::get_presence::v3::Request>(),
        TypeId::of::<presence::set_presence::v3::Request>(),
        TypeId::of::<profile::get_profile::v3::Request>(),
        TypeId::of::<profile::get_display_name::v3::Request>(),
        TypeId::of::<profile::get_avatar_url::v3::Request>(),
        TypeId::of::<directory::get_public_rooms::v3::Request>(),
        TypeId::of::<directory::get_public_rooms_filtered::v3::Request>(),
        TypeId::of::<discovery::get_capabilities::v3::Request>(),
        TypeId::of::<voip::get_turn_server_info::v3::Request>(),
    ]
});

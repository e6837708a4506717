#!/usr/bin/env python3
"""Drives a running Trellis through matrix-nio, the way a real client would.

Every check goes through the SDK's own API (register, login, room_create, sync, room_messages,
...), so it also checks that Trellis answers in the shapes and with the semantics a widely used
client library expects. Run by scripts/sdk-test, which starts a fresh server; by hand:

    target/sdk/venv/bin/python tests/sdk/suite.py --homeserver http://127.0.0.1:8008

Cases run in order; a case whose prerequisite failed is skipped. The last line is
"N passed, N failed" and the exit status is non-zero when any case failed or was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nio import (
    AsyncClient,
    AsyncClientConfig,
    EnableEncryptionBuilder,
    FullyReadEvent,
    JoinResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    ProfileGetResponse,
    PushNotify,
    PushRuleKind,
    PushRulesEvent,
    ReceiptEvent,
    RedactedEvent,
    RedactionEvent,
    RegisterResponse,
    RoomCreateEvent,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomInviteResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomReadMarkersResponse,
    RoomRedactResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SetPushRuleResponse,
    SyncResponse,
    TypingNoticeEvent,
    UpdateReceiptMarkerResponse,
    UploadFilterResponse,
    WhoamiResponse,
)

MESSAGES = 64  # more than one page of sync timeline or /messages at any limit used below
PASSWORD = "correct horse battery staple"
WAIT = 15.0  # seconds to wait for something another client did to arrive through /sync


class CaseFailed(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise CaseFailed(message)


def ok(response: object, kind: type, what: str):
    """The response must be of the SDK's success type; its error otherwise says why not."""
    if not isinstance(response, kind):
        raise CaseFailed(f"{what}: expected {kind.__name__}, got {response!r}")
    return response


@dataclass
class World:
    """What the cases share: the server, the two users' clients and what they made."""

    homeserver: str
    store: str
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    alice: AsyncClient | None = None
    bob: AsyncClient | None = None
    room_id: str = ""
    sent: list[str] = field(default_factory=list)  # event IDs of the messages, in order
    bodies: dict[str, str] = field(default_factory=dict)  # event ID -> body
    filtered_timeline: list = field(default_factory=list)
    prev_batch: str = ""
    encrypted_room_id: str = ""

    def client(self, encryption: bool = True) -> AsyncClient:
        config = AsyncClientConfig(
            encryption_enabled=encryption,
            store_sync_tokens=False,
            max_timeouts=2,
            request_timeout=30,
        )
        return AsyncClient(self.homeserver, "", store_path=self.store, config=config)

    def reader(self, who: AsyncClient) -> AsyncClient:
        """A second, store-less client on the same login: its first /sync is an initial one."""
        c = self.client(encryption=False)
        c.restore_login(who.user_id, who.device_id, who.access_token)
        return c


async def sync(client: AsyncClient, **kwargs) -> SyncResponse:
    return ok(await client.sync(**kwargs), SyncResponse, f"sync of {client.user_id}")


async def sync_until(client: AsyncClient, found: Callable[[SyncResponse], object], what: str):
    """Incremental syncs (long-polling) until `found` returns something truthy, which is returned."""
    deadline = time.monotonic() + WAIT
    while True:
        remaining = deadline - time.monotonic()
        check(remaining > 0, f"{client.user_id} did not see {what} within {WAIT:.0f}s")
        response = await sync(client, timeout=int(min(remaining, 5) * 1000))
        result = found(response)
        if result:
            return result


def timeline(response: SyncResponse, room_id: str) -> list:
    info = response.rooms.join.get(room_id)
    return info.timeline.events if info else []


def ephemeral(response: SyncResponse, room_id: str) -> list:
    info = response.rooms.join.get(room_id)
    return info.ephemeral if info else []


# ---------------------------------------------------------------------------------------------
# The cases, in the order they run. Each takes the World and raises CaseFailed (or anything)
# when Trellis did not behave as the SDK expects.


async def case_register(w: World) -> None:
    for name in ("alice", "bob"):
        c = w.client(encryption=False)
        try:
            r = ok(await c.register(f"{name}-{w.suffix}", PASSWORD), RegisterResponse, "register")
            check(r.user_id.startswith(f"@{name}-{w.suffix}:"), f"user ID {r.user_id}")
            check(r.access_token and r.device_id, "register returned a token and a device")
            who = ok(await c.whoami(), WhoamiResponse, "whoami after register")
            check(who.user_id == r.user_id, f"whoami says {who.user_id}")
        finally:
            await c.close()


async def case_login(w: World) -> None:
    for name in ("alice", "bob"):
        c = w.client()
        c.user = f"{name}-{w.suffix}"
        r = ok(await c.login(PASSWORD, device_name=f"sdk {name}"), LoginResponse, "login")
        check(c.access_token == r.access_token and c.device_id == r.device_id, "client logged in")
        check(c.olm is not None, "the SDK loaded its crypto store after login")
        who = ok(await c.whoami(), WhoamiResponse, "whoami after login")
        check(who.user_id == r.user_id, f"whoami says {who.user_id}")
        check(who.device_id == r.device_id, f"whoami names the device: {who.device_id}")
        await sync(c)  # the first, initial sync: the clients keep syncing incrementally after it
        setattr(w, name, c)


async def case_create_room(w: World) -> None:
    r = ok(
        await w.alice.room_create(name="SDK suite", topic="driven by matrix-nio"),
        RoomCreateResponse,
        "room_create",
    )
    w.room_id = r.room_id

    def created(_resp):
        room = w.alice.rooms.get(w.room_id)
        return room and room.name == "SDK suite" and room.topic == "driven by matrix-nio"

    await sync_until(w.alice, created, "the new room with its name and topic")
    room = w.alice.rooms[w.room_id]
    check(room.own_user_id in room.users, "alice is a member of her room")


async def case_invite(w: World) -> None:
    ok(await w.alice.room_invite(w.room_id, w.bob.user_id), RoomInviteResponse, "room_invite")
    await sync_until(w.bob, lambda r: w.room_id in r.rooms.invite, "the invite")
    check(w.room_id in w.bob.invited_rooms, "the SDK lists the room among bob's invites")
    invited = w.bob.invited_rooms[w.room_id]
    check(invited.name == "SDK suite", f"the invite's stripped state names the room: {invited.name}")


async def case_join(w: World) -> None:
    r = ok(await w.bob.join(w.room_id), JoinResponse, "join")
    check(r.room_id == w.room_id, f"joined {r.room_id}")
    await sync_until(w.bob, lambda r: w.room_id in r.rooms.join, "the room among joined rooms")
    check(w.room_id in w.bob.rooms and w.room_id not in w.bob.invited_rooms, "bob's room lists")

    def bob_joined(resp):
        return any(
            isinstance(e, RoomMemberEvent)
            and e.state_key == w.bob.user_id
            and e.membership == "join"
            for e in timeline(resp, w.room_id)
        )

    await sync_until(w.alice, bob_joined, "bob's join")
    check(w.bob.user_id in w.alice.rooms[w.room_id].users, "alice's client counts bob in")


async def case_send(w: World) -> None:
    for i in range(MESSAGES):
        body = f"message {i:03d}"
        r = ok(
            await w.alice.room_send(w.room_id, "m.room.message", {"msgtype": "m.text", "body": body}),
            RoomSendResponse,
            f"room_send {i}",
        )
        w.sent.append(r.event_id)
        w.bodies[r.event_id] = body
    check(len(set(w.sent)) == MESSAGES, "every send got its own event ID")

    # Bob's incremental syncs bring all of them, in order, unless one says it was limited.
    seen: list[str] = []

    def all_arrived(resp):
        info = resp.rooms.join.get(w.room_id)
        if info is None:
            return False
        check(not info.timeline.limited or not seen, "an incremental sync skipped messages")
        for e in info.timeline.events:
            if isinstance(e, RoomMessageText):
                seen.append(e.event_id)
        return len(seen) >= MESSAGES

    # A limited first batch is fine (the server chose a timeline limit); then fill from /messages.
    first = await sync(w.bob)
    info = first.rooms.join.get(w.room_id)
    if info is not None and info.timeline.limited:
        seen = [e.event_id for e in info.timeline.events if isinstance(e, RoomMessageText)]
        missing = MESSAGES - len(seen)
        r = ok(
            await w.bob.room_messages(w.room_id, start=info.timeline.prev_batch, limit=missing),
            RoomMessagesResponse,
            "room_messages to fill a limited sync",
        )
        older = [e.event_id for e in r.chunk if isinstance(e, RoomMessageText)]
        seen = list(reversed(older)) + seen
    elif info is not None:
        seen = [e.event_id for e in info.timeline.events if isinstance(e, RoomMessageText)]
    if len(seen) < MESSAGES:
        await sync_until(w.bob, all_arrived, f"all {MESSAGES} messages")
    check(seen == w.sent, "bob got alice's messages in the order she sent them")


async def case_sync_filter(w: World) -> None:
    limit = 10
    r = ok(
        await w.bob.upload_filter(
            room={
                "rooms": [w.room_id],
                "timeline": {"limit": limit, "types": ["m.room.message"]},
                "state": {"types": ["m.room.name", "m.room.member"]},
            },
            presence={"not_types": ["*"]},
        ),
        UploadFilterResponse,
        "upload_filter",
    )
    check(r.filter_id, "a filter ID")

    reader = w.reader(w.bob)
    try:
        resp = await sync(reader, sync_filter=r.filter_id)
        info = resp.rooms.join.get(w.room_id)
        check(info is not None, "the filtered initial sync has the room")
        events = info.timeline.events
        check(len(events) == limit, f"timeline limit {limit}, got {len(events)}")
        check(all(isinstance(e, RoomMessageText) for e in events), "only m.room.message")
        check([e.event_id for e in events] == w.sent[-limit:], "the latest messages, in order")
        check(info.timeline.limited and info.timeline.prev_batch, "limited, with a prev_batch")
        state_types = {e.source["type"] for e in info.state}
        check(state_types <= {"m.room.name", "m.room.member"}, f"state filter: {state_types}")
        check(reader.rooms[w.room_id].name == "SDK suite", "the SDK built the room from state")
        w.filtered_timeline = events
        w.prev_batch = info.timeline.prev_batch

        # The same filter given inline rather than stored, with the opposite type condition.
        inline = {"room": {"rooms": [w.room_id], "timeline": {"not_types": ["m.room.message"]}}}
        other = w.reader(w.bob)
        try:
            resp = await sync(other, sync_filter=inline)
            events = resp.rooms.join[w.room_id].timeline.events
            check(events, "the inline-filtered timeline is not empty")
            check(
                not any(e.source["type"] == "m.room.message" for e in events),
                "not_types removed the messages",
            )
        finally:
            await other.close()
    finally:
        await reader.close()


async def case_back_paginate(w: World) -> None:
    """From the filtered sync's prev_batch back to m.room.create: every message exactly once."""
    chunks: list = []
    token = w.prev_batch
    requests = 0
    while True:
        requests += 1
        check(requests < 100, "back-pagination does not end")
        r = ok(
            await w.bob.room_messages(w.room_id, start=token, direction=MessageDirection.back, limit=7),
            RoomMessagesResponse,
            "room_messages backwards",
        )
        check(r.start == token, "the response's start is the token asked from")
        chunks.extend(r.chunk)
        if not r.end or not r.chunk:
            break
        token = r.end
    check(chunks and isinstance(chunks[-1], RoomCreateEvent), "pagination reached m.room.create")
    check(
        not any(isinstance(e, RoomCreateEvent) for e in chunks[:-1]),
        "m.room.create is the oldest event",
    )
    ids = [e.event_id for e in chunks]
    check(len(ids) == len(set(ids)), "no event came twice")
    older = [e.event_id for e in reversed(chunks) if isinstance(e, RoomMessageText)]
    everything = older + [e.event_id for e in w.filtered_timeline]
    check(everything == w.sent, "each message exactly once, in the order sent")
    check(requests > MESSAGES // 7, f"{requests} pages of at most 7 events")

    # Forwards from the room's start (no token) gives the same events, oldest first, ending
    # with the filtered sync's timeline.
    forward: list = []
    token = None
    for _ in range(100):
        r = ok(
            await w.bob.room_messages(w.room_id, start=token, direction=MessageDirection.front, limit=9),
            RoomMessagesResponse,
            "room_messages forwards",
        )
        forward.extend(r.chunk)
        if not r.end or not r.chunk:
            break
        token = r.end
    expected = list(reversed(ids)) + [e.event_id for e in w.filtered_timeline]
    check([e.event_id for e in forward] == expected, "forwards: the same events in reverse")


async def case_redact(w: World) -> None:
    target = w.sent[5]
    r = ok(
        await w.alice.room_redact(w.room_id, target, reason="sdk suite"),
        RoomRedactResponse,
        "room_redact",
    )

    def redaction_seen(resp):
        return any(
            isinstance(e, RedactionEvent) and e.redacts == target and e.event_id == r.event_id
            for e in timeline(resp, w.room_id)
        )

    await sync_until(w.bob, redaction_seen, "the redaction")
    got = ok(await w.bob.room_get_event(w.room_id, target), RoomGetEventResponse, "room_get_event")
    check(isinstance(got.event, RedactedEvent), f"the event is redacted: {got.event!r}")
    check(got.event.redacter == w.alice.user_id, f"redacted by {got.event.redacter}")
    check(got.event.reason == "sdk suite", f"reason {got.event.reason!r}")
    check("body" not in got.event.source.get("content", {}), "the body is gone")

    # /messages shows it redacted too.
    token = None
    found = None
    for _ in range(20):
        page = ok(
            await w.bob.room_messages(w.room_id, start=token or w.bob.next_batch, limit=30),
            RoomMessagesResponse,
            "room_messages after redaction",
        )
        found = next((e for e in page.chunk if e.event_id == target), None)
        if found or not page.end:
            break
        token = page.end
    check(isinstance(found, RedactedEvent), f"/messages serves the redacted event: {found!r}")


async def case_typing(w: World) -> None:
    ok(await w.alice.room_typing(w.room_id, True, timeout=30000), RoomTypingResponse, "typing on")

    def typing_is(users):
        def seen(resp):
            for e in ephemeral(resp, w.room_id):
                if isinstance(e, TypingNoticeEvent) and e.users == users:
                    return True
            return False

        return seen

    await sync_until(w.bob, typing_is([w.alice.user_id]), "alice typing")
    check(w.bob.rooms[w.room_id].typing_users == [w.alice.user_id], "the SDK's typing list")
    ok(await w.alice.room_typing(w.room_id, False), RoomTypingResponse, "typing off")
    await sync_until(w.bob, typing_is([]), "alice no longer typing")
    check(w.bob.rooms[w.room_id].typing_users == [], "the SDK's typing list is empty")


async def case_receipts(w: World) -> None:
    def receipt_seen(event_id: str):
        def seen(resp):
            for e in ephemeral(resp, w.room_id):
                if isinstance(e, ReceiptEvent):
                    for rc in e.receipts:
                        if rc.user_id == w.bob.user_id and rc.event_id == event_id:
                            return rc
            return None

        return seen

    # The SDK's default: a receipt on the main timeline (thread_id "main").
    threaded = w.sent[-2]
    ok(
        await w.bob.update_receipt_marker(w.room_id, threaded),
        UpdateReceiptMarkerResponse,
        "update_receipt_marker",
    )
    rc = await sync_until(w.alice, receipt_seen(threaded), "bob's read receipt (main thread)")
    check(rc.receipt_type == "m.read", f"receipt type {rc.receipt_type}")
    check(rc.thread_id == "main", f"thread {rc.thread_id!r}")
    check(rc.timestamp > 0, "the receipt has a timestamp")
    mine = w.alice.rooms[w.room_id].threaded_read_receipts.get(w.bob.user_id, {}).get("main")
    check(mine is not None and mine.event_id == threaded, "the SDK keeps bob's main receipt")

    # An unthreaded receipt (thread_id null) on the last message.
    last = w.sent[-1]
    ok(
        await w.bob.update_receipt_marker(w.room_id, last, thread_id=None),
        UpdateReceiptMarkerResponse,
        "update_receipt_marker (unthreaded)",
    )
    rc = await sync_until(w.alice, receipt_seen(last), "bob's unthreaded read receipt")
    check(rc.thread_id is None, f"thread {rc.thread_id!r}")
    mine = w.alice.rooms[w.room_id].read_receipts.get(w.bob.user_id)
    check(mine is not None and mine.event_id == last, "the SDK keeps bob's receipt")


async def case_account_data(w: World) -> None:
    # Room account data: the fully-read marker (m.fully_read), set with read markers.
    marker = w.sent[40]
    ok(
        await w.alice.room_read_markers(w.room_id, fully_read_event=marker, read_event=marker),
        RoomReadMarkersResponse,
        "room_read_markers",
    )

    def fully_read(resp):
        info = resp.rooms.join.get(w.room_id)
        return info and any(
            isinstance(e, FullyReadEvent) and e.event_id == marker for e in info.account_data
        )

    await sync_until(w.alice, fully_read, "m.fully_read in room account data")
    check(w.alice.rooms[w.room_id].fully_read_marker == marker, "the SDK's fully-read marker")

    # Global account data: push rules live in m.push_rules, and the SDK reads them from /sync.
    ok(
        await w.alice.set_pushrule(
            "global", PushRuleKind.content, "sdk-suite", actions=[PushNotify()], pattern="trellis"
        ),
        SetPushRuleResponse,
        "set_pushrule",
    )

    def rule_seen(resp):
        for e in resp.account_data_events:
            if isinstance(e, PushRulesEvent):
                for rule in e.global_rules.content:
                    if rule.id == "sdk-suite":
                        return rule
        return None

    rule = await sync_until(w.alice, rule_seen, "the new push rule in m.push_rules")
    check(rule.pattern == "trellis" and not rule.default, f"the rule as set: {rule!r}")
    check(any(isinstance(a, PushNotify) for a in rule.actions), "its notify action")

    # A fresh client's initial sync brings the same account data.
    reader = w.reader(w.alice)
    try:
        resp = await sync(reader)
        check(rule_seen(resp), "an initial sync has the push rule")
        check(fully_read(resp), "an initial sync has the fully-read marker")
    finally:
        await reader.close()


async def case_profile(w: World) -> None:
    avatar = f"mxc://{w.alice.user_id.split(':', 1)[1]}/sdksuiteavatar"
    ok(await w.alice.set_displayname("Alice Liddell"), object, "set_displayname")
    ok(await w.alice.set_avatar(avatar), object, "set_avatar")
    p = ok(await w.bob.get_profile(w.alice.user_id), ProfileGetResponse, "get_profile")
    check(p.displayname == "Alice Liddell", f"displayname {p.displayname!r}")
    check(p.avatar_url == avatar, f"avatar_url {p.avatar_url!r}")
    name = await w.bob.get_displayname(w.alice.user_id)
    check(getattr(name, "displayname", None) == "Alice Liddell", f"get_displayname: {name!r}")
    av = await w.bob.get_avatar(w.alice.user_id)
    check(getattr(av, "avatar_url", None) == avatar, f"get_avatar: {av!r}")

    # The change reaches the room as alice's member event, and bob's client uses it.
    def member_updated(_resp):
        user = w.bob.rooms[w.room_id].users.get(w.alice.user_id)
        return user and user.display_name == "Alice Liddell" and user.avatar_url == avatar

    await sync_until(w.bob, member_updated, "alice's new display name and avatar in the room")
    check(w.bob.rooms[w.room_id].user_name(w.alice.user_id) == "Alice Liddell", "user_name")


async def case_encryption(w: World) -> None:
    # Both devices publish identity and one-time keys.
    uploaded = {}
    for c in (w.alice, w.bob):
        check(c.should_upload_keys, f"{c.user_id} has keys to upload")
        r = ok(await c.keys_upload(), KeysUploadResponse, "keys_upload")
        check(r.signed_curve25519_count > 0, f"one-time key count {r.signed_curve25519_count}")
        uploaded[c.user_id] = r.signed_curve25519_count

    r = ok(
        await w.alice.room_create(
            name="SDK encrypted", invite=[w.bob.user_id], initial_state=[EnableEncryptionBuilder().as_dict()]
        ),
        RoomCreateResponse,
        "room_create (encrypted)",
    )
    w.encrypted_room_id = room = r.room_id
    await sync_until(w.bob, lambda r: room in r.rooms.invite, "the encrypted room's invite")
    ok(await w.bob.join(room), JoinResponse, "join (encrypted)")
    await sync_until(w.bob, lambda r: room in r.rooms.join, "the encrypted room joined")
    check(w.bob.rooms[room].encrypted, "bob's client knows the room is encrypted")

    def bob_in(_resp):
        return w.bob.user_id in w.alice.rooms[room].users

    await sync_until(w.alice, bob_in, "bob in the encrypted room")
    check(w.alice.rooms[room].encrypted, "alice's client knows the room is encrypted")

    # Each queries the other's device keys and finds the ones the other uploaded.
    for me, other in ((w.alice, w.bob), (w.bob, w.alice)):
        if me.should_query_keys:
            ok(await me.keys_query(), KeysQueryResponse, "keys_query")
        devices = me.device_store.active_user_devices(other.user_id)
        found = {d.device_id: d for d in devices}
        check(other.device_id in found, f"{me.user_id} found {other.user_id}'s device")
        keys = found[other.device_id]
        check(keys.ed25519 == other.olm.account.identity_keys["ed25519"], "the ed25519 key")
        check(keys.curve25519 == other.olm.account.identity_keys["curve25519"], "the curve25519 key")

    # Alice sends; the SDK claims a one-time key of bob's, sends him the room key over to-device
    # (Olm), and encrypts the message with Megolm. Bob's client decrypts both.
    secret = f"the secret word is {secrets.token_hex(4)}"
    sent = ok(
        await w.alice.room_send(
            room, "m.room.message", {"msgtype": "m.text", "body": secret}, ignore_unverified_devices=True
        ),
        RoomSendResponse,
        "room_send (encrypted)",
    )

    got = await sync_until(w.bob, decrypted(w.bob, room, sent.event_id), "alice's message, decrypted")
    check(isinstance(got, RoomMessageText), f"decrypted to a text message: {got!r}")
    check(got.body == secret, f"decrypted body {got.body!r}")
    check(got.decrypted and got.sender == w.alice.user_id, "decrypted, from alice")
    check(got.source.get("type") == "m.room.message", "the clear event type")
    # Alice's client claimed one of bob's one-time keys, and bob's sync counts one fewer.
    left = w.bob.olm.uploaded_key_count
    check(left == uploaded[w.bob.user_id] - 1, f"bob has {left} one-time keys left")

    # And back: bob answers in the room, alice's client decrypts it.
    answer = f"heard: {secret}"
    reply = ok(
        await w.bob.room_send(
            room, "m.room.message", {"msgtype": "m.text", "body": answer}, ignore_unverified_devices=True
        ),
        RoomSendResponse,
        "room_send (encrypted reply)",
    )

    got = await sync_until(w.alice, decrypted(w.alice, room, reply.event_id), "bob's reply, decrypted")
    check(got.body == answer and got.decrypted, f"alice decrypted {got.body!r}")

    # Fetched on its own, bob's client decrypts it again with the stored room key.
    again = ok(await w.bob.room_get_event(room, sent.event_id), RoomGetEventResponse, "room_get_event")
    check(getattr(again.event, "body", None) == secret, f"decrypted again: {again.event!r}")

    # The server holds only ciphertext: a client without keys gets an m.room.encrypted event.
    reader = w.reader(w.bob)
    try:
        raw = ok(await reader.room_get_event(room, sent.event_id), RoomGetEventResponse, "room_get_event")
        check(isinstance(raw.event, MegolmEvent), f"an encrypted event: {raw.event!r}")
        check(raw.event.source["type"] == "m.room.encrypted", "stored as m.room.encrypted")
        check(raw.event.session_id and raw.event.ciphertext, "megolm session and ciphertext")
        check(secret not in str(raw.event.source), "the server never saw the plaintext")
    finally:
        await reader.close()


def decrypted(client: AsyncClient, room_id: str, event_id: str):
    """A sync_until test for the event, decrypted by the client's SDK. The room key may come
    over to-device in a later sync than the message: then the kept event is decrypted."""
    undecrypted: list[MegolmEvent] = []

    def found(resp):
        for e in timeline(resp, room_id):
            if e.event_id != event_id:
                continue
            if isinstance(e, RoomMessageText):
                return e
            if isinstance(e, MegolmEvent):
                undecrypted.append(e)
        for e in undecrypted:
            try:
                return client.decrypt_event(e)
            except Exception:
                pass
        return None

    return found


CASES: list[tuple[str, Callable[[World], Awaitable[None]], tuple[str, ...]]] = [
    ("register", case_register, ()),
    ("login", case_login, ("register",)),
    ("create room", case_create_room, ("login",)),
    ("invite", case_invite, ("create room",)),
    ("join", case_join, ("invite",)),
    ("send", case_send, ("join",)),
    ("sync with a filter", case_sync_filter, ("send",)),
    ("back-pagination to the start", case_back_paginate, ("sync with a filter",)),
    ("redaction", case_redact, ("send",)),
    ("typing", case_typing, ("join",)),
    ("read receipts", case_receipts, ("send",)),
    ("account data", case_account_data, ("send",)),
    ("profile", case_profile, ("join",)),
    ("encryption", case_encryption, ("login",)),
]


async def run(homeserver: str) -> int:
    passed, failed, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="trellis-sdk-store-") as store:
        w = World(homeserver=homeserver, store=store)
        try:
            for name, fn, needs in CASES:
                if any(n not in passed for n in needs):
                    skipped.append(name)
                    print(f"SKIP  {name} (needs {', '.join(needs)})", flush=True)
                    continue
                start = time.monotonic()
                try:
                    await fn(w)
                except Exception as e:  # a crash inside the SDK is a failure too
                    failed.append(name)
                    print(f"FAIL  {name}: {e}", flush=True)
                    if not isinstance(e, CaseFailed):
                        traceback.print_exc()
                else:
                    passed.append(name)
                    print(f"ok    {name} ({time.monotonic() - start:.1f}s)", flush=True)
        finally:
            for c in (w.alice, w.bob):
                if c is not None:
                    await c.close()
    tail = f", {len(skipped)} skipped" if skipped else ""
    print(f"sdk: {len(passed)} passed, {len(failed)} failed{tail}")
    return 1 if failed or skipped else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--homeserver", required=True, help="e.g. http://127.0.0.1:8008")
    parser.add_argument("--verbose", action="store_true", help="the SDK's own debug log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR)
    return asyncio.run(run(args.homeserver))


if __name__ == "__main__":
    sys.exit(main())

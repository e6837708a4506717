-- The event DAG store: rooms, events and their graph, state groups, current state,
-- extremities and memberships. Graph and state tables hold numbers (event_nid, room_nid,
-- state_key_nid), never strings, so their indexes stay small.

CREATE TABLE rooms (
    -- Internal number of the room.
    room_nid       BIGSERIAL NOT NULL,
    -- The room ID, e.g. !abc:example.org.
    room_id        TEXT      NOT NULL,
    -- Room version, e.g. '10'.
    room_version   TEXT      NOT NULL,
    -- State group of the room's current state (the state after its forward extremities,
    -- resolved); NULL until the create event is stored.
    state_group    BIGINT,
    -- Published in the room directory.
    is_public      BOOLEAN   NOT NULL DEFAULT FALSE,
    CONSTRAINT rooms_pkey PRIMARY KEY (room_nid),
    CONSTRAINT rooms_room_id_key UNIQUE (room_id)
);

-- Event IDs are interned: the graph refers to events we have not seen yet (missing prev
-- events), so numbering is separate from storing.
CREATE TABLE event_ids (
    event_nid      BIGSERIAL NOT NULL,
    event_id       TEXT      NOT NULL,
    CONSTRAINT event_ids_pkey PRIMARY KEY (event_nid),
    CONSTRAINT event_ids_event_id_key UNIQUE (event_id)
);

-- (type, state_key) pairs, interned.
CREATE TABLE state_keys (
    state_key_nid  BIGSERIAL NOT NULL,
    event_type     TEXT      NOT NULL,
    state_key      TEXT      NOT NULL,
    CONSTRAINT state_keys_pkey PRIMARY KEY (state_key_nid),
    CONSTRAINT state_keys_type_key_key UNIQUE (event_type, state_key)
);

-- Live events count up from 1; backfilled events count down from -1, so a sync position
-- never moves backwards.
CREATE SEQUENCE events_stream_seq START 1;
CREATE SEQUENCE events_backfill_seq START 1;

CREATE TABLE events (
    -- Number from event_ids.
    event_nid         BIGINT  NOT NULL,
    room_nid          BIGINT  NOT NULL,
    -- Event type, and for state events the interned (type, state_key).
    event_type        TEXT    NOT NULL,
    state_key_nid     BIGINT,
    sender            TEXT    NOT NULL,
    origin_server_ts  BIGINT  NOT NULL,
    -- Depth from the PDU (clamped to be positive).
    depth             BIGINT  NOT NULL,
    -- Position in the event stream; NULL for outliers, which are not in the timeline.
    stream_ordering   BIGINT,
    -- The PDU as canonical JSON, exactly as signed; never re-serialised.
    json              TEXT    NOT NULL,
    -- Known only through state or auth chains, not placed in the timeline.
    outlier           BOOLEAN NOT NULL DEFAULT FALSE,
    -- Why the event failed authorisation; rejected events never become state or reach clients.
    rejected_reason   TEXT,
    -- Passed auth against its own state but not against current state: kept, not shown.
    soft_failed       BOOLEAN NOT NULL DEFAULT FALSE,
    -- The redaction event that redacted this one (served redacted), if any.
    redacted_by       BIGINT,
    -- State groups before and after this event.
    state_before      BIGINT,
    state_after       BIGINT,
    CONSTRAINT events_pkey PRIMARY KEY (event_nid),
    CONSTRAINT events_event_nid_fkey FOREIGN KEY (event_nid) REFERENCES event_ids (event_nid),
    CONSTRAINT events_room_fkey FOREIGN KEY (room_nid) REFERENCES rooms (room_nid),
    CONSTRAINT events_stream_ordering_key UNIQUE (stream_ordering)
);
-- Topological pagination (/messages), sync by stream, timestamp look-ups.
CREATE INDEX events_room_topo_idx ON events (room_nid, depth, stream_ordering) WHERE stream_ordering IS NOT NULL;
CREATE INDEX events_room_stream_idx ON events (room_nid, stream_ordering) WHERE stream_ordering IS NOT NULL;
CREATE INDEX events_room_ts_idx ON events (room_nid, origin_server_ts);

-- prev_events edges, indexed both ways: backfill walks to parents, missing-event walks too.
CREATE TABLE event_edges (
    event_nid       BIGINT NOT NULL,
    prev_event_nid  BIGINT NOT NULL,
    CONSTRAINT event_edges_pkey PRIMARY KEY (event_nid, prev_event_nid)
);
CREATE INDEX event_edges_prev_idx ON event_edges (prev_event_nid);

-- auth_events edges: auth chains are walks over this table.
CREATE TABLE event_auth_edges (
    event_nid       BIGINT NOT NULL,
    auth_event_nid  BIGINT NOT NULL,
    CONSTRAINT event_auth_edges_pkey PRIMARY KEY (event_nid, auth_event_nid)
);
CREATE INDEX event_auth_edges_auth_idx ON event_auth_edges (auth_event_nid);

-- State groups: a full snapshot (prev_group NULL) or a delta against prev_group. Chains are
-- capped (chain_len), so reading a state is one bounded recursive query.
CREATE TABLE state_groups (
    state_group  BIGSERIAL NOT NULL,
    room_nid     BIGINT    NOT NULL,
    prev_group   BIGINT,
    -- Number of deltas between this group and its snapshot (0 for a snapshot).
    chain_len    INT       NOT NULL,
    CONSTRAINT state_groups_pkey PRIMARY KEY (state_group),
    CONSTRAINT state_groups_prev_fkey FOREIGN KEY (prev_group) REFERENCES state_groups (state_group)
);

CREATE TABLE state_group_entries (
    state_group    BIGINT NOT NULL,
    state_key_nid  BIGINT NOT NULL,
    -- The state event for this key in this group.
    event_nid      BIGINT NOT NULL,
    CONSTRAINT state_group_entries_pkey PRIMARY KEY (state_group, state_key_nid)
);

-- The room's current state, one row per (type, state_key), kept in step with each append.
CREATE TABLE current_state (
    room_nid       BIGINT NOT NULL,
    state_key_nid  BIGINT NOT NULL,
    event_nid      BIGINT NOT NULL,
    CONSTRAINT current_state_pkey PRIMARY KEY (room_nid, state_key_nid)
);

-- Events with no known children: the prev_events of the next event.
CREATE TABLE forward_extremities (
    room_nid   BIGINT NOT NULL,
    event_nid  BIGINT NOT NULL,
    CONSTRAINT forward_extremities_pkey PRIMARY KEY (room_nid, event_nid)
);

-- Events referenced as prev_events that we do not have: where backfill starts.
CREATE TABLE backward_extremities (
    room_nid   BIGINT NOT NULL,
    event_nid  BIGINT NOT NULL,
    CONSTRAINT backward_extremities_pkey PRIMARY KEY (room_nid, event_nid)
);

-- Current membership of each user in each room, for "which rooms am I in" and member lists.
CREATE TABLE room_members (
    room_nid    BIGINT NOT NULL,
    user_id     TEXT   NOT NULL,
    -- join, invite, leave, ban, knock.
    membership  TEXT   NOT NULL,
    -- The m.room.member event that set it.
    event_nid   BIGINT NOT NULL,
    -- Set when the user forgets a room they have left.
    forgotten   BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT room_members_pkey PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX room_members_user_idx ON room_members (user_id, membership);

-- Client transaction IDs, so a retried PUT /send returns the same event. Scoped per room, as
-- Synapse does: the same txnId sent to two rooms is two requests.
CREATE TABLE event_txn_ids (
    room_nid   BIGINT NOT NULL,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    txn_id     TEXT   NOT NULL,
    event_nid  BIGINT NOT NULL,
    CONSTRAINT event_txn_ids_pkey PRIMARY KEY (room_nid, user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    -- #alias:server
    alias     TEXT   NOT NULL,
    room_nid  BIGINT NOT NULL,
    -- Who created the alias (may delete it).
    creator   TEXT   NOT NULL,
    CONSTRAINT room_aliases_pkey PRIMARY KEY (alias)
);
CREATE INDEX room_aliases_room_idx ON room_aliases (room_nid);

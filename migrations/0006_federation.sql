-- Rooms across servers: the outbound queue per destination, inbound transaction IDs already
-- processed, and what an invite from another server showed us of its room.

-- What we owe other servers, in order. A row is removed only once the destination has
-- answered the transaction that carried it, so a restart or an outage loses nothing.
CREATE TABLE federation_outbox (
    -- Order of sending; also names transactions (first and last position they carry).
    position     BIGSERIAL NOT NULL,
    -- Server name of the destination.
    destination  TEXT      NOT NULL,
    -- A PDU to send (by number), or NULL for an EDU.
    event_nid    BIGINT,
    -- An EDU as JSON ({"edu_type": ..., "content": ...}), or NULL for a PDU.
    edu          TEXT,
    CONSTRAINT federation_outbox_pkey PRIMARY KEY (position),
    CONSTRAINT federation_outbox_one_kind CHECK ((event_nid IS NULL) <> (edu IS NULL))
);
-- A destination's queue, oldest first.
CREATE INDEX federation_outbox_destination_idx ON federation_outbox (destination, position);

-- Transactions received from other servers, so a retried PUT /send is answered without being
-- processed twice.
CREATE TABLE federation_inbound_txns (
    -- The sending server.
    origin       TEXT   NOT NULL,
    -- Its transaction ID.
    txn_id       TEXT   NOT NULL,
    -- The answer we gave (the per-PDU results), replayed on a retry.
    response     TEXT   NOT NULL,
    -- When it was processed, ms since the epoch (old rows can be pruned).
    received_ts  BIGINT NOT NULL,
    CONSTRAINT federation_inbound_txns_pkey PRIMARY KEY (origin, txn_id)
);

-- For an invite to a room on another server: the stripped state the inviting server sent
-- (JSON array), shown to the invitee in /sync since we hold none of that room's state.
ALTER TABLE room_members ADD COLUMN invite_state TEXT;

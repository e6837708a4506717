-- Read receipts: the latest receipt of each user per room, receipt type and thread. Older
-- receipts are replaced, never kept: clients only ever need "where has this user read up to".

-- One sequence orders every receipt change, so /sync can ask for "changes since".
CREATE SEQUENCE receipts_stream;

CREATE TABLE receipts (
    -- Room the receipt is in.
    room_nid       BIGINT  NOT NULL,
    -- Who sent the receipt.
    user_id        TEXT    NOT NULL,
    -- m.read or m.read.private (the latter is only ever shown to its owner).
    receipt_type   TEXT    NOT NULL,
    -- '' for an unthreaded receipt, 'main' for the main timeline, else the thread root's
    -- event ID; part of the key because each thread has its own read position.
    thread_id      TEXT    NOT NULL,
    -- The event read up to.
    event_id       TEXT    NOT NULL,
    -- When the receipt was sent, ms since the epoch (the `ts` clients show).
    ts             BIGINT  NOT NULL,
    -- Position in receipts_stream of the last change.
    stream_id      BIGINT  NOT NULL,
    CONSTRAINT receipts_pkey PRIMARY KEY (room_nid, user_id, receipt_type, thread_id),
    CONSTRAINT receipts_room_fkey FOREIGN KEY (room_nid) REFERENCES rooms (room_nid)
);
-- Incremental /sync reads "receipts of these rooms after position N".
CREATE INDEX receipts_room_stream_idx ON receipts (room_nid, stream_id);
-- The stream's safe position is max(stream_id).
CREATE INDEX receipts_stream_idx ON receipts (stream_id);

-- Redactions whose target is not stored yet. Whether a redaction takes effect is decided
-- when it is applied (room versions 3 on accept every redaction that passes auth into the
-- graph): its sender needs the room's redact power level, or must be on the server of the
-- redacted event's sender. When the redaction comes first, the facts known about it then
-- wait here for the target.
CREATE TABLE pending_redactions (
    -- The event the redaction names (interned in event_ids, not yet in events).
    target_nid     BIGINT  NOT NULL,
    -- The accepted m.room.redaction event.
    redaction_nid  BIGINT  NOT NULL,
    -- The redaction's room: a target in another room is never redacted.
    room_nid       BIGINT  NOT NULL,
    -- Whether the redaction's sender had the redact power level in the state before it.
    by_power       BOOLEAN NOT NULL,
    -- The server of the redaction's sender.
    sender_server  TEXT    NOT NULL,
    CONSTRAINT pending_redactions_pkey PRIMARY KEY (target_nid, redaction_nid)
);

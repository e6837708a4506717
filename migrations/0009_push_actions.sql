-- Which events notify which local users, decided by each user's push rules when the event is
-- stored, so /sync counts unread notifications with one indexed query across rooms.

CREATE TABLE event_push_actions (
    room_nid         BIGINT  NOT NULL,
    -- The event that notifies.
    event_nid        BIGINT  NOT NULL,
    -- The local user it notifies.
    user_id          TEXT    NOT NULL,
    -- The event's stream position: counted when after the user's read receipt.
    stream_ordering  BIGINT  NOT NULL,
    -- The push rule asked for a highlight (e.g. a mention).
    highlight        BOOLEAN NOT NULL,
    -- 'main', or the thread root's event ID for an event in a thread.
    thread_id        TEXT    NOT NULL,
    CONSTRAINT event_push_actions_pkey PRIMARY KEY (user_id, room_nid, event_nid)
);
-- Counting: a user's actions in some rooms after a position.
CREATE INDEX event_push_actions_count_idx ON event_push_actions (user_id, room_nid, stream_ordering);

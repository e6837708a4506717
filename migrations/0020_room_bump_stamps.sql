-- Each room's bump stamp for sliding sync (MSC4186): the stream position of its latest event
-- of a type that moves a room up a client's room list (`db::sliding::BUMP_TYPES`: messages
-- and the like, not state changes). The append path keeps it in the statement that writes
-- the events, so that listing a user's rooms by recency reads one row per room instead of
-- searching each room's newest events on every request.
CREATE TABLE room_bump_stamps (
    room_nid  BIGINT NOT NULL,
    -- The highest stream position of an accepted (not rejected, not soft-failed) timeline
    -- event of a bump type in the room. It only grows.
    stream    BIGINT NOT NULL,
    CONSTRAINT room_bump_stamps_pkey PRIMARY KEY (room_nid),
    CONSTRAINT room_bump_stamps_room_fkey FOREIGN KEY (room_nid) REFERENCES rooms (room_nid)
);

-- The rooms stored before: the same list of types as `BUMP_TYPES` when this was written.
INSERT INTO room_bump_stamps (room_nid, stream)
SELECT room_nid, max(stream_ordering) FROM events
WHERE stream_ordering IS NOT NULL AND NOT outlier AND rejected_reason IS NULL
  AND NOT soft_failed
  AND event_type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
                     'm.call.invite', 'm.poll.start', 'org.matrix.msc3381.poll.start',
                     'm.beacon_info', 'org.matrix.msc3672.beacon_info')
GROUP BY room_nid;

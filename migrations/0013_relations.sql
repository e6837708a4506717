-- Relations between events (`content.m.relates_to`): edits, thread replies, references,
-- annotations. One row per accepted timeline event that names a parent, written by the
-- append path in the same statement as the event, so /relations, /threads and the
-- aggregations bundled into served events read an index instead of every event's JSON.
CREATE TABLE event_relations (
    -- The relating event (the child).
    event_nid      BIGINT NOT NULL,
    room_nid       BIGINT NOT NULL,
    -- The event it relates to, by ID: the parent may arrive later, or never.
    relates_to_id  TEXT   NOT NULL,
    -- `m.replace`, `m.thread`, `m.reference`, `m.annotation` or any other type a client uses.
    rel_type       TEXT   NOT NULL,
    CONSTRAINT event_relations_pkey PRIMARY KEY (event_nid)
);
-- Children of a parent, of one type.
CREATE INDEX event_relations_parent_idx ON event_relations (relates_to_id, rel_type);
-- Thread listing: the thread replies of a room.
CREATE INDEX event_relations_room_idx ON event_relations (room_nid, rel_type);

-- Relations of events stored before this table existed. jsonb refuses NUL and lone
-- surrogate escapes (canonical JSON escapes nothing else above U+001F, so these only come
-- from odd remote events): such an event is passed over rather than stop the upgrade. The
-- CASE makes sure no such text is ever cast (Postgres orders plain conditions as it likes).
INSERT INTO event_relations (event_nid, room_nid, relates_to_id, rel_type)
SELECT event_nid, room_nid, rel->>'event_id', rel->>'rel_type'
FROM (
    SELECT event_nid, room_nid,
           CASE WHEN json !~ '\\u(0000|[dD][89a-fA-F])'
                THEN json::jsonb -> 'content' -> 'm.relates_to' END AS rel
    FROM events
    WHERE NOT outlier AND rejected_reason IS NULL AND NOT soft_failed
      AND json LIKE '%m.relates_to%'
) e
WHERE jsonb_typeof(rel -> 'event_id') = 'string' AND jsonb_typeof(rel -> 'rel_type') = 'string'
ON CONFLICT DO NOTHING;

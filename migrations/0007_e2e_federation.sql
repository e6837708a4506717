-- Device lists and to-device messages across servers: the version chain of each local user's
-- device list as other servers see it, the newest version heard of each remote user's list,
-- and the m.direct_to_device messages already delivered (so a retried transaction is not
-- delivered twice).

-- Versions of local users' device lists as m.device_list_update EDUs name them (stream_id,
-- prev_id). Only their order per user matters, so one sequence serves every user.
CREATE SEQUENCE device_list_outbound_stream;

CREATE TABLE device_list_outbound (
    -- The local user whose device list other servers track.
    user_id        TEXT    NOT NULL,
    -- Position in device_list_outbound_stream of the user's newest m.device_list_update: the
    -- next one names it in prev_id, and GET /user/devices answers it as the list's stream_id.
    stream_id      BIGINT  NOT NULL,
    CONSTRAINT device_list_outbound_pkey PRIMARY KEY (user_id)
);

CREATE TABLE device_list_remote (
    -- A remote user whose device-list updates we have received.
    user_id        TEXT    NOT NULL,
    -- The highest stream_id their server sent in an m.device_list_update: an update at or
    -- below it is a repeat (a retried transaction) or stale, and changes nothing.
    stream_id      BIGINT  NOT NULL,
    CONSTRAINT device_list_remote_pkey PRIMARY KEY (user_id)
);

CREATE TABLE to_device_federation_txns (
    -- The server that sent the m.direct_to_device EDU.
    origin         TEXT    NOT NULL,
    -- The EDU's message_id, unique per origin: a repeat is not delivered again.
    message_id     TEXT    NOT NULL,
    -- When it was first received, milliseconds since the Unix epoch.
    received_ts    BIGINT  NOT NULL,
    CONSTRAINT to_device_federation_txns_pkey PRIMARY KEY (origin, message_id)
);

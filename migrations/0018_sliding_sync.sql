-- Simplified sliding sync (MSC4186): per-connection state, so that a request with a `pos`
-- sends only what changed since the response that handed out that `pos`, also after a
-- restart or from another process. A connection is one (user, device, conn_id); each
-- response that changed something gets a new position holding what the connection had been
-- sent by then.
CREATE TABLE sliding_connections (
    -- Internal number of the connection.
    conn_nid      BIGSERIAL NOT NULL,
    user_id       TEXT      NOT NULL,
    device_id     TEXT      NOT NULL,
    -- The client's `conn_id` ('' when it sent none).
    conn_id       TEXT      NOT NULL,
    -- When a request last used the connection (ms since the epoch): idle connections expire.
    last_used_ts  BIGINT    NOT NULL,
    CONSTRAINT sliding_connections_pkey PRIMARY KEY (conn_nid),
    CONSTRAINT sliding_connections_key UNIQUE (user_id, device_id, conn_id),
    -- A device's connections go with it.
    CONSTRAINT sliding_connections_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX sliding_connections_used_idx ON sliding_connections (last_used_ts);

CREATE TABLE sliding_positions (
    -- The `pos` handed to the client (its decimal form).
    pos           BIGSERIAL NOT NULL,
    conn_nid      BIGINT    NOT NULL,
    -- What the connection had been sent as of this position: stream positions, per room
    -- what it was last sent with, list counts (see src/sync/sliding/conn.rs).
    state         JSONB     NOT NULL,
    CONSTRAINT sliding_positions_pkey PRIMARY KEY (pos),
    CONSTRAINT sliding_positions_conn_fkey FOREIGN KEY (conn_nid)
        REFERENCES sliding_connections (conn_nid) ON DELETE CASCADE
);
CREATE INDEX sliding_positions_conn_idx ON sliding_positions (conn_nid, pos);

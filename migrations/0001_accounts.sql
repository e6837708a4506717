-- Accounts, devices, access tokens, account data, filters and user-interactive auth sessions.

CREATE TABLE users (
    -- Full Matrix user ID, e.g. @alice:example.org; localparts are stored lower-case.
    user_id        TEXT    NOT NULL,
    -- argon2 PHC string; NULL when the account cannot log in with a password.
    password_hash  TEXT,
    -- Guest accounts (kind=guest registration) have limited access.
    is_guest       BOOLEAN NOT NULL DEFAULT FALSE,
    -- Server administrators (shared-secret registration may create them).
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    -- Deactivated accounts keep their row so the user ID is never reused.
    deactivated    BOOLEAN NOT NULL DEFAULT FALSE,
    -- Profile: display name and mxc:// avatar URL.
    displayname    TEXT,
    avatar_url     TEXT,
    -- Milliseconds since the Unix epoch.
    created_ts     BIGINT  NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (user_id)
);

CREATE TABLE devices (
    -- Owner of the device.
    user_id        TEXT    NOT NULL,
    -- Device ID, chosen by the client or generated on login.
    device_id      TEXT    NOT NULL,
    -- Human-readable name, set at login or through PUT /devices/{deviceId}.
    display_name   TEXT,
    -- Last request seen with one of this device's tokens (ms since epoch) and its address.
    last_seen_ts   BIGINT,
    last_seen_ip   TEXT,
    -- Milliseconds since the Unix epoch.
    created_ts     BIGINT  NOT NULL,
    CONSTRAINT devices_pkey PRIMARY KEY (user_id, device_id),
    CONSTRAINT devices_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id)
);

CREATE TABLE access_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash     BYTEA   NOT NULL,
    -- The user and device the token authenticates.
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    -- Milliseconds since the Unix epoch.
    created_ts     BIGINT  NOT NULL,
    CONSTRAINT access_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT access_tokens_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device_idx ON access_tokens (user_id, device_id);

-- One sequence orders every change of account data, so /sync can ask for "changes since".
CREATE SEQUENCE account_data_stream;

CREATE TABLE account_data (
    -- Owner of the data.
    user_id        TEXT    NOT NULL,
    -- Room the data belongs to; '' for global account data.
    room_id        TEXT    NOT NULL,
    -- Event type, e.g. m.direct, m.push_rules, m.fully_read.
    data_type      TEXT    NOT NULL,
    -- The event content as the client sent it.
    content        JSONB   NOT NULL,
    -- Position in account_data_stream of the last change.
    stream_id      BIGINT  NOT NULL,
    CONSTRAINT account_data_pkey PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream_idx ON account_data (user_id, stream_id);

CREATE TABLE filters (
    -- Owner of the filter.
    user_id        TEXT    NOT NULL,
    -- Server-assigned filter ID, unique per user.
    filter_id      BIGINT  NOT NULL,
    -- The validated filter definition.
    filter         JSONB   NOT NULL,
    CONSTRAINT filters_pkey PRIMARY KEY (user_id, filter_id)
);
CREATE SEQUENCE filter_ids;

CREATE TABLE uiaa_sessions (
    -- Random session ID handed to the client in the 401 response.
    session_id     TEXT    NOT NULL,
    -- The user the session authenticates; NULL during registration.
    user_id        TEXT,
    -- What the session is for (e.g. 'register', 'delete_devices'); a session is not reusable
    -- for another purpose.
    purpose        TEXT    NOT NULL,
    -- Stages completed so far (m.login.dummy, m.login.password, ...).
    completed      TEXT[]  NOT NULL DEFAULT '{}',
    -- Milliseconds since the Unix epoch; sessions expire after a while.
    created_ts     BIGINT  NOT NULL,
    CONSTRAINT uiaa_sessions_pkey PRIMARY KEY (session_id)
);

CREATE TABLE registration_nonces (
    -- One-time nonce handed out by GET /_synapse/admin/v1/register.
    nonce          TEXT    NOT NULL,
    -- Milliseconds since the Unix epoch; nonces expire after a minute.
    created_ts     BIGINT  NOT NULL,
    CONSTRAINT registration_nonces_pkey PRIMARY KEY (nonce)
);

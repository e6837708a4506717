-- Users erased at deactivation (`erase: true`): their events are served redacted to those
-- who were not in the room when they were sent, and to other servers. Never undone.
CREATE TABLE erased_users (
    -- The erased user (a local user ID).
    user_id   TEXT   NOT NULL CONSTRAINT erased_users_pkey PRIMARY KEY,
    -- When the erasure was asked for, in milliseconds since the Unix epoch.
    erased_at BIGINT NOT NULL
);

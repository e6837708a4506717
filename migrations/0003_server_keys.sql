-- Signing keys of other servers, fetched from them (or a notary) and verified.
CREATE TABLE server_keys (
    -- The server the key belongs to.
    server_name     TEXT   NOT NULL,
    -- e.g. ed25519:abc
    key_id          TEXT   NOT NULL,
    -- Unpadded base64 of the public key.
    public_key      TEXT   NOT NULL,
    -- Until when the key may be used to verify new signatures (ms since epoch), capped at
    -- seven days after fetching as the spec asks.
    valid_until_ts  BIGINT NOT NULL,
    -- When the key was retired (old_verify_keys); NULL while current.
    expired_ts      BIGINT,
    -- When we fetched it (ms since epoch).
    fetched_ts      BIGINT NOT NULL,
    CONSTRAINT server_keys_pkey PRIMARY KEY (server_name, key_id)
);

-- The latest self-signed key response of each server, kept as received so that, as a notary,
-- we can hand it on (countersigned) without re-serialising what its origin signed.
CREATE TABLE server_key_responses (
    server_name     TEXT   NOT NULL,
    -- The response object as canonical JSON.
    json            TEXT   NOT NULL,
    -- Its valid_until_ts (ms since epoch), capped as for server_keys.
    valid_until_ts  BIGINT NOT NULL,
    -- When we fetched it (ms since epoch).
    fetched_ts      BIGINT NOT NULL,
    CONSTRAINT server_key_responses_pkey PRIMARY KEY (server_name)
);

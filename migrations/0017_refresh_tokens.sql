-- Refresh tokens (spec 1.3): a client that asks for one at login or registration gets an
-- access token that expires, and renews both with POST /refresh. Each refresh token is used
-- once. Tokens are kept only as hashes.
ALTER TABLE access_tokens ADD COLUMN expires_ts BIGINT;  -- NULL: valid until logout

CREATE TABLE refresh_tokens (
    token_hash  BYTEA  NOT NULL,
    user_id     TEXT   NOT NULL,
    device_id   TEXT   NOT NULL,
    created_ts  BIGINT NOT NULL,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT refresh_tokens_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device_idx ON refresh_tokens (user_id, device_id);

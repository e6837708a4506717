-- Reports users make of events and rooms, for the server's administrators to read.
CREATE TABLE reports (
    report_id    BIGSERIAL PRIMARY KEY,
    received_ts  BIGINT NOT NULL,
    -- Who reported.
    user_id      TEXT   NOT NULL,
    room_id      TEXT   NOT NULL,
    -- The event reported; NULL for a report of the whole room.
    event_id     TEXT,
    reason       TEXT   NOT NULL
);
CREATE INDEX reports_room_idx ON reports (room_id, received_ts);

-- OpenID tokens: short-lived proofs of identity a user hands to a third party, which
-- checks them with /_matrix/federation/v1/openid/userinfo. Kept only as hashes.
CREATE TABLE openid_tokens (
    token_hash  BYTEA  PRIMARY KEY,
    user_id     TEXT   NOT NULL,
    expires_ts  BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry_idx ON openid_tokens (expires_ts);

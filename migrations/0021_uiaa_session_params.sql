-- User-interactive auth sessions remember what their first request asked for, as Synapse's
-- do: a client may send the later stages with nothing but `auth`, and a registration that
-- completed answers a repeated completion with the same account instead of a second one.
ALTER TABLE uiaa_sessions
    -- The request's parameters (the body without `auth` and without the password), as
    -- last sent non-empty; later requests carrying only `auth` use these.
    ADD COLUMN params              JSONB NOT NULL DEFAULT '{}',
    -- The argon2 hash of the password a registration asked for, so that the plain
    -- password is kept nowhere and need not be sent again with each stage.
    ADD COLUMN password_hash       TEXT,
    -- The account a registration session created, once it did: a repeated completion logs
    -- in to it again instead of registering another.
    ADD COLUMN registered_user_id  TEXT;

-- Push notifications: the pushers users set (POST /pushers/set), and what the push gateway
-- sender and /notifications need of each push action: the actions themselves, the time it was
-- written, and each pusher's position in its user's push actions.

-- The actions the user's matching push rule asked for (a JSON array: "notify" and set_tweak
-- objects), handed to /notifications and, as tweaks, to push gateways. NULL on rows written
-- before this column: read as ["notify"] with the highlight tweak from `highlight`.
ALTER TABLE event_push_actions ADD COLUMN actions JSONB;
-- When the row was written, in milliseconds since the Unix epoch (/notifications' `ts`). A
-- stable default, so adding the column rewrites nothing.
ALTER TABLE event_push_actions
    ADD COLUMN ts BIGINT NOT NULL DEFAULT (extract(epoch FROM now()) * 1000)::BIGINT;
-- A user's push actions in stream order: /notifications pages and each pusher's next batch.
CREATE INDEX event_push_actions_user_stream_idx ON event_push_actions (user_id, stream_ordering);

CREATE TABLE pushers (
    -- The local user whose notifications this pusher sends.
    user_id               TEXT    NOT NULL,
    -- The device whose access token set the pusher: logging it out removes the pusher.
    device_id             TEXT    NOT NULL,
    -- The application, e.g. 'com.example.app.ios' (at most 64 characters).
    app_id                TEXT    NOT NULL,
    -- The routing token the push gateway knows the device by (at most 512 bytes).
    pushkey               TEXT    NOT NULL,
    -- 'http': the only kind served.
    kind                  TEXT    NOT NULL,
    -- The application's name as a user would know it, e.g. 'Example Chat'.
    app_display_name      TEXT    NOT NULL,
    -- The device's name as a user would know it, e.g. "Alice's phone".
    device_display_name   TEXT    NOT NULL,
    -- Which set of device-specific push rules applies (opaque to the server).
    profile_tag           TEXT,
    -- The language notifications are preferred in, e.g. 'en'.
    lang                  TEXT    NOT NULL,
    -- The pusher's data object as the client gave it: `url` (the gateway's notify URL),
    -- `format` and anything else, handed to the gateway without `url`.
    data                  JSONB   NOT NULL,
    -- When the pushkey was last set, in milliseconds since the Unix epoch.
    pushkey_ts            BIGINT  NOT NULL,
    -- The stream position of the last push action this pusher is done with (sent, or given
    -- up on): the sender resumes after it, so a restart neither repeats nor loses one.
    last_stream_ordering  BIGINT  NOT NULL,
    CONSTRAINT pushers_pkey PRIMARY KEY (user_id, app_id, pushkey),
    CONSTRAINT pushers_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
-- The same app ID and pushkey set by other users (`append: false` removes those).
CREATE INDEX pushers_app_pushkey_idx ON pushers (app_id, pushkey);
-- The device's pushers, for the cascade when a device is deleted.
CREATE INDEX pushers_device_idx ON pushers (user_id, device_id);

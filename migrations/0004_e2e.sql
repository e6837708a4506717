-- End-to-end encryption plumbing: device and cross-signing keys, one-time and fallback keys,
-- signatures, the device-list change stream, to-device messages and room key backups. The
-- server stores and routes these; it never decrypts anything.

CREATE TABLE e2e_device_keys (
    -- Owner and device of the identity keys.
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    -- The DeviceKeys object as the device uploaded it (signed by the device itself).
    key_json       JSONB   NOT NULL,
    CONSTRAINT e2e_device_keys_pkey PRIMARY KEY (user_id, device_id),
    -- Logging a device out removes its keys with it.
    CONSTRAINT e2e_device_keys_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE e2e_one_time_keys (
    -- Owner and device of the key.
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    -- Algorithm part of the key ID, e.g. signed_curve25519; claims ask per algorithm.
    algorithm      TEXT    NOT NULL,
    -- Full key ID, e.g. signed_curve25519:AAAAHQ.
    key_id         TEXT    NOT NULL,
    -- The key object as uploaded; handed out once, then deleted.
    key_json       JSONB   NOT NULL,
    CONSTRAINT e2e_one_time_keys_pkey PRIMARY KEY (user_id, device_id, algorithm, key_id),
    CONSTRAINT e2e_one_time_keys_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE e2e_fallback_keys (
    -- Owner and device of the key.
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    -- One fallback key per algorithm; a new upload replaces the old one.
    algorithm      TEXT    NOT NULL,
    -- Full key ID, e.g. signed_curve25519:AAAAHQ.
    key_id         TEXT    NOT NULL,
    -- The key object as uploaded.
    key_json       JSONB   NOT NULL,
    -- Set once claimed: the key keeps being handed out, and /sync stops listing it as unused
    -- so the client uploads a fresh one.
    used           BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT e2e_fallback_keys_pkey PRIMARY KEY (user_id, device_id, algorithm),
    CONSTRAINT e2e_fallback_keys_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE e2e_cross_signing_keys (
    -- Owner of the key.
    user_id        TEXT    NOT NULL,
    -- master, self_signing or user_signing.
    key_type       TEXT    NOT NULL,
    -- The unpadded base64 public key (the part after "ed25519:"); signatures name it.
    key_id         TEXT    NOT NULL,
    -- The CrossSigningKey object as uploaded.
    key_json       JSONB   NOT NULL,
    CONSTRAINT e2e_cross_signing_keys_pkey PRIMARY KEY (user_id, key_type),
    CONSTRAINT e2e_cross_signing_keys_type_check
        CHECK (key_type IN ('master', 'self_signing', 'user_signing')),
    CONSTRAINT e2e_cross_signing_keys_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id)
);

-- Signatures uploaded through /keys/signatures/upload, kept apart from the keys they sign so
-- that a re-upload of the key does not lose them; /keys/query merges them in.
CREATE TABLE e2e_key_signatures (
    -- The signed key: its owner and its ID (a device ID or a cross-signing public key).
    target_user_id TEXT    NOT NULL,
    target_key_id  TEXT    NOT NULL,
    -- Who signed, with which key (e.g. ed25519:<public key>).
    signer_user_id TEXT    NOT NULL,
    signer_key_id  TEXT    NOT NULL,
    -- The unpadded base64 signature.
    signature      TEXT    NOT NULL,
    CONSTRAINT e2e_key_signatures_pkey
        PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- Orders every change of a user's device or cross-signing keys, for /sync device_lists and
-- /keys/changes. Writers take an advisory lock, so positions commit in order and a reader
-- that sees position N has seen every position below it.
CREATE SEQUENCE device_list_stream;

CREATE TABLE device_list_changes (
    -- Position in device_list_stream.
    stream_id      BIGINT  NOT NULL,
    -- The user whose keys changed.
    user_id        TEXT    NOT NULL,
    CONSTRAINT device_list_changes_pkey PRIMARY KEY (stream_id)
);

-- Orders to-device messages; positions commit in order (advisory lock, as above), so deleting
-- "everything up to the client's since" never removes a message the client has not seen.
CREATE SEQUENCE to_device_stream;

CREATE TABLE to_device_messages (
    -- Position in to_device_stream.
    stream_id           BIGINT NOT NULL,
    -- The device the message is for.
    recipient_user_id   TEXT   NOT NULL,
    recipient_device_id TEXT   NOT NULL,
    -- The sending user.
    sender              TEXT   NOT NULL,
    -- Event type, e.g. m.room_key_request or m.room.encrypted.
    event_type          TEXT   NOT NULL,
    -- Event content as the sender gave it.
    content             JSONB  NOT NULL,
    CONSTRAINT to_device_messages_pkey
        PRIMARY KEY (recipient_user_id, recipient_device_id, stream_id),
    CONSTRAINT to_device_messages_device_fkey FOREIGN KEY (recipient_user_id, recipient_device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE to_device_txns (
    -- The sending device and its transaction ID: a retried PUT is not delivered twice.
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    txn_id         TEXT    NOT NULL,
    -- Milliseconds since the Unix epoch.
    created_ts     BIGINT  NOT NULL,
    CONSTRAINT to_device_txns_pkey PRIMARY KEY (user_id, device_id, txn_id),
    CONSTRAINT to_device_txns_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Backup version numbers come from one sequence so a deleted version is never reused.
CREATE SEQUENCE room_key_backup_versions;

CREATE TABLE room_key_backups (
    -- Owner of the backup.
    user_id        TEXT    NOT NULL,
    -- Version number from room_key_backup_versions; the highest one is the current backup.
    version        BIGINT  NOT NULL,
    -- {"algorithm": ..., "auth_data": ...} as the client gave it.
    algorithm      JSONB   NOT NULL,
    -- Bumped on every change of the backed-up keys, so clients can tell they are stale.
    etag           BIGINT  NOT NULL DEFAULT 0,
    CONSTRAINT room_key_backups_pkey PRIMARY KEY (user_id, version),
    CONSTRAINT room_key_backups_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id)
);

CREATE TABLE room_key_backup_keys (
    -- The backup the key belongs to.
    user_id        TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    -- Room and megolm session the key is for.
    room_id        TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    -- KeyBackupData: first_message_index, forwarded_count, is_verified (compared to keep the
    -- better key, as the spec asks) and the encrypted session_data.
    key_data       JSONB   NOT NULL,
    CONSTRAINT room_key_backup_keys_pkey PRIMARY KEY (user_id, version, room_id, session_id),
    CONSTRAINT room_key_backup_keys_backup_fkey FOREIGN KEY (user_id, version)
        REFERENCES room_key_backups (user_id, version) ON DELETE CASCADE
);

-- The media repository. File contents live under data_dir/media, named by their SHA-256, so
-- identical uploads share one file; these tables hold what the files are.

CREATE TABLE media (
    -- The authority of the mxc:// URI: our server name for local media, another server's for
    -- remote media cached here.
    server_name        TEXT    NOT NULL,
    -- The path of the mxc:// URI ([A-Za-z0-9_-]+).
    media_id           TEXT    NOT NULL,
    -- The local user who uploaded (or reserved) it; NULL for remote media and for media the
    -- server stored itself (URL preview images).
    uploader           TEXT,
    -- The content type given by the uploader or the remote server, if any.
    content_type       TEXT,
    -- The file name given by the uploader or the remote server, if any.
    filename           TEXT,
    -- Size in bytes; NULL while an asynchronous upload is still pending.
    size               BIGINT,
    -- Hex SHA-256 of the content, which names its file; NULL while an upload is pending.
    sha256             TEXT,
    -- When the mxc:// URI was created here (local) or the media first cached (remote), in ms
    -- since the Unix epoch; compared with the legacy unauthenticated cut-off.
    created_ts         BIGINT  NOT NULL,
    -- When the content arrived, in ms; NULL while pending.
    uploaded_ts        BIGINT,
    -- For a URI reserved by POST /media/v1/create: when the reservation lapses if no content
    -- has been uploaded, in ms. NULL for media uploaded in one step.
    unused_expires_ts  BIGINT,
    -- Decoding the content as an image failed once: thumbnails are not attempted again.
    not_an_image       BOOLEAN NOT NULL DEFAULT false,
    CONSTRAINT media_pkey PRIMARY KEY (server_name, media_id),
    CONSTRAINT media_pending_ck CHECK ((size IS NULL) = (sha256 IS NULL))
);
-- Counting a user's pending reservations.
CREATE INDEX media_pending_idx ON media (uploader, unused_expires_ts) WHERE sha256 IS NULL;
-- Which media rows use a file (for removing unused files).
CREATE INDEX media_sha256_idx ON media (sha256);

CREATE TABLE media_thumbnails (
    -- The media this thumbnail was made from.
    server_name   TEXT    NOT NULL,
    media_id      TEXT    NOT NULL,
    -- The size bucket (one of the spec's recommended sizes) and method it was made for; the
    -- image itself may be smaller, since images are never enlarged.
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    -- 'crop' or 'scale'.
    method        TEXT    NOT NULL,
    -- The thumbnail's own content type (image/png or image/jpeg).
    content_type  TEXT    NOT NULL,
    -- Its size in bytes.
    size          BIGINT  NOT NULL,
    -- Hex SHA-256 of the thumbnail, which names its file.
    sha256        TEXT    NOT NULL,
    -- When it was generated, in ms since the Unix epoch.
    created_ts    BIGINT  NOT NULL,
    CONSTRAINT media_thumbnails_pkey PRIMARY KEY (server_name, media_id, width, height, method),
    CONSTRAINT media_thumbnails_media_fkey FOREIGN KEY (server_name, media_id)
        REFERENCES media (server_name, media_id) ON DELETE CASCADE
);

CREATE TABLE media_url_previews (
    -- The URL as the client asked for it.
    url         TEXT   NOT NULL,
    -- When it was fetched, in ms since the Unix epoch (old entries are fetched again).
    fetched_ts  BIGINT NOT NULL,
    -- The OpenGraph object answered to clients (og:image already rewritten to an mxc:// URI).
    preview     JSONB  NOT NULL,
    CONSTRAINT media_url_previews_pkey PRIMARY KEY (url)
);

-- One row per (integration, connection): the credentials and what is known about them.
-- The same columns as SQLite's table, so that one EncryptionKey reads both. Times are
-- milliseconds since the UNIX epoch. `version` is incremented by every write and is what
-- compare-and-swap compares. `encrypted` is true when the token columns hold
-- base64(nonce || AES-256-GCM ciphertext).
CREATE TABLE IF NOT EXISTS blueprint_tokens (
    integration     TEXT    NOT NULL,
    connection_id   TEXT    NOT NULL,
    access_token    TEXT    NOT NULL,
    refresh_token   TEXT,
    encrypted       BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at_ms   BIGINT,
    token_type      TEXT    NOT NULL,
    scopes          TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL,
    last_error      TEXT,
    lease_holder    TEXT,
    lease_until_ms  BIGINT,
    updated_at_ms   BIGINT  NOT NULL,
    version         BIGINT  NOT NULL,
    PRIMARY KEY (integration, connection_id)
);

-- One row per (integration, connection): the credentials and what is known about them.
-- Times are milliseconds since the UNIX epoch. `version` is incremented by every write and
-- is what compare-and-swap compares. `encrypted` = 1 when the token columns hold
-- base64(nonce || AES-256-GCM ciphertext).
CREATE TABLE IF NOT EXISTS blueprint_tokens (
    integration     TEXT    NOT NULL,
    connection_id   TEXT    NOT NULL,
    access_token    TEXT    NOT NULL,
    refresh_token   TEXT,
    encrypted       INTEGER NOT NULL DEFAULT 0,
    expires_at_ms   INTEGER,
    token_type      TEXT    NOT NULL,
    scopes          TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL,
    last_error      TEXT,
    lease_holder    TEXT,
    lease_until_ms  INTEGER,
    updated_at_ms   INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    PRIMARY KEY (integration, connection_id)
);

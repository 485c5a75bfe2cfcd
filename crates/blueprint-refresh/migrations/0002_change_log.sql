-- Every write or delete of a record appends its key to `blueprint_changes` (by triggers, so
-- in the same transaction as the write, whichever process made it), with an id that only
-- grows: what a change feed polls. The log keeps the last 1000 changes; a feed that falls
-- further behind sees the gap and resyncs.
CREATE TABLE IF NOT EXISTS blueprint_changes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    integration   TEXT    NOT NULL,
    connection_id TEXT    NOT NULL
);

CREATE TRIGGER IF NOT EXISTS blueprint_tokens_inserted AFTER INSERT ON blueprint_tokens
BEGIN
    INSERT INTO blueprint_changes (integration, connection_id)
    VALUES (NEW.integration, NEW.connection_id);
END;

CREATE TRIGGER IF NOT EXISTS blueprint_tokens_updated AFTER UPDATE ON blueprint_tokens
BEGIN
    INSERT INTO blueprint_changes (integration, connection_id)
    SELECT OLD.integration, OLD.connection_id
    WHERE OLD.integration IS NOT NEW.integration OR OLD.connection_id IS NOT NEW.connection_id;
    INSERT INTO blueprint_changes (integration, connection_id)
    VALUES (NEW.integration, NEW.connection_id);
END;

CREATE TRIGGER IF NOT EXISTS blueprint_tokens_deleted AFTER DELETE ON blueprint_tokens
BEGIN
    INSERT INTO blueprint_changes (integration, connection_id)
    VALUES (OLD.integration, OLD.connection_id);
END;

CREATE TRIGGER IF NOT EXISTS blueprint_changes_pruned AFTER INSERT ON blueprint_changes
BEGIN
    DELETE FROM blueprint_changes WHERE id <= NEW.id - 1000;
END;

-- Every write or delete of a record notifies channel `blueprint_tokens`, in the same
-- transaction (PostgreSQL delivers it at commit, and never for a rolled-back write),
-- whichever process made it. The payload is the JSON array [schema, integration,
-- connection_id]; when that would pass NOTIFY's 8000-byte limit it is just [schema],
-- which a change feed reads as "resync".
CREATE OR REPLACE FUNCTION blueprint_tokens_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        payload := json_build_array(TG_TABLE_SCHEMA, OLD.integration, OLD.connection_id)::text;
    ELSE
        payload := json_build_array(TG_TABLE_SCHEMA, NEW.integration, NEW.connection_id)::text;
    END IF;
    IF octet_length(payload) > 7900 THEN
        payload := json_build_array(TG_TABLE_SCHEMA)::text;
    END IF;
    PERFORM pg_notify('blueprint_tokens', payload);
    IF TG_OP = 'UPDATE' AND (OLD.integration, OLD.connection_id)
            IS DISTINCT FROM (NEW.integration, NEW.connection_id) THEN
        -- A record moved to another key (this crate never does that): resync.
        PERFORM pg_notify('blueprint_tokens', json_build_array(TG_TABLE_SCHEMA)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER blueprint_tokens_changed
    AFTER INSERT OR UPDATE OR DELETE ON blueprint_tokens
    FOR EACH ROW EXECUTE FUNCTION blueprint_tokens_notify();

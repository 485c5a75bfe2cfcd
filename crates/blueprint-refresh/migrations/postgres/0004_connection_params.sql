-- A connection's parameters (Zendesk's subdomain, Salesforce's instance URL): a JSON object
-- of strings, NULL for none (every row written before this migration reads as none). Not
-- encrypted: they are not secrets (GET /connections shows them), and they are checked
-- again against the blueprint whenever they are used.
ALTER TABLE blueprint_tokens ADD COLUMN params TEXT;

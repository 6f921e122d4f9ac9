-- The key that minted each API key (NULL: minted on the database, or at start-up), so
-- that revoking a key revokes what it minted and listings can say where a key came from.
ALTER TABLE api_keys ADD COLUMN parent_key_hash TEXT;

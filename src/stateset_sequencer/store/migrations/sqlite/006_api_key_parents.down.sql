ALTER TABLE api_keys DROP COLUMN parent_key_hash;

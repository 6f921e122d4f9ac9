-- The audit log's hash chain (docs/PROTOCOL.md, "Audit log hash chain"): each entry's
-- place in the chain, the previous entry's hash and its own. The store computes the
-- hashes (a JCS document SQL cannot build), so rows already here are chained by the
-- migration's Python step (store/sqlite/audit.py chain_unchained) right after this
-- script, in the same transaction, in (timestamp, id) order.
ALTER TABLE audit_log ADD COLUMN chain_seq INTEGER CHECK (chain_seq >= 1);
ALTER TABLE audit_log ADD COLUMN previous_hash BLOB CHECK (length(previous_hash) = 32);
ALTER TABLE audit_log ADD COLUMN entry_hash BLOB CHECK (length(entry_hash) = 32);
CREATE UNIQUE INDEX audit_log_chain_seq ON audit_log (chain_seq);

-- SQLite cannot add NOT NULL to existing columns; this trigger stands in for it on
-- every new row.
CREATE TRIGGER audit_log_chained BEFORE INSERT ON audit_log
WHEN NEW.chain_seq IS NULL OR NEW.previous_hash IS NULL OR NEW.entry_hash IS NULL
BEGIN
    SELECT RAISE(ABORT, 'audit chain fields are required');
END;

-- Append-only. The one UPDATE let through is the migration step sealing a row that has
-- no chain_seq yet, and after the migration no such row exists or can be inserted.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN OLD.chain_seq IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

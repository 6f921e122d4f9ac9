-- The audit log's hash chain (docs/PROTOCOL.md, "Audit log hash chain"): each entry's
-- place in the chain, the previous entry's hash and its own. The store computes the
-- hashes (a JCS document, not PostgreSQL's jsonb rendering), so rows already here are
-- chained by the migration's Python step (store/postgres/audit.py chain_unchained) right
-- after this script, in the same transaction, in (timestamp, id) order; that step then
-- makes the three columns NOT NULL.
ALTER TABLE audit_log
    ADD COLUMN chain_seq BIGINT CHECK (chain_seq >= 1),
    ADD COLUMN previous_hash BYTEA CHECK (length(previous_hash) = 32),
    ADD COLUMN entry_hash BYTEA CHECK (length(entry_hash) = 32);
CREATE UNIQUE INDEX audit_log_chain_seq ON audit_log (chain_seq);

-- Append-only, refused by the database whoever the client. The one UPDATE let through is
-- the migration step sealing a row that has no chain_seq yet; once the columns are NOT
-- NULL no such row can exist. TRUNCATE is refused as well (a statement trigger).
CREATE FUNCTION sequencer_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.chain_seq IS NULL THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION sequencer_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION sequencer_audit_append_only();

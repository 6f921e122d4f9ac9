-- Back to an unchained log: the rows stay, their chain fields go.
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
DROP TRIGGER IF EXISTS audit_log_immutable ON audit_log;
DROP FUNCTION IF EXISTS sequencer_audit_append_only();
DROP INDEX IF EXISTS audit_log_chain_seq;
ALTER TABLE audit_log
    DROP COLUMN IF EXISTS entry_hash,
    DROP COLUMN IF EXISTS previous_hash,
    DROP COLUMN IF EXISTS chain_seq;

-- API keys that stop working at a set time (NULL: never), and the rate-limit budget table
-- the PostgreSQL schema has, laid out alike (on SQLite the server is one process, whose
-- memory limiter already sees every request; the table serves the same port).
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;

CREATE TABLE rate_limit_budgets (
    key_hash       TEXT    PRIMARY KEY CHECK (length(key_hash) = 64),
    used           INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    limit_count    INTEGER CHECK (limit_count IS NULL OR limit_count > 0),
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    expires_at     TEXT    NOT NULL
);
CREATE INDEX rate_limit_budgets_expires_at ON rate_limit_budgets (expires_at);

-- Agent signing keys, API keys (hashed), the audit log and small persistent settings.
CREATE TABLE agent_signing_keys (
    tenant_id     UUID        NOT NULL,
    agent_id      UUID        NOT NULL,
    key_id        BIGINT      NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    public_key    BYTEA       NOT NULL CHECK (length(public_key) = 32),
    status        VARCHAR(16) NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'expired')),
    valid_from    TIMESTAMPTZ,
    valid_to      TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    key_algorithm SMALLINT    NOT NULL DEFAULT 1,
    metadata      TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, agent_id, key_id),
    CONSTRAINT agent_signing_keys_revoked CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    CONSTRAINT agent_signing_keys_window CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_from <= valid_to)
);

CREATE TABLE api_keys (
    key_hash   TEXT        PRIMARY KEY,
    tenant_id  UUID        NOT NULL,
    store_ids  UUID[]      NOT NULL DEFAULT '{}',
    can_read   BOOLEAN     NOT NULL DEFAULT TRUE,
    can_write  BOOLEAN     NOT NULL DEFAULT FALSE,
    can_admin  BOOLEAN     NOT NULL DEFAULT FALSE,
    agent_id   UUID,
    active     BOOLEAN     NOT NULL DEFAULT TRUE,
    rate_limit INTEGER     CHECK (rate_limit IS NULL OR rate_limit > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, updated_at DESC);

CREATE TABLE audit_log (
    id            UUID        PRIMARY KEY,
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    action        TEXT        NOT NULL,
    actor         TEXT        NOT NULL,
    actor_type    TEXT        NOT NULL,
    tenant_id     UUID,
    resource_type TEXT,
    resource_id   TEXT,
    request_id    TEXT,
    ip_address    TEXT,
    user_agent    TEXT,
    details       JSONB       NOT NULL DEFAULT '{}',
    success       BOOLEAN     NOT NULL,
    error_message TEXT
);
CREATE INDEX audit_log_time ON audit_log (timestamp DESC);

CREATE TABLE sequencer_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

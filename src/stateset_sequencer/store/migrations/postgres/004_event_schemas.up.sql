-- The schema registry: JSON Schemas per (tenant, event_type), versioned from 1. The
-- reference creates this table at run time; here it is a migration like every other.
CREATE TABLE event_schemas (
    id            UUID         PRIMARY KEY,
    tenant_id     UUID         NOT NULL,
    -- "C" collation: listings order by UTF-8 bytes, as SQLite's BINARY does, whatever the
    -- database's default locale.
    event_type    VARCHAR(256) COLLATE "C" NOT NULL
                  CHECK (octet_length(event_type) BETWEEN 1 AND 256),
    version       INTEGER      NOT NULL CHECK (version >= 1),
    -- json, not jsonb: the document is kept as registered (key order and numbers intact)
    schema_json   JSON         NOT NULL,
    status        VARCHAR(16)  NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'deprecated', 'archived')),
    compatibility VARCHAR(16)  NOT NULL DEFAULT 'backward'
                  CHECK (compatibility IN ('forward', 'backward', 'full', 'none')),
    description   TEXT,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT NOW(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT NOW(),
    created_by    TEXT,
    CONSTRAINT event_schemas_version_key UNIQUE (tenant_id, event_type, version)
);

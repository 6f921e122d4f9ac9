-- The schema registry: JSON Schemas per (tenant, event_type), versioned from 1; same names
-- and meaning as the PostgreSQL schema. Text compares by UTF-8 bytes (BINARY collation),
-- matching the "C" collation the PostgreSQL column is declared with.
CREATE TABLE event_schemas (
    id            TEXT    PRIMARY KEY,
    tenant_id     TEXT    NOT NULL,
    event_type    TEXT    NOT NULL CHECK (length(CAST(event_type AS BLOB)) BETWEEN 1 AND 256),
    version       INTEGER NOT NULL CHECK (version >= 1),
    schema_json   TEXT    NOT NULL CHECK (json_valid(schema_json)),
    status        TEXT    NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'deprecated', 'archived')),
    compatibility TEXT    NOT NULL DEFAULT 'backward'
                  CHECK (compatibility IN ('forward', 'backward', 'full', 'none')),
    description   TEXT,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    created_by    TEXT,
    CONSTRAINT event_schemas_version_key UNIQUE (tenant_id, event_type, version)
);

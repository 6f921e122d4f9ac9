-- Tenant-first keys: every tenant table's primary key, unique constraints and foreign keys
-- hold tenant_id, so the schema distributes by tenant on Citus and every append stays
-- on one shard. Event ids stay unique across tenants through ves_event_ids (keyed by the
-- event id alone), which the append path writes in the same transaction as the event.
ALTER TABLE ves_sequencer_receipts DROP CONSTRAINT ves_sequencer_receipts_event_id_fkey;
ALTER TABLE ves_sequencer_receipts DROP CONSTRAINT ves_sequencer_receipts_pkey;
ALTER TABLE ves_events DROP CONSTRAINT ves_events_pkey;
ALTER TABLE ves_events ADD CONSTRAINT ves_events_pkey PRIMARY KEY (tenant_id, event_id);
ALTER TABLE ves_sequencer_receipts
    ADD CONSTRAINT ves_sequencer_receipts_pkey PRIMARY KEY (tenant_id, event_id);
ALTER TABLE ves_sequencer_receipts
    ADD CONSTRAINT ves_sequencer_receipts_event_fkey FOREIGN KEY (tenant_id, event_id)
    REFERENCES ves_events (tenant_id, event_id) ON DELETE CASCADE;

-- The one global fact about an event: which tenant and store own its id. On Citus it is
-- distributed by event_id, so a second tenant's insert of a known id meets the first on
-- the same shard and fails on this primary key, however the two writers interleave.
CREATE TABLE ves_event_ids (
    event_id  UUID PRIMARY KEY,
    tenant_id UUID NOT NULL,
    store_id  UUID NOT NULL
);
INSERT INTO ves_event_ids (event_id, tenant_id, store_id)
SELECT event_id, tenant_id, store_id FROM ves_events;

ALTER TABLE ves_commitments DROP CONSTRAINT ves_commitments_pkey;
ALTER TABLE ves_commitments ADD CONSTRAINT ves_commitments_pkey PRIMARY KEY (tenant_id, batch_id);
-- The anchor service names a commitment by batch id alone.
CREATE INDEX ves_commitments_batch ON ves_commitments (batch_id);

ALTER TABLE event_schemas DROP CONSTRAINT event_schemas_pkey;
ALTER TABLE event_schemas ADD CONSTRAINT event_schemas_pkey PRIMARY KEY (tenant_id, id);
-- The schema routes name a schema by id alone.
CREATE INDEX event_schemas_id ON event_schemas (id);

-- The receipts' foreign key is checked with "tenant_id = $1 AND event_id = $2", a plan
-- each connection makes once. Made while the table was nearly empty, it took any index led
-- by tenant_id at the same cost as the primary key, then scanned the whole tenant for
-- every receipt once the table grew (ingest on 64 streams fell by a third). So the primary
-- key is the only index of ves_events led by tenant_id; the others start with the store or
-- the agent and serve their queries, which name both, just the same.
ALTER TABLE ves_events DROP CONSTRAINT ves_events_stream_sequence;
ALTER TABLE ves_events
    ADD CONSTRAINT ves_events_stream_sequence UNIQUE (store_id, tenant_id, sequence_number);
DROP INDEX ves_events_entity;
CREATE INDEX ves_events_entity ON ves_events (store_id, tenant_id, entity_type, entity_id, sequence_number);
DROP INDEX ves_events_agent;
CREATE INDEX ves_events_agent ON ves_events (source_agent_id, tenant_id, sequenced_at);

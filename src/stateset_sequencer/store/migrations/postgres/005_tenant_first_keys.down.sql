DROP INDEX event_schemas_id;
ALTER TABLE event_schemas DROP CONSTRAINT event_schemas_pkey;
ALTER TABLE event_schemas ADD CONSTRAINT event_schemas_pkey PRIMARY KEY (id);

DROP INDEX ves_commitments_batch;
ALTER TABLE ves_commitments DROP CONSTRAINT ves_commitments_pkey;
ALTER TABLE ves_commitments ADD CONSTRAINT ves_commitments_pkey PRIMARY KEY (batch_id);

DROP TABLE ves_event_ids;

DROP INDEX ves_events_agent;
CREATE INDEX ves_events_agent ON ves_events (tenant_id, source_agent_id, sequenced_at);
DROP INDEX ves_events_entity;
CREATE INDEX ves_events_entity ON ves_events (tenant_id, store_id, entity_type, entity_id, sequence_number);
ALTER TABLE ves_events DROP CONSTRAINT ves_events_stream_sequence;
ALTER TABLE ves_events
    ADD CONSTRAINT ves_events_stream_sequence UNIQUE (tenant_id, store_id, sequence_number);

ALTER TABLE ves_sequencer_receipts DROP CONSTRAINT ves_sequencer_receipts_event_fkey;
ALTER TABLE ves_sequencer_receipts DROP CONSTRAINT ves_sequencer_receipts_pkey;
ALTER TABLE ves_events DROP CONSTRAINT ves_events_pkey;
ALTER TABLE ves_events ADD CONSTRAINT ves_events_pkey PRIMARY KEY (event_id);
ALTER TABLE ves_sequencer_receipts ADD CONSTRAINT ves_sequencer_receipts_pkey PRIMARY KEY (event_id);
ALTER TABLE ves_sequencer_receipts
    ADD CONSTRAINT ves_sequencer_receipts_event_id_fkey FOREIGN KEY (event_id)
    REFERENCES ves_events (event_id) ON DELETE CASCADE;

DROP TABLE entity_versions;
DROP TABLE ves_command_dedupe;
DROP TABLE ves_sequencer_receipts;
DROP TABLE ves_events;
DROP TABLE sequence_counters;

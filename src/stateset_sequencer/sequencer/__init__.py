"""The sequencer's services: ingest, agent keys and the sequencer's own identity."""

"""The recovery toolkit: export, re-ingest, verify, repair, backup and restore."""

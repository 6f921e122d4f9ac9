"""The HTTP API (FastAPI), wire-compatible with the Rust reference."""

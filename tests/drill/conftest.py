"""What every drill test needs: the PostgreSQL server binaries (initdb, pg_ctl,
pg_basebackup, psql), which the drills run as the postgres OS user."""

from __future__ import annotations

import shutil

import pytest

from stateset_sequencer import config
from stateset_sequencer.testing.cluster import ClusterError, pg_bin_dir


@pytest.fixture(autouse=True)
def _postgres_binaries() -> None:
    """Skip without the PostgreSQL binaries; under CI=true fail (a run must not pass by
    skipping its drills)."""
    try:
        bin_dir = pg_bin_dir()
    except ClusterError as exc:
        reason = str(exc)
    else:
        missing = [t for t in ("pg_basebackup", "postgres") if not (bin_dir / t).is_file()]
        if shutil.which("psql") is None and not (bin_dir / "psql").is_file():
            missing.append("psql")
        reason = f"{bin_dir} lacks {', '.join(missing)}" if missing else ""
    if reason:
        message = f"PostgreSQL binaries for the drills: {reason}"
        if config.TestEnvironment().strict:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

"""`sequencer-cli drill failover`, small: a primary and a streaming standby, SIGKILL of the
primary under load, promotion, the sequencers reconnecting by themselves. Synchronous
replication loses nothing even before the agents re-sync; asynchronous is whole after."""

from __future__ import annotations

import shutil

from tests.drill import drills


def test_failover_sync_and_async_lose_no_acknowledged_event() -> None:
    with drills.scratch() as tmp:
        ran = drills.run("failover", tmp, tmp.parent / f"{tmp.name}-reports")
        try:
            sync = drills.passed(ran, "failover-sync")
            assert sync["figures"]["rpo_events"]["before_resync"] == 0
            assert sync["checks"]["RPO 0 before re-sync"]
            asynchronous = drills.passed(ran, "failover-async")
            assert "RPO 0 before re-sync" not in asynchronous["checks"]
            for report in (sync, asynchronous):
                marks = report["marks_s"]
                assert marks["failure"] <= marks["detected"] <= marks["recovered"]
                assert marks["recovered"] < marks["verified"]
            drills.assert_clean(tmp)
        finally:
            shutil.rmtree(ran.folder, ignore_errors=True)

"""`sequencer-cli drill failover`, small: a primary and a standby, the primary lost under
load, promotion, the sequencers reconnecting by themselves. Three runs: synchronous
streaming replication loses nothing even before the agents re-sync; asynchronous is whole
after it; with Patroni on etcd, the promotion happens by itself once the lost leader's key
expires."""

from __future__ import annotations

from tests.drill import drills


def test_failover_sync_async_and_patroni_lose_no_acknowledged_event() -> None:
    with drills.drilled("failover") as (ran, tmp):
        sync = drills.passed(ran, "failover-sync")
        assert sync["figures"]["rpo_events"]["before_resync"] == 0
        assert sync["checks"]["RPO 0 before re-sync"]
        asynchronous = drills.passed(ran, "failover-async")
        assert "RPO 0 before re-sync" not in asynchronous["checks"]
        automatic = drills.passed(ran, "failover-patroni")
        steps = [s.get("step") for s in automatic["steps"]]
        assert "patroni promotes node b" in steps
        assert "promote the standby" not in steps  # nobody ran pg_ctl promote
        for report in (sync, asynchronous, automatic):
            marks = report["marks_s"]
            assert marks["failure"] <= marks["detected"] <= marks["recovered"]
            assert marks["recovered"] < marks["verified"]
        drills.assert_clean(tmp)

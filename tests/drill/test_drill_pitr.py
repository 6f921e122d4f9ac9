"""`sequencer-cli drill pitr`, small: an operator's DELETE under load, a restore to just
before it from a base backup and the WAL archive (pg_basebackup with an archive folder,
then pgBackRest), and the agents' re-sync bringing back what was acknowledged after the
restore point."""

from __future__ import annotations

from tests.drill import drills


def test_pitr_restores_before_the_mistake_and_the_outboxes_bring_back_the_rest() -> None:
    with drills.drilled("pitr") as (ran, tmp):
        for name in ("pitr", "pitr-pgbackrest"):
            report = drills.passed(ran, name)
            figures = report["figures"]
            # A stream's first hundred events, or as many as it had by then.
            assert 0 < figures["deleted_by_mistake"] <= 100
            # Acknowledged between the restore point and the service's stop: lost by
            # the restore, every one back after the re-sync, under its old number.
            lost = figures["rpo_events"]["before_resync"]
            assert lost > 0
            assert figures["resync"]["resequenced"] == lost
            assert figures["after_resync"]["renumbered"] == 0
            assert report["checks"]["check-gaps saw the mistake"]
            assert report["checks"]["every event acknowledged before the mistake restored"]
        steps = {s.get("step") for s in report["steps"]}
        assert {"pgbackrest backup --type=full", "pgbackrest restore --type=time"} <= steps
        drills.assert_clean(tmp)

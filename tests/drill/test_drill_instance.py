"""`sequencer-cli drill instance` and `regional`, small: a sequencer SIGKILLed under load
with the agents failing over to the other (the commit and anchor workers moving with
them, nothing committed or anchored twice); a whole region lost and the standby region,
fed by WAL shipping, promoted with its own sequencer."""

from __future__ import annotations

import json
import shutil

from tests.drill import drills


def test_instance_loss_moves_agents_and_workers_to_the_survivor() -> None:
    with drills.drilled("instance") as (ran, tmp):
        report = drills.passed(ran, "instance")
        checks = report["checks"]
        for name in (
            "commit worker moved to the survivor",
            "no duplicate commitment",
            "no double anchor",
            "every commitment anchored",
            "RPO 0 before re-sync",
        ):
            assert checks[name], name
        anchors = report["figures"]["anchors"]
        assert anchors["on_chain"] == anchors["commitments"] > 0
        drills.assert_clean(tmp)


def test_regional_failover_through_the_second_base_url() -> None:
    with drills.drilled("regional") as (ran, tmp):
        report = drills.passed(ran, "regional")
        assert report["marks_s"]["detected"] <= report["marks_s"]["recovered"]
        drills.assert_clean(tmp)


def test_an_interrupted_drill_stops_and_removes_everything_it_started() -> None:
    with drills.scratch() as tmp:
        report = tmp.parent / f"{tmp.name}-reports"
        try:
            done = drills.interrupt("instance", tmp, report, after_s=1.0)
            assert done.returncode == 130, (done.stdout, done.stderr)
            assert "interrupted" in done.stderr
            drills.assert_clean(tmp)
            written = json.loads((report / "instance.json").read_text())
            assert not written["passed"]
            assert "the drill was interrupted" in written["problems"]
        finally:
            shutil.rmtree(report, ignore_errors=True)

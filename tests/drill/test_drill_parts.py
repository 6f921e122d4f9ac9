"""The drill's own arithmetic, without servers: the ledger's comparison of what the agents
hold with what the database holds, the RTO as read off the pushes, the timeline picture,
and the command's refusals of options it cannot run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.drill import SCENARIOS, ledger
from stateset_sequencer.drill.fleet import Fleet, Push
from stateset_sequencer.drill.report import (
    FAILURE,
    RECOVERED,
    Clock,
    Report,
    bin_width,
    draw_timeline,
    rates,
)
from tests.drill import drills

RECEIPT = {"sequenceNumber": 1, "receiptHash": "ab"}


def held(sequence: int, signing: bytes = b"h", receipt: object = None) -> ledger.Held:
    wire = dict(RECEIPT, sequenceNumber=sequence) if receipt is None else receipt
    return ledger.Held(signing, sequence, wire)  # type: ignore[arg-type]


def test_compare_tells_missing_altered_and_receipt_changed_apart() -> None:
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    ours = {a: held(1), b: held(2), c: held(3), d: held(4)}
    theirs = {
        a: held(1),
        c: held(3, signing=b"other"),
        d: held(4, receipt={"sequenceNumber": 4, "receiptHash": "cd"}),
    }
    result = ledger.compare(ours, theirs)
    assert (result.missing, result.altered, result.receipt_changed) == ([b], [c], [d])
    assert not result.intact
    assert result.to_json()["missing"] == 1
    assert ledger.compare({a: held(1)}, {a: held(1), b: held(2)}).intact


def test_renumbered_counts_events_that_came_back_under_another_number() -> None:
    a, b, c = (uuid.uuid4() for _ in range(3))
    before = {a: held(1), b: held(2), c: held(3)}
    after = {a: held(1), b: held(5), c: held(3)}
    assert ledger.renumbered(before, after) == 1


def report_with(marks: dict[str, float]) -> Report:
    report = Report("instance", None, {}, Clock())
    report.marks.update(marks)
    return report


def test_rto_waits_for_every_lane_and_ignores_pushes_begun_before_recovery() -> None:
    report = report_with({FAILURE: 10.0, RECOVERED: 12.0})
    pushes = [
        Push(0, 9.0, 13.0, 5),  # began before the failure: proves nothing
        Push(0, 12.5, 13.5, 5),
        Push(1, 12.1, 12.2, 0, "ConnectError: refused"),
        Push(1, 12.4, 14.0, 5),
        Push(1, 14.5, 15.0, 5),
    ]
    assert report.rto(pushes, RECOVERED) == 4.0
    # A lane that never got a write through after recovery: not reached.
    assert report.rto([*pushes, Push(2, 13.0, 13.1, 0, "boom")], RECOVERED) is None
    assert report_with({}).rto(pushes) is None


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.floats(0, 100), st.floats(0, 5), st.integers(0, 50), st.booleans()
        ),
        max_size=60,
    )
)
def test_rates_account_for_every_acknowledged_event(
    raw: list[tuple[int, float, float, int, bool]],
) -> None:
    pushes = [
        Push(lane, start, start + took, 0 if failed else acked, "x" if failed else None)
        for lane, start, took, acked, failed in raw
    ]
    end = max([1.0, *(p.ended for p in pushes)])
    width = bin_width(end)
    centres, acked, failed = rates(pushes, end, width)
    assert len(centres) == len(acked) == len(failed)
    assert round(sum(acked) * width) == sum(p.acked for p in pushes)
    assert sum(failed) == sum(1 for p in pushes if p.error)


def test_the_timeline_is_a_png_with_the_marks(tmp_path: Path) -> None:
    report = report_with({FAILURE: 1.0, RECOVERED: 1.2, "verified": 3.0})
    report.figures.update(rto_s=0.5, rpo_events={"before_resync": 3, "after_resync": 0})
    target = tmp_path / "t.png"
    draw_timeline(report, [Push(0, 0.1, 0.5, 10), Push(0, 1.1, 1.5, 0, "x")], target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fleet_needs_a_stream_per_agent_and_an_event_per_stream(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="as many streams as agents"):
        Fleet(tmp_path, uuid.uuid4(), agents=3, streams=2, events=10, clock=Clock())
    with pytest.raises(ValueError, match="one event per stream"):
        Fleet(tmp_path, uuid.uuid4(), agents=1, streams=4, events=3, clock=Clock())
    small = Fleet(tmp_path, uuid.uuid4(), agents=2, streams=4, events=400, clock=Clock())
    assert small.batch == 5  # twenty pushes per lane at least
    assert (
        Fleet(tmp_path, uuid.uuid4(), agents=8, streams=20, events=200_000, clock=Clock()).batch
        == 50
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonsense"], "no drill 'nonsense'"),
        (["instance", "--streams", "2", "--agents", "3"], "fewer than --agents"),
        (["instance", "--events", "3", "--streams", "4", "--agents", "1"], "fewer than --streams"),
        (["instance", "--events", "0"], "--events"),
        (["instance", "--rate", "-5"], "--rate"),
        (["instance", "--events", "ten"], "--events"),
    ],
)
def test_the_command_refuses_what_it_cannot_run_before_starting_anything(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stateset_sequencer",
            "drill",
            *args,
            "--report",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_report_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine")
    done = subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", "drill", "pitr", "--report", str(taken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "not a folder" in done.stderr
    assert taken.read_text() == "mine"


def test_the_guide_gives_every_drill_its_command_and_make_drill_runs_them_all() -> None:
    documented = drills.documented()
    assert set(documented) == set(SCENARIOS)
    for scenario, args in documented.items():
        assert args[:2] == ["drill", scenario]
        assert args[args.index("--events") + 1] == "200000"
        assert args[args.index("--streams") + 1] == "20"
        assert args[args.index("--agents") + 1] == "8"
    makefile = (drills.ROOT / "Makefile").read_text()
    assert (
        "sequencer-cli drill $(or $(DRILL_ARGS),all --events 200000 --streams 20 --agents 8)"
        in makefile
    )

"""A drill's report: ``report.json`` with every figure and step, and ``timeline.png``.

RTO is read off the pushes: from the failure to the end of the first push that *started*
after the recovery was complete (or, when the service never stopped, after the failure) and
had an event acknowledged. A push that began before the failure and happened to finish
after it proves nothing about the recovered service. RPO is counted, not estimated: the
acknowledged events missing from the recovered database, before and after the agents
re-send what their outboxes hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .fleet import Push

REPORT_FORMAT = "stateset-sequencer-drill-report"
REPORT_VERSION = 1
RATE_BIN_S = 0.5
# A long drill's timeline gets wider bins: about this many across, so the rate reads as a
# line rather than noise.
RATE_BINS_ACROSS = 300

# The marks every drill sets, in order; the timeline draws each as a vertical line.
FAILURE = "failure"
DETECTED = "detected"
RECOVERED = "recovered"
RESYNCED = "resynced"
VERIFIED = "verified"


class Clock:
    """Seconds since the drill began, on the monotonic clock, and wall time for the report."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.began_at = datetime.now(UTC)

    def __call__(self) -> float:
        return time.monotonic() - self.began


@dataclass(slots=True)
class Report:
    scenario: str
    variant: str | None
    settings: dict[str, Any]
    clock: Clock
    marks: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    written: tuple[Path, Path] | None = None

    @property
    def name(self) -> str:
        return self.scenario if self.variant is None else f"{self.scenario}-{self.variant}"

    def mark(self, what: str) -> float:
        self.marks[what] = round(self.clock(), 3)
        return self.marks[what]

    def check(self, name: str, passed: bool, problem: str) -> None:
        self.checks[name] = passed
        if not passed:
            self.problems.append(problem)

    @property
    def passed(self) -> bool:
        return not self.problems and all(self.checks.values())

    def rto(self, pushes: Sequence[Push], since: str = RECOVERED) -> float | None:
        """Failure to the moment every agent lane that still had events to send got one
        acknowledged by a push started at or after ``since``: when all writers are back,
        not just the first (a lane already on a surviving server says nothing). None when
        some lane never got a write through."""
        failure, ready = self.marks.get(FAILURE), self.marks.get(since, self.marks.get(FAILURE))
        if failure is None or ready is None:
            return None
        firsts: dict[int, float | None] = {}
        for push in pushes:
            if push.started < ready:
                continue
            firsts.setdefault(push.lane, None)
            if push.acked > 0:
                first = firsts[push.lane]
                firsts[push.lane] = push.ended if first is None else min(first, push.ended)
        if not firsts or any(first is None for first in firsts.values()):
            return None
        return round(max(f for f in firsts.values() if f is not None) - failure, 3)

    def to_json(self, pushes: Sequence[Push]) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "format_version": REPORT_VERSION,
            "scenario": self.scenario,
            "variant": self.variant,
            "began_at": self.clock.began_at.isoformat().replace("+00:00", "Z"),
            "passed": self.passed,
            "settings": self.settings,
            "figures": self.figures,
            "marks_s": self.marks,
            "checks": self.checks,
            "problems": self.problems,
            "steps": self.steps,
            "pushes": {
                "count": len(pushes),
                "failed": sum(1 for p in pushes if p.error is not None),
                "errors": sorted({p.error for p in pushes if p.error is not None})[:10],
            },
        }

    def write(self, folder: Path, pushes: Sequence[Push]) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        report = folder / f"{self.name}.json"
        report.write_text(json.dumps(self.to_json(pushes), indent=2) + "\n", encoding="utf-8")
        picture = folder / f"{self.name}.png"
        draw_timeline(self, pushes, picture)
        self.written = (report, picture)
        return self.written

    def summary(self) -> dict[str, Any]:
        """The figures a reader looks for first, and where the rest is."""
        return {
            "name": self.name,
            "passed": self.passed,
            "rto_s": self.figures.get("rto_s"),
            "rpo_events": self.figures.get("rpo_events", {}),
            "events": self.figures.get("events", {}),
            "problems": self.problems,
            "report": None if self.written is None else str(self.written[0]),
            "timeline": None if self.written is None else str(self.written[1]),
        }


def bin_width(end: float) -> float:
    return max(RATE_BIN_S, end / RATE_BINS_ACROSS)


def rates(
    pushes: Sequence[Push], end: float, width: float = RATE_BIN_S
) -> tuple[list[float], list[float], list[float]]:
    """Acknowledged events per second and failed pushes per bin, bin centres first."""
    bins = max(1, int(end / width) + 1)
    acked, failed = [0.0] * bins, [0.0] * bins
    for push in pushes:
        slot = min(bins - 1, int(push.ended / width))
        if push.error is None:
            acked[slot] += push.acked / width
        else:
            failed[slot] += 1
    centres = [(i + 0.5) * width for i in range(bins)]
    return centres, acked, failed


def draw_timeline(report: Report, pushes: Sequence[Push], target: Path) -> None:
    # Imported here: matplotlib is the drill extra's, and costs a second to import.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    end = max([report.clock(), *report.marks.values(), *(p.ended for p in pushes)])
    width = bin_width(end)
    centres, acked, failed = rates(pushes, end, width)
    figure, axis = pyplot.subplots(figsize=(11, 4.5), dpi=100)
    try:
        axis.plot(centres, acked, color="#1f6fb4", linewidth=1.2, label="acknowledged events/s")
        axis.set_xlabel("seconds since the drill began")
        axis.set_ylabel("acknowledged events/s")
        if any(failed):
            other = axis.twinx()
            other.bar(centres, failed, width=width, color="#d62728", alpha=0.35)
            other.set_ylabel("failed pushes per bin", color="#d62728")
        colours = {
            FAILURE: "#d62728",
            DETECTED: "#ff7f0e",
            RECOVERED: "#2ca02c",
            RESYNCED: "#9467bd",
            VERIFIED: "#17becf",
        }
        labels: list[tuple[float, list[str]]] = []
        for name, moment in sorted(report.marks.items(), key=lambda item: item[1]):
            axis.axvline(moment, color=colours.get(name, "#7f7f7f"), linestyle="--", linewidth=1)
            # Marks a moment apart share one label, or they would print over each other.
            if labels and moment - labels[-1][0] < end / 60:
                labels[-1][1].append(name)
            else:
                labels.append((moment, [name]))
        top = axis.get_ylim()[1] * 0.97
        for moment, names in labels:
            axis.text(moment, top, " " + ", ".join(names), rotation=90, va="top", fontsize=8)
        failure = report.marks.get(FAILURE)
        rto = report.figures.get("rto_s")
        if failure is not None and isinstance(rto, int | float):
            axis.axvspan(
                failure, failure + rto, color="#d62728", alpha=0.08, label=f"RTO {rto:.2f} s"
            )
        rpo = report.figures.get("rpo_events", {})
        axis.set_title(
            f"drill {report.name}: RTO {_seconds(rto)}, RPO {rpo.get('before_resync', '?')} "
            f"events before outbox re-sync, {rpo.get('after_resync', '?')} after "
            f"({'passed' if report.passed else 'FAILED'})",
            fontsize=10,
        )
        axis.legend(loc="lower right", fontsize=8)
        axis.set_xlim(0, end)
        axis.set_ylim(bottom=0)
        figure.tight_layout()
        figure.savefig(target)
    finally:
        pyplot.close(figure)


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else "not reached"

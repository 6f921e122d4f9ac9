"""``sequencer-cli drill``: run a disaster drill on loopback and print its RTO and RPO.

The logic is in ``drill/``; this module checks the options, runs the drill and renders the
outcome, one line per run (the ``failover`` drill runs twice: synchronous, asynchronous).
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from ..drill import SCENARIOS
from .common import err, fail, print_json

commands = typer.Typer()

ALL = "all"


@commands.command("drill")
def drill_command(
    scenario: Annotated[
        str, typer.Argument(help=f"One of: {', '.join(SCENARIOS)}, or {ALL}", show_default=False)
    ],
    events: Annotated[
        int, typer.Option("--events", min=1, help="Events the agents write")
    ] = 200_000,
    streams: Annotated[int, typer.Option("--streams", min=1, help="Streams they write to")] = 20,
    agents: Annotated[int, typer.Option("--agents", min=1, help="Agents (≤ streams)")] = 8,
    report: Annotated[
        Path, typer.Option("--report", help="Folder for the JSON reports, PNG timelines and logs")
    ] = Path("drill-reports"),
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=1, help="Events/s over all agents (default: as fast as served)"),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the work folder (data directories) afterwards")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
) -> None:
    """Set up PostgreSQL clusters, sequencers and agents on loopback, break something under
    write load, recover with the documented commands, and prove that no acknowledged event
    was lost or altered. Exit 1 if any drill fails its checks."""
    chosen = list(SCENARIOS) if scenario == ALL else [scenario]
    if scenario != ALL and scenario not in SCENARIOS:
        fail(f"no drill {scenario!r}; the drills: {', '.join(SCENARIOS)}, or {ALL}", 2)
    if streams < agents:
        fail(f"--streams {streams} is fewer than --agents {agents}: each agent needs a stream", 2)
    if events < streams:
        fail(f"--events {events} is fewer than --streams {streams}: each stream needs an event", 2)
    # Imported here: the drills' machinery costs every other command's start-up otherwise.
    from ..drill.report import Report
    from ..drill.scenarios import run
    from ..drill.services import DrillError
    from ..drill.stage import Options
    from ..testing.cluster import ClusterError

    options = Options(
        events=events, streams=streams, agents=agents, report=report, rate=rate, keep=keep
    )
    if importlib.util.find_spec("matplotlib") is None:
        fail(
            "the drills draw their timelines with matplotlib: "
            "pip install 'stateset-sequencer[drill]'",
            2,
        )
    if report.exists() and not report.is_dir():
        fail(f"--report {report}: not a folder", 2)
    # SIGTERM as Ctrl-C: the drill stops every server and cluster it started on the way out.
    signal.signal(signal.SIGTERM, _interrupted)
    reports: list[Report] = []
    try:
        for name in chosen:
            reports.extend(asyncio.run(run(name, options)))
    except (DrillError, ClusterError) as exc:
        fail(f"drill {scenario}: {exc}")
    except KeyboardInterrupt:
        fail(f"drill {scenario}: interrupted; what it had started is stopped and removed", 130)
    if as_json:
        print_json([r.summary() for r in reports])
    else:
        for done in reports:
            typer.echo(_line(done.summary()))
            for problem in done.problems:
                err.print(f"  {done.name}: {problem}")
    if not all(r.passed for r in reports):
        raise typer.Exit(1)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Once only: a second signal (`timeout` forwards its own SIGTERM to the child it
    # runs, and so does a process group kill) must not cut the tear-down short and
    # leave a cluster running.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _line(summary: dict[str, Any]) -> str:
    rto = summary["rto_s"]
    rpo = summary["rpo_events"]
    events = summary["events"]
    return (
        f"drill {summary['name']}: {'PASSED' if summary['passed'] else 'FAILED'}  "
        f"RTO {'not reached' if rto is None else f'{rto:.2f} s'}  "
        f"RPO {rpo.get('before_resync', '?')} event(s) before outbox re-sync, "
        f"{rpo.get('after_resync', '?')} after  "
        f"({events.get('acknowledged', '?')} acknowledged of {events.get('emitted', '?')}; "
        f"report {summary['report']})"
    )

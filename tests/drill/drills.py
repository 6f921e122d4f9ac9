"""Running a drill the way an operator does (``sequencer-cli drill``, a child process), small
enough for the test suite, and checking that it cleaned up after itself.

The drill's work folders go under a temporary directory of the test's own (``TMPDIR``),
reachable by the postgres OS user, so that "nothing left behind" is checked on exactly what
this drill started: no process whose command line names that directory, and the directory
empty afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A few hundred events over four streams from two agents, paced so that the failure
# strikes mid-load.
SMALL = ("--events", "400", "--streams", "4", "--agents", "2", "--rate", "100")
DRILL_TIMEOUT_S = 400


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str
    reports: list[dict[str, Any]]
    folder: Path


@contextmanager
def scratch() -> Iterator[Path]:
    """A TMPDIR for the drill, which the postgres OS user can traverse (pytest's own
    temporary folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="drilltest-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "DISASTER_RECOVERY.md"
CLI = ".venv/bin/sequencer-cli"


def documented() -> dict[str, list[str]]:
    """The full-size command of each drill, as docs/DISASTER_RECOVERY.md §7 gives it: the
    arguments after ``sequencer-cli``."""
    section = GUIDE.read_text(encoding="utf-8").split("## 7. Drills", 1)[1]
    found = {}
    for block in re.findall(r"```text\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith(f"{CLI} drill "):
                args = shlex.split(line)[1:]
                found[args[1]] = args
    return found


@contextmanager
def drilled(scenario: str) -> Iterator[tuple[Ran, Path]]:
    """Run ``scenario`` small in a scratch TMPDIR; yield the outcome and that TMPDIR, and
    remove the reports afterwards."""
    with scratch() as tmp:
        ran = run(scenario, tmp, tmp.parent / f"{tmp.name}-reports")
        try:
            yield ran, tmp
        finally:
            shutil.rmtree(ran.folder, ignore_errors=True)


def command(scenario: str, report: Path, *extra: str) -> list[str]:
    """The guide's command for ``scenario``, made small by ``extra`` (a later option wins)."""
    return [
        sys.executable,
        "-m",
        "stateset_sequencer",
        *documented()[scenario],
        *extra,
        "--report",
        str(report),
        "--json",
    ]


def environment(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp)}


def run(scenario: str, tmp: Path, report: Path, *extra: str) -> Ran:
    done = subprocess.run(
        command(scenario, report, *(extra or SMALL)),
        capture_output=True,
        text=True,
        timeout=DRILL_TIMEOUT_S,
        env=environment(tmp),
        check=False,
    )
    try:
        reports = json.loads(done.stdout) if done.stdout.strip() else []
    except ValueError:
        reports = []
    return Ran(done.returncode, done.stdout, done.stderr, reports, report)


def processes_naming(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        line = raw.replace(b"\0", b" ").decode(errors="replace")
        if str(path) in line and state != "Z":
            found.append(f"{entry.name}: {line[:200]}")
    return found


def assert_clean(tmp: Path) -> None:
    """Nothing the drill started is left: no process, no work folder."""
    deadline = time.monotonic() + 10
    while (left := processes_naming(tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left running: {left}"
    assert not list(tmp.iterdir()), f"left on disk: {[p.name for p in tmp.iterdir()]}"


def interrupt(
    scenario: str, tmp: Path, report: Path, after_s: float
) -> subprocess.CompletedProcess[str]:
    """Start a drill and SIGTERM it ``after_s`` seconds in, once its PostgreSQL runs."""
    child = subprocess.Popen(
        command(scenario, report, *SMALL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp),
    )
    deadline = time.monotonic() + 120
    while not any("postgres" in p for p in processes_naming(tmp)):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the drill never started PostgreSQL"
        time.sleep(0.1)
    time.sleep(after_s)
    # Twice, as `timeout` or a process-group kill would deliver it: the second must not
    # cut the tear-down short.
    child.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def passed(ran: Ran, name: str) -> dict[str, Any]:
    """The report of run ``name``, after checking that it passed every check."""
    by_name = {r["name"]: r for r in ran.reports}
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert name in by_name, (ran.returncode, ran.stdout, ran.stderr)
    summary = by_name[name]
    assert summary["passed"], summary["problems"]
    report: dict[str, Any] = json.loads(Path(summary["report"]).read_text())
    assert report["passed"] and not report["problems"]
    assert all(report["checks"].values()), report["checks"]
    timeline = Path(summary["timeline"])
    assert timeline.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ran.folder / f"{name}-logs" / "commands.log").is_file()
    events = report["figures"]["events"]
    assert events["emitted"] == events["acknowledged"] == events["stored"] >= 400
    assert report["figures"]["rpo_events"]["after_resync"] == 0
    rto = report["figures"]["rto_s"]
    assert isinstance(rto, float) and rto > 0
    return report

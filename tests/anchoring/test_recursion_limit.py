"""The Ethereum libraries and the interpreter's recursion limit."""

from __future__ import annotations

import subprocess
import sys


def test_the_service_keeps_the_default_recursion_limit() -> None:
    """Importing the app (and with it web3 and eth-account) leaves the interpreter's
    recursion limit as it was: the depth guards on hostile JSON depend on it."""
    probe = (
        "import sys; before = sys.getrecursionlimit(); "
        "import stateset_sequencer.api.http.app, stateset_sequencer.cli; "
        "print(before, sys.getrecursionlimit())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out[0] == out[1] == "1000"


def test_commands_start_without_the_ethereum_libraries() -> None:
    """web3 and eth-account take about a second to import: the command line and the
    error table load only the light ``anchoring.faults``; the chain client comes in when
    a command anchors or serves."""
    probe = (
        "import sys, stateset_sequencer.cli, stateset_sequencer.api.http.errors; "
        "print(sorted(m for m in ('web3', 'eth_account') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert out == "[]"

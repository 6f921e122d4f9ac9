"""The generated gRPC modules in ``src/stateset_sequencer/proto/`` are current: what
``scripts/gen_proto.py`` writes from the .proto files today, byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen_proto.py"


def test_generated_modules_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

"""``sequencer-cli sign`` with ``--ves-version``, ``--command-id`` and ``--base-version``:
V2 by default, the file's own version kept, conflicts and bad values refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stateset_sequencer.cli import app
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import envelope

COMMAND = "8af726e2-40e9-4cb6-b7d0-ea463765a9a7"
DROP = {"payload_plain_hash", "payload_cipher_hash", "agent_signature", "ves_version"}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "agent.key"
    key.write_text(kit.AGENT_SEED.hex() + "\n")
    unsigned = {k: v for k, v in kit.event(1).to_wire().items() if k not in DROP}
    event = tmp_path / "event.json"
    event.write_text(json.dumps(unsigned))
    return key, event


def sign(key: Path, event: Path, *flags: str) -> tuple[int, Any]:
    result = CliRunner().invoke(
        app, ["sign", "--key", str(key), "--event", str(event), *flags], env={"COLUMNS": "200"}
    )
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.output


def checked(wire: dict[str, Any]) -> envelope.VesEventEnvelope:
    env = envelope.parse_envelope(wire)
    envelope.verify_signature(env, kit.AGENT.public_key, envelope.validate(env))
    return env


def test_sign_defaults_to_v2_and_sets_the_controls(files: tuple[Path, Path]) -> None:
    key, event = files
    code, wire = sign(key, event)
    assert code == 0 and checked(wire).ves_version == 2
    code, wire = sign(key, event, "--command-id", COMMAND.upper(), "--base-version", "4")
    assert code == 0
    env = checked(wire)
    assert (wire["command_id"], env.base_version, env.ves_version) == (COMMAND, 4, 2)
    code, wire = sign(key, event, "--ves-version", "1", "--command-id", COMMAND)
    assert code == 0 and checked(wire).ves_version == 1


def test_sign_keeps_the_files_version_and_refuses_a_conflict(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    key, event = files
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(json.loads(event.read_text()) | {"ves_version": 1}))
    code, wire = sign(key, v1)
    assert code == 0 and checked(wire).ves_version == 1
    code, wire = sign(key, v1, "--ves-version", "1")
    assert code == 0 and checked(wire).ves_version == 1
    code, output = sign(key, v1, "--ves-version", "2")
    assert code == 1 and "ves_version is 1 in the file but 2" in output
    with_command = tmp_path / "cmd.json"
    with_command.write_text(json.dumps(json.loads(event.read_text()) | {"command_id": COMMAND}))
    code, _ = sign(key, with_command, "--command-id", COMMAND.upper())
    assert code == 0  # the same UUID, spelt otherwise
    code, output = sign(key, with_command, "--command-id", "11111111-1111-4111-8111-111111111111")
    assert code == 1 and "command_id" in output


@pytest.mark.parametrize(
    ("flags", "code", "needle"),
    [
        (("--ves-version", "3"), 2, "--ves-version"),
        (("--ves-version", "0"), 2, "--ves-version"),
        (("--base-version", "-1"), 2, "--base-version"),
        (("--command-id", "cmd-1"), 2, "not a UUID"),
        (("--base-version", str(2**53)), 1, "schema_validation: base_version"),
    ],
)
def test_sign_refuses_bad_values(
    files: tuple[Path, Path], flags: tuple[str, ...], code: int, needle: str
) -> None:
    key, event = files
    got, output = sign(key, event, *flags)
    assert got == code and needle in output


def test_v1_may_carry_a_base_version_beyond_2_53(files: tuple[Path, Path]) -> None:
    key, event = files
    code, wire = sign(key, event, "--ves-version", "1", "--base-version", str(2**53))
    assert code == 0 and checked(wire).base_version == 2**53

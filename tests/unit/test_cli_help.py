"""Every option of every ``sequencer-cli`` command says what it is for, once.

``send --batch`` and ``register-key --tenant-id/--agent-id`` had no help at all, and
``--api-key`` read "API key (or $SEQUENCER_API_KEY) [env var: SEQUENCER_API_KEY]": typer
already names an option's environment variable, so a help text that names it too says it
twice."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import click
import pytest
import typer
from typer.testing import CliRunner

from stateset_sequencer.cli import app

# A word, or a dotted/slashed name such as agent.key or sqlite:///path, as one token.
_TOKEN = re.compile(r"[\w$]+(?:[./:-]+[\w$]+)*")


def commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def options() -> list[tuple[str, click.Option]]:
    found = [
        (f"{name} {param.opts[0]}", param)
        for name, command in commands(typer.main.get_command(app))
        for param in command.params
        if isinstance(param, click.Option) and param.name != "help"
    ]
    assert len(found) > 50  # the walk reached the commands
    return found


def repeated(text: str) -> set[str]:
    """Words of five letters or more, and pairs of words, that occur twice."""
    words = _TOKEN.findall(text.lower())
    pairs = [" ".join(p) for p in itertools.pairwise(words)]
    return {
        w for w in [*words, *pairs] if (len(w) >= 5 or " " in w) and [*words, *pairs].count(w) > 1
    }


@pytest.mark.parametrize(
    ("where", "option"), options(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_option_has_help_that_does_not_repeat_itself(
    where: str, option: click.Option
) -> None:
    text = (option.help or "").strip()
    assert text, f"{where} has no help text"
    envvars = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or [])
    for name in envvars:
        assert name.lower() not in text.lower(), f"{where}: typer already shows [env var: {name}]"
    assert not repeated(text), f"{where} repeats {sorted(repeated(text))}: {text!r}"


def test_the_rendered_help_names_the_environment_variable_once() -> None:
    for command in ("send", "register-key", "doctor"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert result.output.count("SEQUENCER_API_KEY") == 1, result.output
    send = CliRunner().invoke(app, ["send", "--help"], env={"COLUMNS": "200"}).output
    assert "Events per ingest request" in send
    register = CliRunner().invoke(app, ["register-key", "--help"], env={"COLUMNS": "200"}).output
    assert "Tenant UUID the agent belongs to" in register and "Agent UUID" in register

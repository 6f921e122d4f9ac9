"""``--version`` on both commands and ``serve --database-url`` (issue 11, item 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stateset_sequencer import __version__, cli
from stateset_sequencer.cli import common, server
from stateset_sequencer.config import Settings


@pytest.mark.parametrize("app", [cli.app, server.app], ids=["sequencer-cli", "stateset-sequencer"])
def test_version_option(app: object) -> None:
    result = CliRunner().invoke(app, ["--version"])  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    assert result.output.strip() == __version__


@pytest.mark.parametrize("app", [cli.app, server.app], ids=["sequencer-cli", "stateset-sequencer"])
def test_serve_takes_the_database_options(
    app: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Settings] = []

    async def fake_serve(settings: Settings) -> None:
        served.append(settings)

    monkeypatch.setattr(server, "serve", fake_serve)
    common.settings.cache_clear()
    url = f"sqlite:///{tmp_path / 'chosen.db'}"
    result = CliRunner().invoke(
        app,  # type: ignore[arg-type]
        ["serve", "--database-url", url, "--data-dir", str(tmp_path / "d"), "--port", "0"],
    )
    assert result.exit_code == 0, result.output
    (settings,) = served
    chosen = (settings.DATABASE_URL, settings.DATA_DIR, settings.PORT)
    assert chosen == (url, tmp_path / "d", 0)

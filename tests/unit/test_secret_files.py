"""``<NAME>_FILE``: a secret read from a file at start-up, in config.py (docs/EDGE.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stateset_sequencer.config import SECRET_FILE_MAX_BYTES, SECRET_FILE_SETTINGS, Settings

SECRET = "ss_" + "s3cr3t" * 8


def secret_file(tmp_path: Path, content: bytes | str, mode: int = 0o600, name: str = "s") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def refused(match: str, **values: Any) -> str:
    with pytest.raises(ValidationError, match=match) as info:
        Settings(**values)
    message = str(info.value)
    assert SECRET not in message  # never echoed
    return message


@pytest.mark.parametrize("name", SECRET_FILE_SETTINGS)
def test_each_secret_reads_from_its_file(tmp_path: Path, name: str) -> None:
    path = secret_file(tmp_path, SECRET + "\n")
    settings = Settings.model_validate({f"{name}_FILE": str(path)})
    assert getattr(settings, name) == SECRET  # the trailing newline dropped
    assert getattr(settings, f"{name}_FILE") is None  # the value replaces the path
    # A copy re-validated (as the CLI's overrides do) keeps the value.
    assert getattr(Settings.model_validate(settings.model_dump()), name) == SECRET


def test_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET_FILE", str(secret_file(tmp_path, SECRET + "\r\n")))
    monkeypatch.setenv("BOOTSTRAP_ADMIN_API_KEY_FILE", str(secret_file(tmp_path, SECRET, name="b")))
    settings = Settings()
    assert settings.JWT_SECRET == SECRET and settings.BOOTSTRAP_ADMIN_API_KEY == SECRET


def test_inner_whitespace_and_unicode_are_kept(tmp_path: Path) -> None:
    path = secret_file(tmp_path, " pass word \u00e9\n\n")
    assert Settings(JWT_SECRET_FILE=str(path)).JWT_SECRET == " pass word \u00e9"


@pytest.mark.parametrize("name", [*SECRET_FILE_SETTINGS, "VES_SEQUENCER_SIGNING_KEY"])
def test_the_plain_setting_and_its_file_are_exclusive(tmp_path: Path, name: str) -> None:
    path = secret_file(tmp_path, "other")
    message = refused("not both", **{name: SECRET, f"{name}_FILE": str(path)})
    assert f"{name}_FILE" in message


def test_an_empty_plain_setting_counts_as_unset(tmp_path: Path) -> None:
    # As the runbook clears an inherited value: NAME= NAME_FILE=...
    path = secret_file(tmp_path, SECRET)
    assert Settings(JWT_SECRET="", JWT_SECRET_FILE=str(path)).JWT_SECRET == SECRET
    seed = secret_file(tmp_path, "ab" * 32, name="seed")
    settings = Settings(VES_SEQUENCER_SIGNING_KEY="", VES_SEQUENCER_SIGNING_KEY_FILE=str(seed))
    # The receipt key's file keeps its own reader (sequencer.identity): the path stays.
    assert str(seed) == settings.VES_SEQUENCER_SIGNING_KEY_FILE
    assert Settings(JWT_SECRET_FILE="").JWT_SECRET is None


def test_a_missing_file(tmp_path: Path) -> None:
    message = refused("does not exist", JWT_SECRET_FILE=str(tmp_path / "nowhere"))
    assert "JWT_SECRET_FILE" in message


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\n", b"   \n"])
def test_an_empty_file(tmp_path: Path, content: bytes) -> None:
    refused("is empty", JWT_SECRET_FILE=str(secret_file(tmp_path, content)))


def test_the_size_bound(tmp_path: Path) -> None:
    at_limit = secret_file(tmp_path, b"a" * SECRET_FILE_MAX_BYTES, name="limit")
    assert len(Settings(JWT_SECRET_FILE=str(at_limit)).JWT_SECRET or "") == SECRET_FILE_MAX_BYTES
    huge = secret_file(tmp_path, b"a" * (SECRET_FILE_MAX_BYTES + 1), name="huge")
    refused("larger than", JWT_SECRET_FILE=str(huge))
    bigger = secret_file(tmp_path, b"a" * (10 * 1024 * 1024), name="bigger")
    refused("larger than", JWT_SECRET_FILE=str(bigger))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe\x00\x01binary", "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
        (b"abc\x00def", "NUL"),
        ("caf\u00e9".encode("latin-1"), "not UTF-8"),
    ],
)
def test_binary_content(tmp_path: Path, content: bytes, match: str) -> None:
    refused(match, JWT_SECRET_FILE=str(secret_file(tmp_path, content)))


def test_not_a_regular_file(tmp_path: Path) -> None:
    refused("not a regular file", JWT_SECRET_FILE=str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused("not a regular file", JWT_SECRET_FILE=str(fifo))  # and does not hang


def test_an_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = secret_file(tmp_path, SECRET, mode=0o000)
    refused("cannot read", JWT_SECRET_FILE=str(path))


def test_a_symlink_as_secret_stores_mount_them(tmp_path: Path) -> None:
    target = secret_file(tmp_path, SECRET)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert Settings(JWT_SECRET_FILE=str(link)).JWT_SECRET == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, SECRET, mode=mode)
    message = refused("chmod 600", JWT_SECRET_FILE=str(path), SEQUENCER_ENV="production")
    assert f"{mode:04o}" in message
    # Outside production: read, with a warning the start logs.
    settings = Settings(JWT_SECRET_FILE=str(path), SEQUENCER_ENV="test")
    assert settings.JWT_SECRET == SECRET
    assert len(settings.secret_file_warnings) == 1
    assert "chmod 600" in settings.secret_file_warnings[0]
    assert SECRET not in settings.secret_file_warnings[0]


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_an_owner_only_file_serves_production(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, SECRET, mode=mode)
    settings = Settings(BOOTSTRAP_ADMIN_API_KEY_FILE=str(path), SEQUENCER_ENV="production")
    assert settings.BOOTSTRAP_ADMIN_API_KEY == SECRET and settings.secret_file_warnings == []


def test_a_field_error_does_not_echo_its_input() -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"MAX_DB_CONNECTIONS": SECRET})
    assert SECRET not in str(info.value)

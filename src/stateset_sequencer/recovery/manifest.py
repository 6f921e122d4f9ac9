"""Reading the JSON manifests that pin exports and backups: one place that checks the
file is there, parses, and names the format and version it expects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_manifest(
    path: Path, expected_format: str, version: int, error: type[Exception], missing: str
) -> dict[str, Any]:
    """The manifest at ``path``, or ``error`` saying what is wrong with it; ``missing``
    is what to say when there is no file at all."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        raise error(f"{path}: not a {expected_format} manifest")
    if manifest.get("format_version") != version:
        raise error(f"{path}: format_version {manifest.get('format_version')!r} is not {version}")
    return manifest

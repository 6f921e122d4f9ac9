"""Where an agent keeps its things, and what ``agent init`` recorded.

``$SEQUENCER_HOME`` (default ``~/.sequencer``) holds ``agent.json`` (this file's
:class:`AgentConfig`, mode 0600 because it carries the API key), ``outbox.db`` and
``keys/``. Every command takes ``--home`` to use another directory, and ``--outbox`` to
put the outbox elsewhere (a bigger disk, say).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HOME_ENV = "SEQUENCER_HOME"
CONFIG_FILE = "agent.json"
CONFIG_FORMAT = "stateset-sequencer-agent"
CONFIG_VERSION = 1


def default_home() -> Path:
    """``$SEQUENCER_HOME`` if set and not empty, else ``~/.sequencer``. The agent side's one
    reading of the environment (it is a program of its own, without the server's
    ``config.Settings``)."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured) if configured else Path.home() / ".sequencer"


class ConfigError(Exception):
    """No configuration, or one that cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    urls: tuple[str, ...]
    api_key: str | None = None
    ves_version: int = 2
    # Pinned at `agent init` (trust on first use): a sequencer that later answers with
    # another key is refused until the operator pins the new one (`agent init --repin`).
    sequencer_public_key: str | None = None
    allow_unsigned_receipts: bool = False
    outbox: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_values(self, **values: Any) -> AgentConfig:
        return replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "format_version": CONFIG_VERSION,
            "agent_id": str(self.agent_id),
            "tenant_id": str(self.tenant_id),
            "store_id": str(self.store_id),
            "urls": list(self.urls),
            "api_key": self.api_key,
            "ves_version": self.ves_version,
            "sequencer_public_key": self.sequencer_public_key,
            "allow_unsigned_receipts": self.allow_unsigned_receipts,
            "outbox": self.outbox,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> AgentConfig:
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise ConfigError(f"{source}: not an agent configuration")
        if data.get("format_version") != CONFIG_VERSION:
            raise ConfigError(
                f"{source}: format_version {data.get('format_version')!r} is not "
                f"{CONFIG_VERSION}; upgrade sequencer-cli"
            )
        try:
            urls = data["urls"]
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
                raise ConfigError(f"{source}: urls must be a non-empty list of strings")
            known = {
                "format",
                "format_version",
                "agent_id",
                "tenant_id",
                "store_id",
                "urls",
                "api_key",
                "ves_version",
                "sequencer_public_key",
                "allow_unsigned_receipts",
                "outbox",
            }
            return cls(
                agent_id=uuid.UUID(str(data["agent_id"])),
                tenant_id=uuid.UUID(str(data["tenant_id"])),
                store_id=uuid.UUID(str(data["store_id"])),
                urls=tuple(urls),
                api_key=_optional_text(data.get("api_key"), "api_key", source),
                ves_version=int(data.get("ves_version", 2)),
                sequencer_public_key=_optional_text(
                    data.get("sequencer_public_key"), "sequencer_public_key", source
                ),
                allow_unsigned_receipts=data.get("allow_unsigned_receipts") is True,
                outbox=_optional_text(data.get("outbox"), "outbox", source),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as exc:
            raise ConfigError(f"{source}: missing {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _optional_text(value: Any, name: str, source: Path) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{source}: {name} must be a string")


@dataclass(frozen=True, slots=True)
class AgentHome:
    """The agent's directory and the files in it."""

    root: Path

    @classmethod
    def resolve(cls, home: Path | None) -> AgentHome:
        return cls(home if home is not None else default_home())

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def outbox_path(self, override: Path | None = None, config: AgentConfig | None = None) -> Path:
        if override is not None:
            return override
        if config is not None and config.outbox:
            return Path(config.outbox)
        return self.root / "outbox.db"

    def load(self) -> AgentConfig:
        path = self.config_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no agent configured here; run `sequencer-cli agent init` first"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read ({exc})") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not JSON ({exc})") from None
        return AgentConfig.from_json(data, path)

    def save(self, config: AgentConfig) -> None:
        """Written whole to a temporary file (0600) and renamed over the old one."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".agent.", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(config.to_json(), handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.config_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def normalise_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """Each URL once, without a trailing slash; only http(s)."""
    seen: list[str] = []
    for url in urls:
        for part in url.split(","):
            text = part.strip().rstrip("/")
            if not text:
                continue
            if not text.startswith(("http://", "https://")):
                raise ConfigError(f"{text!r}: a sequencer URL starts with http:// or https://")
            if text not in seen:
                seen.append(text)
    if not seen:
        raise ConfigError("at least one sequencer URL is needed")
    return tuple(seen)

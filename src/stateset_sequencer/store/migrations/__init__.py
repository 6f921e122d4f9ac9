"""Numbered SQL migrations per dialect, with checksums.

Files are ``<dialect>/NNN_name.up.sql`` and ``NNN_name.down.sql``. Applied versions are
recorded in ``schema_migrations`` with the SHA-256 of their ``up`` text; a migration edited
after it was applied is refused rather than silently diverging from the database. The
adapters execute the plans made here, each in its own transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from ..errors import MigrationError
from ..records import MigrationStatus

_FILE_RE = re.compile(r"(\d{3})_([a-z0-9_]+)\.(up|down)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up.encode("utf-8")).hexdigest()


def load(dialect: str) -> list[Migration]:
    """All migrations shipped for ``dialect`` ("sqlite" or "postgres"), in version order."""
    folder = resources.files(__package__).joinpath(dialect)
    parts: dict[int, dict[str, str]] = {}
    for entry in folder.iterdir():
        match = _FILE_RE.fullmatch(entry.name)
        if match is None:
            continue
        version, name, direction = int(match[1]), match[2], match[3]
        slot = parts.setdefault(version, {"name": name})
        if slot["name"] != name:
            raise MigrationError(f"migration {version:03d} has two names: {slot['name']}, {name}")
        slot[direction] = entry.read_text(encoding="utf-8")
    migrations = []
    for version in sorted(parts):
        slot = parts[version]
        if "up" not in slot or "down" not in slot:
            raise MigrationError(f"migration {version:03d} needs both an up and a down file")
        migrations.append(Migration(version, slot["name"], slot["up"], slot["down"]))
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise MigrationError(f"{dialect} migrations are not numbered 001, 002, … without gaps")
    return migrations


def check_applied(available: Sequence[Migration], applied: Mapping[int, str]) -> None:
    """Refuse a database whose applied migrations this code does not know or has edited."""
    known = {m.version: m for m in available}
    for version, checksum in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"database has migration {version:03d}, which this version does not ship "
                "(is the database newer than the code?)"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {version:03d}_{migration.name} was edited after it was applied "
                f"(checksum {checksum[:12]}… in the database, {migration.checksum[:12]}… in code)"
            )


def pending(available: Sequence[Migration], applied: Mapping[int, str]) -> list[Migration]:
    check_applied(available, applied)
    return [m for m in available if m.version not in applied]


def to_revert(
    available: Sequence[Migration], applied: Mapping[int, str], target: int
) -> list[Migration]:
    """Migrations to undo, newest first, to bring the database down to ``target``."""
    if target < 0:
        raise MigrationError("rollback target must be 0 or a migration version")
    check_applied(available, applied)
    return [m for m in reversed(available) if m.version in applied and m.version > target]


def status(available: Sequence[Migration], applied: Mapping[int, str]) -> list[MigrationStatus]:
    return [
        MigrationStatus(
            version=m.version,
            name=m.name,
            applied=m.version in applied,
            checksum_ok=applied.get(m.version, m.checksum) == m.checksum,
        )
        for m in available
    ]

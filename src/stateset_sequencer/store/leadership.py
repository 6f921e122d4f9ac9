"""What both adapters of :class:`LeaderLock` agree on: the rule for a lock's name."""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-z0-9-]{1,64}")


def check_lock_name(name: str) -> str:
    """``name`` when it is a valid lock name (it becomes part of a file name on SQLite)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a leader lock name is 1-64 of [a-z0-9-], not {name!r}")
    return name

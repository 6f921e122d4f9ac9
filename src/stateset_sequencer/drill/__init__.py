"""Disaster drills: real failures of real PostgreSQL servers and sequencer processes under
write load from real agents, with the recovery done by the documented commands, and the
outcome measured (RTO, RPO) and proved (every acknowledged event back, unaltered, no gap,
``verify-events --deep`` clean).

``fleet`` is the agents' load, ``ledger`` compares what they hold acknowledged with what
the database holds, ``services`` starts and kills the sequencers and runs the commands,
``stage`` owns one drill's components and the recovery steps the drills share, ``report``
writes the JSON report and the PNG timeline, and ``scenarios`` holds the five drills.
"""

from __future__ import annotations

# Each drill and its runs (None: the drill's only run). Here, not in ``scenarios``, so that
# sequencer-cli can list them at start-up without importing what the drills need.
SCENARIOS: dict[str, tuple[str | None, ...]] = {
    "pitr": (None, "pgbackrest"),
    "failover": ("sync", "async", "patroni"),
    "instance": (None,),
    "corruption": (None,),
    "regional": (None,),
}

"""``sequencer-cli``: the operator's and the agent's command line.

Every command exits 0 on success, 1 when the work itself fails (a bad signature, an
unreadable key) and 2 on usage errors, and says why on stderr in one line, never with a
traceback. The commands are thin shells over importable functions (``sequencer/``,
``recovery/``, ``client/``), grouped here by topic: ``keys``, ``events``, ``database``,
``recovery``, ``commitments``, ``tail``, ``drill`` and ``server``.
"""

from __future__ import annotations

from . import (
    agent,
    anchoring,
    audit,
    commitments,
    database,
    drill,
    events,
    keys,
    keystore,
    projections,
    recovery,
    server,
    tail,
)
from .common import program

app = server.with_version_option(
    program(
        "sequencer-cli",
        "StateSet Sequencer: sign and verify VES v1 and v2 events, and operate the sequencer.",
    )
)
app.command("version")(server.version_command)
app.command("serve", help="Serve the HTTP API (same as `stateset-sequencer serve`).")(
    server.serve_command
)
# Topic modules declare their commands on a Typer of their own; the root takes them over
# unnested, so every command keeps its top-level name.
for topic in (keys, events, database, recovery, commitments, anchoring, agent, tail, drill):
    app.registered_commands.extend(topic.commands.registered_commands)
app.add_typer(database.migrate_app, name="migrate")
app.add_typer(keys.api_keys_app, name="api-keys")
app.add_typer(database.backup_app, name="backup")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(projections.projections_app, name="projections")
app.add_typer(agent.agent_app, name="agent")
app.add_typer(keystore.keys_app, name="keys")


def main() -> None:
    app()

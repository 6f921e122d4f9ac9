"""``sequencer-cli commit`` on both backends: the next range, an explicit one, the
refusals, and a stream whose commitments ``verify-events`` then checks."""

from __future__ import annotations

import json

from stateset_sequencer.testing import kit
from tests.recovery.conftest import SEQUENCER_PK, Db, cli, populate, stream_args


async def test_commit_builds_a_chain_that_verifies(db: Db) -> None:
    await populate(db.store, 7)
    first = cli("commit", *stream_args(), "--max-events", "4", "--json", "--database-url", db.url)
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert (one["sequence_start"], one["sequence_end"], one["created"]) == (1, 4, True)
    again = cli("commit", *stream_args(), "--from", "1", "--to", "4", "--database-url", db.url)
    assert again.returncode == 0 and "already committed 1..4" in again.stdout
    rest = cli("commit", *stream_args(), "--database-url", db.url)
    assert rest.returncode == 0 and "committed 5..7" in rest.stdout, rest.stderr
    rows = await db.store.list_commitments(kit.STREAM)
    assert [(r.sequence_start, r.sequence_end) for r in rows] == [(1, 4), (5, 7)]
    assert rows[1].prev_state_root == rows[0].new_state_root
    checked = cli(
        "verify-events",
        *stream_args(),
        "--sequencer-public-key",
        SEQUENCER_PK,
        "--database-url",
        db.url,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 finding(s)" in checked.stdout


async def test_commit_refusals_name_the_rule_and_write_nothing(db: Db) -> None:
    await populate(db.store, 3)
    before = await db.store.list_commitments(kit.STREAM)
    for args, words in (
        (["--from", "2", "--to", "3"], "range_not_next"),
        (["--from", "1", "--to", "9"], "events_missing"),
        (["--from", "3", "--to", "2"], "invalid_range"),
    ):
        refused = cli("commit", *stream_args(), *args, "--database-url", db.url)
        assert refused.returncode == 1 and words in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    usage = cli("commit", *stream_args(), "--from", "1", "--database-url", db.url)
    assert usage.returncode == 2 and "--to" in usage.stderr
    assert await db.store.list_commitments(kit.STREAM) == before
    assert cli("commit", *stream_args(), "--database-url", db.url).returncode == 0
    nothing = cli("commit", *stream_args(), "--database-url", db.url)
    assert nothing.returncode == 0 and "nothing to commit" in nothing.stdout

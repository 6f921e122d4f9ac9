"""How the PostgreSQL adapter classifies a constraint violation, fed real errors from a
real server, including the two shapes Citus produces: the shard's copy of a constraint
in the constraint field ("ves_event_ids_pkey_102044"), and the name only in the message.
An event-id race is a ConcurrentWriteError (the ingest retries and then sees the event);
any other violation stays an IntegrityError."""

from __future__ import annotations

import asyncpg
import pytest

from stateset_sequencer.store.errors import ConcurrentWriteError, IntegrityError
from stateset_sequencer.store.postgres.errors import constraint_of, describe, translate
from stateset_sequencer.testing import pg


async def violation(dsn: str, constraint: str) -> asyncpg.PostgresError:
    """A real unique violation of a constraint named ``constraint``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f'CREATE TABLE probe (id INTEGER, CONSTRAINT "{constraint}" PRIMARY KEY (id))'
        )
        await conn.execute("INSERT INTO probe VALUES (1)")
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await conn.execute("INSERT INTO probe VALUES (1)")
        await conn.execute("DROP TABLE probe")
        return caught.value
    finally:
        await conn.close()


async def message_only(dsn: str, constraint: str) -> asyncpg.PostgresError:
    """A unique violation that names the constraint in its message alone, as a Citus
    worker's error passed back by the coordinator can."""
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await conn.execute(
                "DO $$ BEGIN RAISE unique_violation USING MESSAGE = "
                f"'duplicate key value violates unique constraint \"{constraint}\"'; END $$"
            )
        return caught.value
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "constraint",
    [
        "ves_event_ids_pkey",
        "ves_event_ids_pkey_102044",
        "ves_events_pkey_102009",
        "ves_sequencer_receipts_pkey_102077",
    ],
)
async def test_an_event_id_race_is_a_concurrent_write_in_every_shape(constraint: str) -> None:
    async with pg.scratch_database() as dsn:
        for exc in (await violation(dsn, constraint), await message_only(dsn, constraint)):
            assert constraint_of(exc) == constraint.rsplit("_1020", 1)[0]
            assert isinstance(translate(exc, appending=True), ConcurrentWriteError)
            # Outside an append the same violation is a plain integrity fault.
            assert isinstance(translate(exc), IntegrityError)


@pytest.mark.parametrize("constraint", ["ves_events_stream_sequence_102042", "api_keys_pkey"])
async def test_other_violations_stay_integrity_errors(constraint: str) -> None:
    async with pg.scratch_database() as dsn:
        for exc in (await violation(dsn, constraint), await message_only(dsn, constraint)):
            translated = translate(exc, appending=True)
            assert type(translated) is IntegrityError
            # The message names the constraint as the schema declares it.
            assert constraint.rsplit("_1020", 1)[0] in describe(exc)

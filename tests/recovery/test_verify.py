"""verify-events, check-gaps and repair-counters: a clean stream passes, and each
corruption drill is found at the exact sequence number, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.recovery import verify
from stateset_sequencer.recovery.streams import stream_top
from stateset_sequencer.sequencer.commitments import event_leaf
from stateset_sequencer.sequencer.ingest import Sequencer
from stateset_sequencer.store.records import CommitmentRow, CounterState, StoredEvent
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import hashing, merkle, signing
from tests.recovery.conftest import (
    SEQUENCER_PK,
    Db,
    cli,
    open_db,
    populate,
    stream_args,
    verify_cli,
)


def report_of(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text())
    return body


async def commit_first(db: Db, count: int) -> None:
    """Store a real commitment over events 1..count, as the commitment engine would."""
    events = await db.store.read_range(kit.STREAM, 1, count)
    c = merkle.commit(kit.TENANT, kit.STORE_ID, 1, [event_leaf(e) for e in events])
    await db.store.put_commitment(
        CommitmentRow(
            batch_id=uuid.uuid4(),
            tenant_id=kit.TENANT,
            store_id=kit.STORE_ID,
            ves_version=1,
            tree_depth=c.tree_depth,
            leaf_count=c.leaf_count,
            padded_leaf_count=c.padded_leaf_count,
            merkle_root=c.merkle_root,
            prev_state_root=c.prev_state_root,
            new_state_root=c.new_state_root,
            sequence_start=c.sequence_start,
            sequence_end=c.sequence_end,
            committed_at=datetime.now(UTC),
        )
    )


async def test_a_clean_stream_verifies(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 40, encrypted=(5, 17))
    await commit_first(db, 16)
    report = tmp_path / "report.json"
    result = verify_cli(db, "--report", str(report), "--deep")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "40 events checked" in result.stdout
    body = report_of(report)
    assert body["ok"] is True and body["events_checked"] == 40 and body["finding_count"] == 0
    assert body["checks"]["commitments"].startswith("1 commitments chained; 1 Merkle roots")
    assert body["checks"]["anchors"].startswith("NOT CONFIGURED")
    assert body["checks"]["receipt"] == "hashes checked; signatures checked"
    clean = cli("check-gaps", *stream_args(), "--database-url", db.url)
    assert clean.returncode == 0 and clean.stdout.startswith("ok:")


async def flip_payload(db: Db) -> int:
    if db.dialect == "sqlite":
        await db.sql(
            "UPDATE ves_events SET payload = replace(payload, '12.5', '12.6') "
            "WHERE sequence_number = 7"
        )
    else:
        await db.sql(
            "UPDATE ves_events SET payload = replace(payload::text, '12.5', '12.6')::json "
            "WHERE sequence_number = 7"
        )
    return 7


async def delete_row(db: Db) -> int:
    await db.sql("DELETE FROM ves_sequencer_receipts WHERE sequence_number = 4")
    await db.sql("DELETE FROM ves_events WHERE sequence_number = 4")
    return 4


async def swap_signatures(db: Db) -> int:
    rows = await db.sql(
        "SELECT sequence_number, agent_signature FROM ves_events "
        "WHERE sequence_number IN (3, 9) ORDER BY sequence_number"
    )
    (_, sig3), (_, sig9) = rows
    await db.sql(
        "UPDATE ves_events SET agent_signature = $1 WHERE sequence_number = 3", bytes(sig9)
    )
    await db.sql(
        "UPDATE ves_events SET agent_signature = $1 WHERE sequence_number = 9", bytes(sig3)
    )
    return 3


async def alter_receipt(db: Db) -> int:
    await db.sql(
        "UPDATE ves_sequencer_receipts SET receipt_hash = $1 WHERE sequence_number = 5",
        os.urandom(32),
    )
    return 5


async def resign_receipt_with_other_key(db: Db) -> int:
    # The hash is right but the signature is not the sequencer's.
    rows = await db.sql("SELECT receipt_hash FROM ves_sequencer_receipts WHERE sequence_number = 8")
    forged = signing.Signer(bytes([1]) * 32).sign(bytes(rows[0][0]))
    await db.sql(
        "UPDATE ves_sequencer_receipts SET sequencer_signature = $1 WHERE sequence_number = 8",
        forged,
    )
    return 8


DRILLS: dict[str, tuple[Callable[[Db], Awaitable[int]], str]] = {
    "payload_byte": (flip_payload, "envelope.invalid_payload_hash"),
    "deleted_row": (delete_row, "sequence.gap"),
    "swapped_signatures": (swap_signatures, "agent_signature.invalid_signature"),
    "altered_receipt": (alter_receipt, "receipt.receipt_hash_mismatch"),
    "forged_receipt_signature": (
        resign_receipt_with_other_key,
        "receipt.receipt_signature_invalid",
    ),
}


@pytest.mark.parametrize("drill", sorted(DRILLS))
async def test_corruption_is_found_at_the_exact_sequence(
    db: Db, tmp_path: Path, drill: str
) -> None:
    await populate(db.store, 12)
    corrupt, code = DRILLS[drill]
    bad = await corrupt(db)
    report = tmp_path / "report.json"
    result = verify_cli(db, "--report", str(report))
    assert result.returncode == 1, result.stdout
    assert f"first bad sequence {bad}:" in result.stderr and "Traceback" not in result.stderr
    body = report_of(report)
    assert body["ok"] is False
    assert body["first_finding"]["sequence"] == bad
    assert f"{body['first_finding']['check']}.{body['first_finding']['code']}" == code
    assert body["streams"][0]["first_bad_sequence"] == bad
    if drill == "swapped_signatures":
        assert sorted(f["sequence"] for f in body["findings"]) == [3, 9]


async def test_counter_behind_is_found_then_repaired_with_an_audit_row(db: Db) -> None:
    await populate(db.store, 12)
    await db.sql("UPDATE sequence_counters SET current_sequence = 6")
    found = verify_cli(db)
    assert found.returncode == 1 and "first bad sequence 7:" in found.stderr
    assert "sequence.counter_behind" in found.stderr
    gaps = cli("check-gaps", "--database-url", db.url)
    assert gaps.returncode == 1 and "counter 6 != highest stored event 12" in gaps.stdout

    dry = cli("repair-counters", *stream_args(), "--database-url", db.url)
    assert dry.returncode == 0 and "would:" in dry.stdout and "nothing changed" in dry.stdout
    assert await db.store.head(kit.STREAM) == 6
    assert await db.store.list_audit(action="repair_counter") == []

    applied = cli("repair-counters", "--apply", "--database-url", db.url)
    assert applied.returncode == 0, applied.stderr
    assert "counter is now 12" in applied.stdout
    assert await db.store.head(kit.STREAM) == 12
    [audit] = await db.store.list_audit(action="repair_counter")
    assert audit.details["old_counter"] == 6 and audit.details["new_counter"] == 12
    assert audit.tenant_id == kit.TENANT and audit.actor.startswith("sequencer-cli:")
    assert verify_cli(db).returncode == 0
    # The repaired stream takes new events again.
    seq = kit.sequencer(db.store)
    try:
        result = await seq.ingest(kit.AGENT_ID, [kit.event(99)])
    finally:
        seq.close()
    assert result.sequence_start == 13


async def test_a_counter_ahead_is_not_lowered_without_allow_lower(db: Db) -> None:
    await populate(db.store, 10)
    await db.sql("UPDATE sequence_counters SET current_sequence = 15")
    found = verify_cli(db)
    assert found.returncode == 1 and "first bad sequence 11:" in found.stderr
    refused = cli("repair-counters", "--apply", "--database-url", db.url)
    assert refused.returncode == 1 and "REFUSED" in refused.stdout
    assert "re-issue sequence numbers 11..15" in refused.stdout
    assert await db.store.head(kit.STREAM) == 15
    assert await db.store.list_audit(action="repair_counter") == []
    lowered = cli("repair-counters", "--apply", "--allow-lower", "--database-url", db.url)
    assert lowered.returncode == 0 and await db.store.head(kit.STREAM) == 10


async def test_check_gaps_lists_the_exact_missing_numbers(db: Db) -> None:
    await populate(db.store, 12)
    for n in (1, 4, 8, 9):
        await db.sql(f"DELETE FROM ves_sequencer_receipts WHERE sequence_number = {n}")
        await db.sql(f"DELETE FROM ves_events WHERE sequence_number = {n}")
    result = cli("check-gaps", *stream_args(), "--database-url", db.url)
    assert result.returncode == 1
    assert "missing 1, 4, 8-9" in result.stdout
    as_json = cli("check-gaps", "--json", "--database-url", db.url)
    [entry] = json.loads(as_json.stdout)
    assert entry["missing"] == [[1, 1], [4, 4], [8, 9]] and entry["counter_mismatch"] is False
    gaps = await db.store.sequence_gaps(kit.STREAM)
    assert [(g.first_missing, g.last_missing) for g in gaps] == [(1, 1), (4, 4), (8, 9)]


async def test_a_wrong_merkle_root_is_found_at_the_commitment_start(db: Db) -> None:
    await populate(db.store, 10)
    await commit_first(db, 8)
    await db.sql("UPDATE ves_commitments SET merkle_root = $1", os.urandom(32))
    result = verify_cli(db)
    assert result.returncode == 1
    # A tampered root breaks both the recomputed root and the recorded state root.
    assert "first bad sequence 1: commitments." in result.stderr


async def verify_here(db: Db, **options: Any) -> verify.Report:
    """verify-events on the stream, in this process (findings as objects)."""
    states = await db.store.counter_states(kit.STREAM)
    checks = verify.default_checks(
        db.store, sequencer_public_key=bytes.fromhex(SEQUENCER_PK), deep=False
    )
    runner = verify.Verifier(db.store, checks, **options)
    return await runner.run([verify.plan_run(s, None, None) for s in states])


def test_the_leaf_is_the_protocols() -> None:
    """``event_leaf`` is VES_PROTOCOL §6.1's leaf over the stored columns."""
    env = kit.event(3)
    stored = StoredEvent(env, 5, datetime.now(UTC), env.signing_hash())
    assert event_leaf(stored) == hashing.leaf_hash(
        kit.TENANT, kit.STORE_ID, 5, env.signing_hash(), env.agent_signature
    )
    assert event_leaf(stored, bytes(32)) == hashing.leaf_hash(
        kit.TENANT, kit.STORE_ID, 5, bytes(32), env.agent_signature
    )


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        # The verifier used to skip these two; ves.merkle.chain_faults checks them.
        ("padded_leaf_count", 32, "commitments.commitment_padded_count"),
        ("tree_depth", 7, "commitments.commitment_tree_depth"),
    ],
)
async def test_wrong_padding_counts_are_found(db: Db, column: str, value: int, code: str) -> None:
    await populate(db.store, 10)
    await commit_first(db, 8)
    await db.sql(f"UPDATE ves_commitments SET {column} = {value}")
    report = await verify_here(db)
    assert [(f.sequence, f"{f.check}.{f.code}") for f in report.findings] == [(1, code)]
    assert report.checks["commitments"].startswith("1 commitments chained; 1 Merkle roots")


async def test_a_commitment_chain_must_start_at_1(db: Db) -> None:
    """The protocol lets a first commitment start anywhere; this sequencer starts every
    stream at 1, so its verifier reports one that does not."""
    await populate(db.store, 10)
    events = await db.store.read_range(kit.STREAM, 3, 6)
    c = merkle.commit(kit.TENANT, kit.STORE_ID, 3, [event_leaf(e) for e in events])
    assert merkle.chain_faults([c]) == []
    await db.store.put_commitment(
        CommitmentRow(
            uuid.uuid4(), kit.TENANT, kit.STORE_ID, 1, c.tree_depth, c.leaf_count,
            c.padded_leaf_count, c.merkle_root, c.prev_state_root, c.new_state_root,
            c.sequence_start, c.sequence_end, datetime.now(UTC),
        )
    )  # fmt: skip
    report = await verify_here(db)
    [finding] = report.findings
    assert (finding.sequence, finding.code) == (3, "commitment_gap")
    assert finding.message == "commitment 3..6: does not start at 1"


def test_the_range_runs_to_the_top_of_the_stream() -> None:
    behind = CounterState(kit.STREAM, counter=6, max_sequence=12, event_count=12)
    ahead = CounterState(kit.STREAM, counter=15, max_sequence=10, event_count=10)
    assert stream_top(behind) == 12 and stream_top(ahead) == 15
    run = verify.plan_run(behind, None, None)
    assert (run.start, run.end, run.whole) == (1, 12, True)
    assert verify.plan_run(ahead, 3, None).whole is False
    assert verify.plan_run(ahead, None, 4).end == 4


class _WhereHooksRun(verify.Check):
    """Records the thread each hook runs on, and the order pages are examined in."""

    name = "where"

    def __init__(self) -> None:
        self.threads: dict[str, set[int]] = {}
        self.examined: list[int] = []

    def _here(self, hook: str) -> None:
        self.threads.setdefault(hook, set()).add(threading.get_ident())

    async def prepare(self, chunk: verify.Chunk) -> None:
        self._here("prepare")

    def ask(self, chunk: verify.Chunk) -> None:
        self._here("ask")

    def examine(self, chunk: verify.Chunk) -> verify.Examined:
        self._here("examine")
        self.examined.append(chunk.records[0][0].sequence_number)
        return verify.Examined()

    def absorb(self, chunk: verify.Chunk, examined: verify.Examined) -> list[verify.Finding]:
        self._here("absorb")
        return []


async def test_every_hook_runs_on_the_event_loop_in_sequence_order(tmp_path: Path) -> None:
    """What the Check docstring says: only the page's computation (``compute``) leaves
    the loop, even with the worker pool and several pages in flight."""
    async for db in open_db("sqlite", tmp_path):
        await populate(db.store, 30)
        where = _WhereHooksRun()
        checks = [*verify.default_checks(db.store, sequencer_public_key=None, deep=False), where]
        runner = verify.Verifier(db.store, checks, workers=2, chunk_size=4, processes=True)
        states = await db.store.counter_states(kit.STREAM)
        report = await runner.run([verify.plan_run(s, None, None) for s in states])
        assert report.total == 0 and report.events == 30
        loop_thread = threading.get_ident()
        hooks = ("prepare", "ask", "examine", "absorb")
        assert where.threads == {hook: {loop_thread} for hook in hooks}
        assert where.examined == list(range(1, 31, 4))


async def store_legacy_unsigned(db: Db, count: int) -> None:
    """Events with receipts as an older version stored them when run without a key."""
    await kit.register(db.store)
    seq = Sequencer(db.store, kit.LegacyUnsignedReceipts(), key_cache_ttl_seconds=0)
    try:
        result = await seq.ingest(kit.AGENT_ID, [kit.event(i) for i in range(count)])
        assert result.events_accepted == count
    finally:
        seq.close()


async def test_an_unsigned_receipt_is_a_finding_unless_allowed(db: Db, tmp_path: Path) -> None:
    await store_legacy_unsigned(db, 3)
    report = tmp_path / "report.json"
    refused = verify_cli(db, "--report", str(report))
    assert refused.returncode == 1, refused.stdout
    assert "first bad sequence 1: receipt.receipt_unsigned" in refused.stderr
    assert "--allow-unsigned-receipts" in refused.stderr
    body = report_of(report)
    assert [f["code"] for f in body["findings"]] == ["receipt_unsigned"] * 3
    allowed = verify_cli(db, "--allow-unsigned-receipts", "--report", str(report))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert report_of(report)["checks"]["receipt"].endswith(
        "3 receipts unsigned (alg none), allowed"
    )


async def test_a_wrongly_signed_receipt_fails_even_with_unsigned_allowed(db: Db) -> None:
    await populate(db.store, 10)
    bad = await resign_receipt_with_other_key(db)
    result = verify_cli(db, "--allow-unsigned-receipts")
    assert result.returncode == 1
    assert f"first bad sequence {bad}: receipt.receipt_signature_invalid" in result.stderr
    # A receipt that says "none" but is not empty is not a legacy unsigned one either.
    await db.sql(
        "UPDATE ves_sequencer_receipts SET signature_alg = 'none' WHERE sequence_number = 2"
    )
    relabelled = verify_cli(db, "--allow-unsigned-receipts")
    assert "first bad sequence 2: receipt.receipt_signature_invalid" in relabelled.stderr


def verify_with_env(db: Db, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """verify-events with no --sequencer-public-key: the key is resolved as the service
    resolves it, from ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VES_", "DATA_DIR"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stateset_sequencer",
            "verify-events",
            *stream_args(),
            "--database-url",
            db.url,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
        check=False,
    )


async def test_verify_events_finds_the_key_where_the_service_does(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 4)
    no_key = verify_with_env(db, {"DATA_DIR": str(tmp_path / "empty")})
    assert no_key.returncode == 0 and "signatures NOT checked" in no_key.stdout
    # A key file, as production gives one.
    secret = tmp_path / "secret.seed"
    secret.write_text(kit.SEQUENCER_SEED.hex() + "\n")
    secret.chmod(0o600)
    from_file = verify_with_env(db, {"VES_SEQUENCER_SIGNING_KEY_FILE": str(secret)})
    assert from_file.returncode == 0, from_file.stderr
    assert "receipt: hashes checked; signatures checked" in from_file.stdout
    # The key kept beside the data: the database file's directory, or DATA_DIR.
    data = tmp_path if db.dialect == "sqlite" else tmp_path / "data"
    data.mkdir(exist_ok=True)
    kept = data / "sequencer.key"
    kept.write_text(bytes([1]).hex() * 32)  # not the key that signed: every receipt fails
    kept.chmod(0o600)
    beside = verify_with_env(db, {"DATA_DIR": str(tmp_path / "data")})
    assert beside.returncode == 1 and "receipt.receipt_signature_invalid" in beside.stderr
    # A key file anyone can read is refused, with the fix.
    secret.chmod(0o644)
    loose = verify_with_env(db, {"VES_SEQUENCER_SIGNING_KEY_FILE": str(secret)})
    assert loose.returncode == 1 and "chmod 600" in loose.stderr
    assert "Traceback" not in loose.stderr

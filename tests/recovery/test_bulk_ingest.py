"""``bulk-ingest`` against a real server process: an export re-ingested into an empty
database comes back with identical receipts and signing hashes, a second run only replays,
``--resume`` skips, and bad input (wrong key, another tenant's key, a truncated file) is
refused with nothing written."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stateset_sequencer.recovery.export import read_export
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, loadkit
from stateset_sequencer.testing.serverproc import server
from stateset_sequencer.ves import signing
from tests.recovery.conftest import STREAM_2, Db, cli, populate

ADMIN_KEY = "ss_00000000" + "bulkingestadminkey00000000000000"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An empty SQLite-backed server with the source's sequencer identity."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'target.db'}",
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "VES_SEQUENCER_ID": str(uuid.UUID(int=7)),
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "SEQUENCER_ENV": "test",
    }
    with server(tmp_path, env) as (url, _out):
        for tenant in {kit.TENANT, STREAM_2.tenant_id}:
            loadkit.register_agent(url, ADMIN_KEY, tenant)
        yield url, tmp_path


def _head(url: str, stream: StreamKey) -> int:
    response = httpx.get(
        f"{url}/api/v1/ves/head",
        params={"tenant_id": str(stream.tenant_id), "store_id": str(stream.store_id)},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=10,
    )
    head: int = response.json()["head_sequence"]
    return head


async def _export(db: Db, folder: Path) -> Path:
    out = folder / "events.ndjson"
    result = cli("export-events", "--all-streams", "--output", str(out), "--database-url", db.url)
    assert result.returncode == 0, result.stderr
    return out


async def test_reingest_reproduces_every_receipt(db: Db, target: tuple[str, Path]) -> None:
    url, folder = target
    await populate(db.store, 40, encrypted=(3, 17))
    await populate(db.store, 15, stream=STREAM_2)
    export = await _export(db, folder)

    first = cli(
        "bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY,
        "--batch-size", "7", "--report", str(folder / "bulk.json"),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "55 events: 55 accepted, 0 replayed, 0 rejected, 0 skipped" in first.stdout
    assert json.loads((folder / "bulk.json").read_text())["accepted"] == 55

    again = cli("bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY)
    assert again.returncode == 0, again.stderr
    assert "55 events: 0 accepted, 55 replayed" in again.stdout

    resumed = cli(
        "bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY, "--resume"
    )
    assert resumed.returncode == 0 and "55 skipped" in resumed.stdout, resumed.stderr

    # The target now holds the same events under the same numbers with the same receipts.
    restored = folder / "restored.ndjson"
    result = cli(
        "export-events", "--all-streams", "--output", str(restored),
        "--database-url", f"sqlite:///{folder / 'target.db'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    before = [(r.sequence_number, r.signing_hash, r.receipt) for r in read_export(export)]
    after = [(r.sequence_number, r.signing_hash, r.receipt) for r in read_export(restored)]
    assert [(s, h) for s, h, _ in before] == [(s, h) for s, h, _ in after]
    for (_, _, old), (_, _, new) in zip(before, after, strict=True):
        assert old is not None and new is not None
        assert (old.receipt_hash, old.sequencer_signature) == (
            new.receipt_hash,
            new.sequencer_signature,
        )
    verified = cli(
        "verify-events", "--all-streams", "--database-url", f"sqlite:///{folder / 'target.db'}",
        "--sequencer-public-key", signing.Signer(kit.SEQUENCER_SEED).public_key.hex(),
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_refusals_write_nothing(db: Db, target: tuple[str, Path]) -> None:
    url, folder = target
    await populate(db.store, 5)
    export = await _export(db, folder)

    wrong = cli("bulk-ingest", "--file", str(export), "--url", url, "--api-key", "ss_nope")
    assert wrong.returncode == 1
    assert "401 invalid_api_key" in wrong.stderr and "Traceback" not in wrong.stderr

    other_tenant = httpx.post(
        f"{url}/api/v1/admin/api-keys",
        json={"tenantId": str(uuid.uuid4()), "write": True},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=10,
    ).json()["apiKey"]
    cross = cli("bulk-ingest", "--file", str(export), "--url", url, "--api-key", other_tenant)
    assert cross.returncode == 1 and "403" in cross.stderr, cross.stderr

    truncated = folder / "truncated.ndjson"
    truncated.write_bytes(export.read_bytes()[:-40])
    (folder / "truncated.ndjson.manifest.json").write_bytes(
        (folder / "events.ndjson.manifest.json").read_bytes()
    )
    cut = cli("bulk-ingest", "--file", str(truncated), "--url", url, "--api-key", ADMIN_KEY)
    assert cut.returncode == 1 and "nothing was sent" in cut.stderr, cut.stderr

    assert _head(url, kit.STREAM) == 0


async def test_outbox_envelopes_without_a_manifest(target: tuple[str, Path]) -> None:
    url, folder = target
    outbox = folder / "outbox.ndjson"
    events = [kit.event(i) for i in range(6)]
    outbox.write_text("\n".join(json.dumps(e.to_wire()) for e in events) + "\n")
    result = cli("bulk-ingest", "--file", str(outbox), "--url", url, "--api-key", ADMIN_KEY)
    assert result.returncode == 0, result.stderr
    assert "6 events: 6 accepted" in result.stdout
    assert _head(url, kit.STREAM) == 6

    broken = folder / "broken.ndjson"
    broken.write_text(json.dumps(events[0].to_wire()) + "\n{not json\n")
    refused = cli("bulk-ingest", "--file", str(broken), "--url", url, "--api-key", ADMIN_KEY)
    assert refused.returncode == 1 and "broken.ndjson:2" in refused.stderr, refused.stderr

"""``serve --workers 2``: a supervisor and two worker processes on one PostgreSQL database
(runtime/workers.py, issue 16 item 1), as real processes.

Which worker served what is read from the workers' own prometheus multiprocess files
(one set per process id, in the supervisor's private directory, here under the test's
TMPDIR), so nothing is added to the API for the tests. The tests share one server and
run in file order: the kill and the rolling restart come after the exact metric counts,
and the last test stops the server with SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from typer.testing import CliRunner

from stateset_sequencer.cli import server as server_cli
from stateset_sequencer.proto import sequencer_v2_pb2 as pb
from stateset_sequencer.proto import sequencer_v2_pb2_grpc as rpc
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.kit import until
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import ServerProcess, children

ADMIN_KEY = "ss_00000000" + "workersadminkeyfortests000000000"
AUTH = {"Authorization": f"ApiKey {ADMIN_KEY}"}
INGEST = "/api/v1/ves/events/ingest"
STREAMS = [StreamKey(kit.TENANT, uuid.UUID(int=0xC000 + s)) for s in range(8)]
BATCH = 5
WAIT_S = 90.0  # a bound on a wait, never an expectation of speed
PACE_S = 0.1  # between one client's requests under a steady load


@dataclass
class Cluster:
    server: ServerProcess
    dsn: str
    tmp: Path
    next_event: int = 0

    def events(self, count: int) -> int:
        """The first of ``count`` event numbers no test has used."""
        first = self.next_event
        self.next_event += count
        return first

    def metrics_dir(self) -> Path:
        (found,) = self.tmp.glob("stateset-sequencer-metrics-*")
        return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name, dsn = pg.create_database("seqworkers")
    folder = tmp_path_factory.mktemp("workers")
    env = {
        "DATABASE_URL": dsn,
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "VES_SEQUENCER_ID": str(uuid.UUID(int=16)),
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "SEQUENCER_ENV": "test",
        # Commitments every few events, and leaders that take over quickly.
        "COMMIT_MAX_EVENTS": "7",
        "COMMIT_INTERVAL_SECS": "0.5",
        "COMMIT_POLL_INTERVAL_MS": "100",
        "LEADER_LOCK_RETRY_SECS": "0.5",
        # The supervisor's private metrics directory is made here, for the tests to read.
        "TMPDIR": str(folder),
    }
    child = ServerProcess(folder, env, workers=2)
    child.start()
    try:
        response = httpx.post(
            child.url + "/api/v1/agents/keys",
            json={
                "tenantId": str(kit.TENANT),
                "agentId": str(kit.AGENT_ID),
                "keyId": 1,
                "publicKey": "0x" + kit.AGENT.public_key.hex(),
            },
            headers=AUTH,
        )
        assert response.status_code == 200, response.text
        yield Cluster(child, dsn, folder)
    finally:
        child.stop()
        pg.drop_database(name)


def body(first: int, stream: StreamKey) -> dict[str, Any]:
    events = [kit.event(first + i, stream=stream) for i in range(BATCH)]
    return {"agentId": str(kit.AGENT_ID), "events": [e.to_wire() for e in events]}


def per_worker(directory: Path, sample_name: str, **labels: str) -> dict[int, float]:
    """A counter's value in each worker process (by pid), from the multiprocess files."""
    found: dict[int, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = int(file.stem.rsplit("_", 1)[1])
        merged = MultiProcessCollector.merge([str(file)], accumulate=False)  # type: ignore[no-untyped-call]
        for metric in merged:
            for sample in metric.samples:
                if sample.name == sample_name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    found[pid] = found.get(pid, 0.0) + sample.value
    return found


async def stored(dsn: str) -> dict[uuid.UUID, list[tuple[uuid.UUID, int]]]:
    """Every stored event of the test tenant: per stream, (event id, sequence) in order."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT store_id, event_id, sequence_number FROM ves_events WHERE tenant_id = $1 "
            "ORDER BY store_id, sequence_number",
            kit.TENANT,
        )
    finally:
        await conn.close()
    out: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
    for row in rows:
        out.setdefault(row["store_id"], []).append((row["event_id"], row["sequence_number"]))
    return out


def assert_gap_free(streams: dict[uuid.UUID, list[tuple[uuid.UUID, int]]]) -> None:
    for store_id, events in streams.items():
        sequences = [sequence for _, sequence in events]
        assert sequences == list(range(1, len(events) + 1)), f"stream {store_id} has a gap"
        assert len({event_id for event_id, _ in events}) == len(events)


@dataclass
class Load:
    """Clients that each send batches to their own stream until stopped, retrying a
    failed request with the same body, and remember every receipt they were given."""

    cluster: Cluster
    clients: int
    keep_alive: bool = True
    retry: bool = True
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    stopping: bool = False

    async def client(self, n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if self.keep_alive else 0)
        async with httpx.AsyncClient(
            base_url=self.cluster.server.url, headers=AUTH, timeout=WAIT_S, limits=limits
        ) as http:
            while not self.stopping:
                payload = body(self.cluster.events(BATCH), STREAMS[n % len(STREAMS)])
                answer = await self.send(http, payload)
                if answer is None:
                    continue
                # New or replayed (a retry of a request whose answer was lost): receipts.
                assert len(answer["receipts"]) == BATCH, answer
                for receipt in answer["receipts"]:
                    self.receipts[receipt["eventId"]] = receipt
                self.bodies.append(payload)
                self.sent += 1
                # Steady, not saturating: the workers being started need the cores too.
                await asyncio.sleep(PACE_S)

    async def send(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> Any:
        while True:
            try:
                response = await http.post(INGEST, json=payload)
                if response.status_code == 200:
                    return response.json()
                problem = f"{response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.failures.append(problem)
            if not self.retry:
                return None
            await asyncio.sleep(0.05)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self.client(n)) for n in range(self.clients)]
        try:
            yield self
        finally:
            self.stopping = True
            await asyncio.gather(*tasks)


async def metric_value(url: str, name: str) -> float:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=WAIT_S) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_ingest_over_many_connections_is_served_by_both_workers(cluster: Cluster) -> None:
    url = cluster.server.url

    async def one_connection(n: int) -> list[int]:
        heads = []
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=WAIT_S) as http:
            for _ in range(4):
                payload = body(cluster.events(BATCH), STREAMS[n % len(STREAMS)])
                response = await http.post(INGEST, json=payload)
                assert response.status_code == 200, response.text
                assert response.json()["eventsAccepted"] == BATCH
                heads.append(int(response.json()["headSequence"]))
        return heads

    await asyncio.gather(*(one_connection(n) for n in range(24)))
    streams = await stored(cluster.dsn)
    assert sum(len(events) for events in streams.values()) == 24 * 4 * BATCH
    assert_gap_free(streams)

    served = per_worker(
        cluster.metrics_dir(), "sequencer_http_requests_total", path=INGEST, status="200"
    )
    assert sum(served.values()) == 24 * 4
    workers = set(cluster.server.worker_pids())
    assert len([pid for pid, count in served.items() if count and pid in workers]) == 2, served

    # Aggregated: every scrape, whichever worker answers it, counts every worker's events.
    for _ in range(6):
        value = await metric_value(url, "sequencer_events_sequenced_total")
        assert value == 24 * 4 * BATCH
    assert await metric_value(url, "sequencer_pool_max_connections") == 2 * 10


async def test_grpc_reaches_both_workers(cluster: Cluster) -> None:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        head = await conn.fetchval(
            "SELECT max(sequence_number) FROM ves_events WHERE tenant_id = $1 AND store_id = $2",
            kit.TENANT,
            STREAMS[0].store_id,
        )
    finally:
        await conn.close()
    request = pb.GetSyncStateRequest(tenant_id=str(kit.TENANT), store_id=str(STREAMS[0].store_id))
    auth = (("authorization", f"ApiKey {ADMIN_KEY}"),)
    for _ in range(24):
        # A channel each: a connection each, spread over the workers' sockets.
        async with grpc.aio.insecure_channel(cluster.server.grpc_target) as channel:
            state = await rpc.SequencerStub(channel).GetSyncState(request, metadata=auth)
        assert state.head_sequence == head
    served = per_worker(
        cluster.metrics_dir(),
        "sequencer_grpc_requests_total",
        method="/stateset.sequencer.v2.Sequencer/GetSyncState",
        code="OK",
    )
    assert sum(served.values()) == 24
    assert len([count for count in served.values() if count]) == 2, served


async def test_one_commit_worker_across_the_workers(cluster: Cluster) -> None:
    streams = await stored(cluster.dsn)
    assert streams, "the ingest test leaves events"

    async def commitments() -> dict[uuid.UUID, list[tuple[int, int]]]:
        conn = await asyncpg.connect(cluster.dsn)
        try:
            rows = await conn.fetch(
                "SELECT store_id, sequence_start, sequence_end FROM ves_commitments "
                "WHERE tenant_id = $1 ORDER BY store_id, sequence_start",
                kit.TENANT,
            )
        finally:
            await conn.close()
        out: dict[uuid.UUID, list[tuple[int, int]]] = {}
        for row in rows:
            out.setdefault(row["store_id"], []).append((row["sequence_start"], row["sequence_end"]))
        return out

    async def covered() -> bool:
        made = await commitments()
        return all(
            made.get(store_id) and made[store_id][-1][1] >= len(events)
            for store_id, events in streams.items()
        )

    deadline = time.monotonic() + WAIT_S
    while not await covered():
        assert time.monotonic() < deadline, "the commit worker did not catch up"
        await asyncio.sleep(0.2)
    for store_id, ranges in (await commitments()).items():
        # One chain per stream: each commitment starts where the last ended, none twice.
        starts = [start for start, _ in ranges]
        assert starts[0] == 1
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert start == end + 1, f"stream {store_id}: overlap or gap in {ranges}"


async def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(
    cluster: Cluster,
) -> None:
    before = cluster.server.worker_pids()
    assert len(before) == 2
    load = Load(cluster, clients=4)
    async with load.running():
        await until(lambda: load.sent >= 16, "the load is flowing", WAIT_S)
        os.kill(before[0], signal.SIGKILL)
        await until(
            lambda: before[0] not in cluster.server.worker_pids()
            and cluster.server.workers_listening(),
            "the supervisor restarted the worker",
            WAIT_S,
        )
        sent = load.sent
        await until(lambda: load.sent >= sent + 16, "the load goes on after the restart", WAIT_S)
    after = cluster.server.worker_pids()
    assert len(after) == 2 and before[1] in after and before[0] not in after

    streams = await stored(cluster.dsn)
    assert_gap_free(streams)
    where = {
        str(event_id): sequence for events in streams.values() for event_id, sequence in events
    }
    for event_id, receipt in load.receipts.items():
        assert where[event_id] == receipt["sequenceNumber"], "an acknowledged event is missing"
    # A replay of what was acknowledged answers with the same receipts.
    async with httpx.AsyncClient(base_url=cluster.server.url, headers=AUTH) as http:
        for payload in load.bodies[:: max(1, len(load.bodies) // 20)]:
            response = await http.post(INGEST, json=payload)
            assert response.status_code == 200, response.text
            for receipt in response.json()["receipts"]:
                assert receipt == load.receipts[receipt["eventId"]]


async def test_sighup_restarts_every_worker_and_refuses_nothing(cluster: Cluster) -> None:
    before = cluster.server.worker_pids()
    assert len(before) == 2
    # A connection per request: a request is refused or fails only if the server does.
    load = Load(cluster, clients=4, keep_alive=False, retry=False)
    async with load.running():
        await until(lambda: load.sent >= 12, "the load is flowing", WAIT_S)
        os.kill(cluster.server.pid, signal.SIGHUP)
        await until(
            lambda: not set(before) & set(cluster.server.worker_pids())
            and cluster.server.workers_listening(),
            "both workers replaced",
            WAIT_S,
        )
        sent = load.sent
        await until(lambda: load.sent >= sent + 12, "the new workers serve", WAIT_S)
    assert load.failures == []
    assert len(cluster.server.worker_pids()) == 2
    assert_gap_free(await stored(cluster.dsn))


async def test_sigterm_stops_every_worker_and_removes_the_metrics(cluster: Cluster) -> None:
    process = cluster.server.process
    assert process is not None
    workers = cluster.server.worker_pids()
    directory = cluster.metrics_dir()
    assert len(workers) == 2
    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, WAIT_S)
    cluster.server.process = None
    assert code == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its supervisor"
    assert children(process.pid) == []
    assert not directory.exists()


def test_several_workers_on_sqlite_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    database = tmp_path / "db" / "sequencer.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stateset_sequencer",
            "serve",
            "--workers",
            "2",
            "--database-url",
            f"sqlite:///{database}",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert "2 server workers on SQLite" in message
    assert "one writer thread per process" in message
    assert "use a PostgreSQL DATABASE_URL" in message
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [("0", "0 is not in the range"), ("-1", "-1 is not in the range"), ("abc", "not a valid")],
)
def test_bad_worker_counts_are_refused(value: str, says: str) -> None:
    result = CliRunner().invoke(server_cli.app, ["serve", "--workers", value])
    assert result.exit_code == 2
    assert "--workers" in result.output and says in result.output, result.output


@pytest.mark.parametrize("taken", ["HTTP", "gRPC"])
def test_a_port_in_use_stops_the_supervisor_before_the_database(tmp_path: Path, taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        other = free_port()
        http, grpc_port = (busy, other) if taken == "HTTP" else (other, busy)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))}
        result = subprocess.run(
            [sys.executable, "-m", "stateset_sequencer", "serve", "--workers", "2"],
            cwd=tmp_path,
            # A database that is never reached: the ports are checked first.
            env={
                **env,
                "HOST": "127.0.0.1",
                "PORT": str(http),
                "GRPC_PORT": str(grpc_port),
                "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/never",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"{taken} cannot listen on 127.0.0.1:{busy}" in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []

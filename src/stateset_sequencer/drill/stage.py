"""A drill's stage: everything one drill starts (PostgreSQL clusters, the chain, sequencer
servers, the agents' fleet), the recovery steps the drills share (re-sync from the
outboxes, the final proof), and the tear-down that takes it all down in ``close``, whether
the drill passed, failed or was interrupted.

Blocking steps (``pg_ctl``, the commands) run on a thread through :meth:`Stage.blocking`, so
the agents keep writing while they happen, as they would, and each is timed into the
report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..testing.cluster import Cluster
from . import ledger
from .fleet import Fleet
from .report import FAILURE, RECOVERED, RESYNCED, VERIFIED, Clock, Report
from .services import Cli, DrillError, Outcome, Server

if TYPE_CHECKING:
    from ..testing.anvil import Anvil

T = TypeVar("T")

TENANT = uuid.UUID("00000000-0000-4000-8000-00000000d211")
DATABASE = "sequencer"
# When the failure strikes, as a share of the drill's events acknowledged.
FAILURE_AT = 0.4
# Events each lane writes once the main load is over, where a drill needs writes at a
# moment of its choosing (corruption: after the backup, and after the recovery).
EXTRA_WRITES_PER_LANE = 5
LOAD_TIMEOUT_S = 1800.0
DETECT_POLL_S = 0.05
RESYNC_CONCURRENCY = 4
# How much earlier than the loss a re-sync window opens: an outbox records an event when
# it is signed, which is before it is acknowledged by at most a push's wait.
RESYNC_MARGIN = timedelta(minutes=1)
# The leader-elected workers' lock is retried this often: what bounds their move to a
# surviving instance.
LEADER_RETRY_S = 1.0
# Commitments per stream a drill aims at. Each one is a transaction on the chain, and
# anvil anchors a few a second, so a full-size drill must not cut thousands.
COMMITMENTS_PER_STREAM = 10
ANCHOR_WAIT_S = 120.0
REPLICATION = {"wal_level": "replica", "max_wal_senders": "10", "hot_standby": "on"}
DRILL_CHAIN_ID = 31339
# anvil mines a block per transaction only: finality needs blocks on top, so the drill
# mines one this often, as a live chain would.
BLOCK_INTERVAL_S = 0.5
ANCHOR_SETTINGS = {
    "ANCHOR_WORKER_ENABLED": "true",
    "ANCHOR_INTERVAL_SECS": "1",
    "ANCHOR_BATCH_THRESHOLD": "1",
    "ANCHOR_FINALITY_CONFIRMATIONS": "2",
    "ANCHOR_FINALITY_POLL_SECS": "0.5",
    "ANCHOR_RPC_TIMEOUT_SECS": "5",
    "ANCHOR_RECEIPT_TIMEOUT_SECS": "20",
}


@dataclass(frozen=True, slots=True)
class Options:
    events: int = 200_000
    streams: int = 20
    agents: int = 8
    report: Path = Path("drill-reports")
    rate: float | None = None  # events/s over the fleet; None: as fast as acknowledged
    keep: bool = False  # keep the work folder (data directories, logs) after the drill


class Stage:
    """One drill's components and its report."""

    def __init__(self, scenario: str, variant: str | None, options: Options) -> None:
        self.options = options
        self.clock = Clock()
        self.report = Report(
            scenario,
            variant,
            {"events": options.events, "streams": options.streams, "agents": options.agents},
            self.clock,
        )
        self.root = Path(tempfile.mkdtemp(prefix=f"drill-{self.report.name}-"))
        # The clusters run as the postgres OS user, which must reach their folders.
        os.chmod(self.root, 0o755)
        self.cli = Cli(self.root, self.root / "commands.log")
        self.clusters: list[Cluster] = []
        self.servers: list[Server] = []
        self.fleet: Fleet | None = None
        self.admin_key = ""
        self.sequencer_key: bytes = b""
        # Stopped first at tear-down, before the clusters: a supervisor (Patroni) left
        # running would restart the PostgreSQL the drill is taking down.
        self.supervisors: list[Callable[[], None]] = []
        self.anvil: Anvil | None = None
        self.registry = ""
        self.chain_env: dict[str, str] = {}
        self._mining = threading.Event()
        self._load: asyncio.Task[None] | None = None

    # --- components -------------------------------------------------------------------------

    def cluster(self, name: str) -> Cluster:
        made = Cluster(self.root, name)
        self.clusters.append(made)
        return made

    def adopt(self, made: Cluster) -> Cluster:
        self.clusters.append(made)
        return made

    def server(self, name: str, dsn: str, **env: str) -> Server:
        made = Server(
            self.root,
            name,
            {
                "DATABASE_URL": dsn,
                "VES_SEQUENCER_SIGNING_KEY_FILE": str(self.key_file),
                **commit_settings(self.options),
                **self.chain_env,
                **env,
            },
        )
        self.servers.append(made)
        return made

    @property
    def key_file(self) -> Path:
        # `keygen` writes an Ed25519 seed, 0600, as agent.key: every server of the drill
        # signs its receipts with it, so receipts stay the same whichever one answered.
        return self.root / "sequencer" / "agent.key"

    def chain(self) -> None:
        """A node of its own (anvil), the registry deployed on it and a sequencer account
        authorized, and a block mined every half second; the servers started after this
        anchor, and ``verify-events --deep`` checks against it."""
        # Here, not at the top: web3 takes a second to import, and every sequencer-cli
        # command imports this module to list the drills.
        from web3 import HTTPProvider, Web3

        from ..anchoring import contract
        from ..testing.anvil import Anvil

        node = Anvil(chain_id=DRILL_CHAIN_ID)
        node.start()
        self.anvil = node
        w3 = Web3(HTTPProvider(node.url))
        owner, sender = node.accounts[0], node.accounts[1]
        self.registry = contract.deploy(w3, owner.address)
        contract.authorize(w3, self.registry, owner.address, sender.address)
        self.chain_env = {
            "L2_RPC_URL": node.url,
            "L2_CHAIN_ID": str(node.chain_id),
            "SET_REGISTRY_ADDRESS": self.registry,
            "SEQUENCER_PRIVATE_KEY": sender.private_key,
            **ANCHOR_SETTINGS,
        }
        self.cli.env = {**self.cli.env, **self.chain_env}

        def mine() -> None:
            while not self._mining.wait(BLOCK_INTERVAL_S):
                with contextlib.suppress(Exception):
                    node.rpc("evm_mine")

        threading.Thread(target=mine, name="drill-miner", daemon=True).start()

    def anchored_batches(self) -> list[bytes]:
        """The batch id of every ``BatchCommitted`` log on the chain, in chain order."""
        from web3 import HTTPProvider, Web3

        from ..anchoring import contract

        assert self.anvil is not None
        w3 = Web3(HTTPProvider(self.anvil.url))
        logs = w3.eth.get_logs(
            {
                "address": Web3.to_checksum_address(self.registry),
                "fromBlock": 0,
                "toBlock": "latest",
            }
        )
        found = []
        for log in logs:
            decoded = contract.decode_batch_committed(list(log["topics"]), bytes(log["data"]))
            if decoded is not None:
                found.append(decoded.batch_id)
        return found

    async def blocking(self, what: str, work: Callable[[], T]) -> T:
        """Run a blocking step on a thread, timed into the report's steps."""
        began = self.clock()
        try:
            return await on_thread(work, what)
        finally:
            self._timed(what, began)

    def _timed(self, what: str, began: float) -> None:
        self.report.steps.append(
            {"step": what, "at_s": round(began, 3), "seconds": round(self.clock() - began, 3)}
        )

    async def prepare(self, dsn: str) -> None:
        """Schema, an admin API key and the receipt key: what `make run` would do, by hand."""
        self.cli.env = {**self.cli.env, "VES_SEQUENCER_SIGNING_KEY_FILE": str(self.key_file)}
        public = await self.blocking(
            "keygen", lambda: self.cli.run("keygen", "--out", str(self.key_file.parent))
        )
        self.sequencer_key = bytes.fromhex(public.stdout.strip())
        await self.blocking("migrate", lambda: self.cli.run("migrate", "--database-url", dsn))
        key_path = self.root / "admin.key"
        await self.blocking(
            "api-keys create",
            lambda: self.cli.run(
                "api-keys", "create", "--admin", "--out", str(key_path), "--database-url", dsn
            ),
        )
        self.admin_key = key_path.read_text(encoding="utf-8").strip()

    async def enrol(self, admin_url: str, urls: Callable[[int], Sequence[str]]) -> Fleet:
        options = self.options
        self.fleet = Fleet(
            self.root / "agents",
            TENANT,
            options.agents,
            options.streams,
            options.events,
            self.clock,
        )
        await self.fleet.enrol(admin_url, self.admin_key, urls, self.sequencer_key)
        self.fleet.open()
        return self.fleet

    def start_load(self) -> None:
        assert self.fleet is not None
        self._load = asyncio.create_task(self.fleet.run(self.options.rate))

    async def failure_point(self) -> None:
        """Until the failure's share of the events is acknowledged."""
        assert self.fleet is not None
        await self._watch(
            self.fleet.wait_acked(int(self.options.events * FAILURE_AT), LOAD_TIMEOUT_S)
        )

    async def finish_load(self) -> None:
        assert self._load is not None
        await asyncio.wait_for(asyncio.shield(self._load), LOAD_TIMEOUT_S)

    async def _watch(self, waiting: Awaitable[None]) -> None:
        # The load task failing (a lane's bug) must end the wait, not hang it.
        assert self._load is not None
        waiter = asyncio.ensure_future(waiting)
        done, _ = await asyncio.wait({waiter, self._load}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._load.result()  # raises what killed it
            raise DrillError(
                "the agents finished before the failure point: give more --events or a lower --rate"
            )
        waiter.result()

    # --- recovery steps shared by the drills ------------------------------------------------

    async def resync(self, url: str, since: datetime | None = None) -> dict[str, int]:
        """Every agent re-sends its window (``sync-agent``) from ``since`` (default: the
        drill's start), and what an outbox holds unsent goes in through ``export-events
        --status unsynced`` and ``bulk-ingest``."""
        assert self.fleet is not None
        start = ((since or self.clock.began_at) - RESYNC_MARGIN).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        key_file = self.root / "admin.key"
        totals = {
            "resent": 0,
            "resequenced": 0,
            "replayed_same": 0,
            "newly_acked": 0,
            "bulk_ingested": 0,
        }
        mismatches: list[str] = []

        def one(home: Path) -> dict[str, int]:
            # sync-agent first: it re-sends the window in the outbox's own order, unsent
            # events included, so the lost events get their old places back before anything
            # newer takes them. What is still unsent after it goes in through bulk-ingest.
            done = self.cli.run(
                "sync-agent",
                "--home",
                str(home),
                "--start-time",
                start,
                "--end-time",
                end,
                "--json",
                ok=(0, 1),
            ).json()
            counts = {
                "resent": int(done["total"]),
                "resequenced": int(done["resequenced"]),
                "replayed_same": int(done["replayed_same"]),
                "newly_acked": int(done["newly_acked"]),
                "bulk_ingested": 0,
            }
            mismatches.extend(done["receipt_mismatches"])
            unsynced = home / "unsynced.ndjson"
            self.cli.run(
                "export-events",
                "--status",
                "unsynced",
                "--home",
                str(home),
                "--output",
                str(unsynced),
            )
            if unsynced.stat().st_size:
                self.cli.run(
                    "bulk-ingest",
                    "--file",
                    str(unsynced),
                    "--url",
                    url,
                    "--api-key-file",
                    str(key_file),
                )
                counts["bulk_ingested"] = count_lines(unsynced)
            return counts

        gate = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def limited(home: Path) -> dict[str, int]:
            async with gate:
                return await on_thread(lambda: one(home), f"re-sync {home.name}")

        began = self.clock()
        try:
            for counts in await asyncio.gather(*(limited(h) for h in self.fleet.homes)):
                for name, value in counts.items():
                    totals[name] += value
        finally:
            self._timed("re-sync from the outboxes", began)
        self.report.check(
            "no receipt mismatch on re-sync",
            not mismatches,
            f"sync-agent found {len(mismatches)} receipt(s) the database holds differently: "
            + "; ".join(mismatches[:3]),
        )
        self.report.figures["resync"] = totals
        self.report.mark(RESYNCED)
        return totals

    async def export(self, dsn: str, name: str) -> dict[uuid.UUID, ledger.Held]:
        target = self.root / f"{name}.ndjson"
        await self.blocking(
            f"export-events ({name})",
            lambda: self.cli.run(
                "export-events", "--all-streams", "--output", str(target), "--database-url", dsn
            ),
        )
        return await self.blocking(f"read export ({name})", lambda: ledger.exported(target))

    async def loss(self, dsn: str) -> tuple[dict[uuid.UUID, ledger.Held], ledger.Comparison]:
        """What the agents hold acknowledged now, and what of it the database lacks."""
        assert self.fleet is not None
        fleet = self.fleet
        held = await self.blocking("read the outboxes", lambda: ledger.acknowledged(fleet.homes))
        return held, ledger.compare(held, await self.export(dsn, "before-resync"))

    async def prove(
        self,
        dsn: str,
        url: str,
        before: tuple[dict[uuid.UUID, ledger.Held], ledger.Comparison],
        *,
        rto_since: str = FAILURE,
        rpo_zero_before_resync: bool = False,
    ) -> None:
        """The final proof, once the load is done and the agents have re-synced."""
        assert self.fleet is not None
        fleet = self.fleet
        held_before, first = before
        held = await self.blocking("read the outboxes", lambda: ledger.acknowledged(fleet.homes))
        stored = await self.export(dsn, "after-resync")
        final = ledger.compare(held, stored)
        final.renumbered = ledger.renumbered(held_before, held)
        report = self.report
        report.figures["events"] = {
            "emitted": fleet.emitted,
            "acknowledged": len(held),
            "stored": len(stored),
            "acknowledged_before_resync": len(held_before),
        }
        report.figures["rpo_events"] = {
            "before_resync": len(first.missing),
            "after_resync": len(final.missing),
        }
        report.figures["before_resync"] = first.to_json()
        report.figures["after_resync"] = final.to_json()
        report.figures["rto_s"] = report.rto(fleet.pushes, rto_since)
        marks = report.marks
        if FAILURE in marks and RECOVERED in marks:
            # The service back, before the agents re-sync and write again (the RTO's end).
            report.figures["service_back_s"] = round(marks[RECOVERED] - marks[FAILURE], 3)
        report.check(
            "every emitted event acknowledged",
            len(held) == fleet.emitted,
            f"{fleet.emitted} events emitted, {len(held)} acknowledged in the outboxes",
        )
        report.check(
            "RPO 0 after re-sync",
            not final.missing,
            f"{len(final.missing)} acknowledged event(s) missing after re-sync",
        )
        report.check(
            "no acknowledged event altered",
            not (first.altered or final.altered),
            f"{len(first.altered) + len(final.altered)} acknowledged event(s) stored altered",
        )
        report.check(
            "no receipt changed",
            not (first.receipt_changed or final.receipt_changed),
            f"{len(first.receipt_changed)} receipt(s) changed before re-sync, "
            f"{len(final.receipt_changed)} after",
        )
        if rpo_zero_before_resync:
            report.check(
                "RPO 0 before re-sync",
                not first.missing,
                f"{len(first.missing)} acknowledged event(s) lost before re-sync",
            )
        report.check(
            "RTO measured",
            report.figures["rto_s"] is not None,
            "no write was acknowledged after the recovery",
        )
        gaps = await self.blocking(
            "check-gaps",
            lambda: self.cli.run("check-gaps", "--database-url", dsn, ok=(0, 1)),
        )
        report.check(
            "check-gaps clean", gaps.returncode == 0, f"check-gaps: {gaps.stderr.strip()[-300:]}"
        )
        verified = await self.verify_deep(dsn, self.root / "verify-deep.json")
        report.check(
            "verify-events --deep clean",
            verified.returncode == 0,
            f"verify-events --deep: {verified.stderr.strip()[-300:]}",
        )
        checklist = await self.blocking(
            "doctor (the post-recovery checklist)",
            lambda: self.cli.run(
                "doctor",
                "--json",
                "--url",
                url,
                "--api-key-file",
                str(self.root / "admin.key"),
                "--database-url",
                dsn,
                ok=(0, 1),
            ),
        )
        failed = [c["name"] for c in checklist.json()["checks"] if c["status"] == "FAIL"]
        report.figures["doctor"] = {c["name"]: c["status"] for c in checklist.json()["checks"]}
        report.check("doctor passes", not failed, f"doctor failed: {', '.join(failed)}")
        report.mark(VERIFIED)

    async def verify_deep(
        self, dsn: str, report_file: Path, what: str = "verify-events --deep"
    ) -> Outcome:
        """``verify-events --all-streams --deep`` with its JSON report; exit 1 (findings)
        is an outcome to look at, not a failed step."""
        return await self.blocking(
            what,
            lambda: self.cli.run(
                "verify-events",
                "--all-streams",
                "--deep",
                "--report",
                str(report_file),
                "--database-url",
                dsn,
                ok=(0, 1),
            ),
        )

    # --- the end ---------------------------------------------------------------------------

    async def close(self) -> tuple[Path, Path]:
        """Stop everything this drill started and write its report; the work folder goes
        unless ``keep`` (the logs are copied beside the report first)."""
        if self.fleet is not None:
            self.fleet.stop()
        if self._load is not None:
            self._load.cancel()
            with contextlib.suppress(BaseException):
                await self._load
        self.cli.kill_running()
        for stop in reversed(self.supervisors):
            with contextlib.suppress(Exception):
                stop()
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.kill()
        for made in self.clusters:
            with contextlib.suppress(Exception):
                made.kill()
        self._mining.set()
        if self.anvil is not None:
            with contextlib.suppress(Exception):
                self.anvil.stop()
        if self.fleet is not None:
            self.fleet.close()
        self.report.steps.extend({"command": c} for c in self.cli.history)
        written = self.report.write(self.options.report, self.fleet.pushes if self.fleet else [])
        logs = self.options.report / f"{self.report.name}-logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in [self.root / "commands.log", *self.root.glob("server-*.log")]:
            with contextlib.suppress(OSError):
                shutil.copy(log, logs / log.name)
        for made in self.clusters:
            with contextlib.suppress(OSError):
                shutil.copy(made.log, logs / f"postgres-{made.name}.log")
        if not self.options.keep:
            for made in self.clusters:
                with contextlib.suppress(Exception):
                    made.remove()
            shutil.rmtree(self.root, ignore_errors=True)
        return written


def commit_settings(options: Options) -> dict[str, str]:
    """The commit worker's settings for a drill of this size: about
    ``COMMITMENTS_PER_STREAM`` commitments per stream by size, and by age only for a
    small drill, whose streams would otherwise wait a minute for their last range."""
    per_stream = max(1, options.events // options.streams)
    return {
        "COMMIT_MAX_EVENTS": str(min(1024, max(16, per_stream // COMMITMENTS_PER_STREAM))),
        "COMMIT_INTERVAL_SECS": str(min(60, max(1, per_stream // 200))),
        "COMMIT_POLL_INTERVAL_MS": "200",
        "LEADER_LOCK_RETRY_SECS": str(LEADER_RETRY_S),
        "ANCHOR_WORKER_ENABLED": "false",
    }


def commit_wait(options: Options) -> float:
    """How long the commit worker may take to commit every stream's last range."""
    return float(commit_settings(options)["COMMIT_INTERVAL_SECS"]) + 60.0


def anchor_wait(options: Options) -> float:
    """How long the anchor worker may take to catch up once the load is over."""
    return ANCHOR_WAIT_S + options.events / 500


async def on_thread(work: Callable[[], T], name: str) -> T:
    """``work()`` on a daemon thread of its own. Not an executor: at exit the interpreter
    joins executor threads, so a drill interrupted during a long step (a wait on a server
    it has just killed) would hang until the step timed out; a daemon thread is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, failure: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        failure: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            failure = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, failure)

    threading.Thread(target=run, name=f"drill: {name}", daemon=True).start()
    return await future


def lose(server: Server, cluster: Cluster) -> None:
    """A region lost whole, the database first: writes in flight die with it, and no
    segment switch in the meantime ships what the sequencer had just acknowledged."""
    cluster.kill()
    server.kill()


def start(*servers: Server) -> None:
    for server in servers:
        server.start()


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def multi_host(clusters: Sequence[Cluster]) -> str:
    hosts = ",".join(f"{c.host}:{c.port}" for c in clusters)
    return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"


async def refused(host: str, port: int) -> None:
    """Until nothing accepts connections on the port: how a monitor notices a dead server."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                pass
        except OSError:
            return
        await asyncio.sleep(DETECT_POLL_S)


def lane_urls(servers: Sequence[Server]) -> Callable[[int], list[str]]:
    """Lane ``i`` prefers server ``i mod n`` and fails over to the others in order."""

    def urls(index: int) -> list[str]:
        first = index % len(servers)
        return [s.url for s in [*servers[first:], *servers[:first]]]

    return urls

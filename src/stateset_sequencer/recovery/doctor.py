"""``doctor``: the post-recovery checklist as automated checks.

Each check answers PASS, FAIL or SKIP (with the reason) in one line; the command exits 0
only when nothing FAILs. The checks and what they mean:

``health``      ``GET /health`` at the service URL answers 200 (by default the ``HOST`` and
                ``PORT`` the service is configured with, :func:`service_url`).
``database``    the store opens and ``ping`` round-trips (time in ms); every migration is
                applied and unedited (a restore onto an old schema is caught here).
``counters``    every stream's counter equals its highest stored sequence.
``gaps``        no sequence number is missing below any stream's highest stored event.
``agents``      some agent with an active signing key (one ingest would accept now,
                ``sequencer.keys.judge_key``) has sent an event within
                ``--recent-hours`` (server time, ``sequenced_at``), or no events exist yet.
                One live agent is enough to pass: agents are bursty and a quiet agent is
                not a fault, but no traffic at all after a recovery means agents cannot
                reach the service or their keys are gone. The detail names the agents
                seen in the window with their last event time (found by scanning each
                stream back from its head to the window's start, at most ``SCAN_CAP``
                events per stream) and the quiet ones; a FAIL also gives the newest
                stored event's time. Agents are looked up in the tenants that have
                streams: an agent can only have events there. Cursor acknowledgements
                (``PUT /api/v1/ves/cursors/…``) in the window are listed too (at most
                ``CURSOR_CAP`` read), and count as a sign of life: a consumer that only
                reads and acknowledges has reached the service as surely as a writer.
``history``     the first and last stored event of each stream read back from the store,
                and, with an API key and a live service, through ``/api/v1/ves/events``
                (the same event ids), for up to ``API_STREAM_CAP`` streams; a stream of
                one event has it checked (and counted) once.
``commitment``  a dry run of the next commitment: the Merkle root and state root of each
                stream's next uncommitted range (at most ``COMMIT_CAP`` events, stopping
                before a missing number) computed in memory, nothing written; a stream
                with everything committed recomputes its last commitment instead and must
                match it.
``anchoring``   SKIP unless ``L2_RPC_URL`` is set; then ``eth_chainId`` must answer (and
                match ``L2_CHAIN_ID`` when that is set). With the whole anchoring
                configuration (``SET_REGISTRY_ADDRESS``, ``SEQUENCER_PRIVATE_KEY`` too), the
                registry must have code there, our sender must be an authorized sequencer
                and hold some funds; a partial configuration is a FAIL.

One broken thing gives one FAIL where that is true to the facts: checks that depend on
another (every store check on ``database``, the API half of ``history`` on ``health``)
step aside instead of failing a second time. (A gap at a stream's first uncommitted
number fails ``commitment`` too, because then nothing can be committed.)

Every network call (HTTP, JSON-RPC, each database call) is bounded by
``NETWORK_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from ..anchoring.faults import ChainError
from ..client import SequencerClient, SequencerError
from ..config import Settings
from ..runtime import open_runtime
from ..runtime.core import AnchoringConfigError, chain_config
from ..sequencer.commitments import CommitmentEngine, CommitmentError
from ..sequencer.keys import judge_key
from ..store.errors import StoreError
from ..store.factory import parse_database_url
from ..store.ports import Store
from ..store.records import CounterState, StoredEvent, StreamKey
from ..ves.codec import format_rfc3339
from ..ves.errors import VesError
from . import repair

NETWORK_TIMEOUT_S = 5.0
SCAN_PAGE = 500
SCAN_CAP = 5000
API_STREAM_CAP = 20
COMMIT_CAP = 1024
LIST_CAP = 5  # streams or agents named in one detail line before "+N more"
CURSOR_CAP = 1000  # recent cursor acknowledgements read by the agents check

Status = Literal["PASS", "FAIL", "SKIP"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def service_url(settings: Settings) -> str:
    """Where the service these settings configure answers on this machine: its
    ``HOST`` and ``PORT``, with a wildcard address probed over loopback."""
    host = settings.HOST.strip() or "127.0.0.1"
    if host in ("0.0.0.0", "*"):  # noqa: S104 - the wildcard is what is being recognised
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.PORT}"


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    """The service's settings (database, anchoring) and where its API answers (None:
    :func:`service_url` of the settings)."""

    settings: Settings
    url: str | None = None
    api_key: str | None = None
    recent_hours: float = 24.0

    @property
    def service_url(self) -> str:
        return self.url if self.url is not None else service_url(self.settings)


@dataclass(slots=True)
class Context:
    """What earlier checks learned, for the ones after them."""

    options: DoctorOptions
    health_ok: bool = False
    store: Store | None = None
    opened: AsyncExitStack = field(default_factory=AsyncExitStack)  # closes the store
    states: list[CounterState] = field(default_factory=list)
    states_read: bool = False  # counter_states answered (the later checks need its list)


class _CheckFailed(Exception):
    """A database call failed or timed out inside a check (becomes its FAIL line)."""


async def _db(call: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(call, NETWORK_TIMEOUT_S)
    except TimeoutError:
        raise _CheckFailed(f"database call timed out after {NETWORK_TIMEOUT_S:g} s") from None
    except StoreError as exc:
        raise _CheckFailed(" ".join(str(exc).split())[:300]) from None


def _name(stream: StreamKey) -> str:
    return f"{stream.tenant_id}/{stream.store_id}"


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:LIST_CAP])
    return shown + (f"; +{len(items) - LIST_CAP} more" if len(items) > LIST_CAP else "")


def _short(digest: bytes) -> str:
    return "0x" + digest.hex()[:16] + "…"


def _where(url: str) -> str:
    """scheme://host[:port] only: RPC URLs often carry an API key in the path or query."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a malformed port: name the setting, not its (secret) value
        return "L2_RPC_URL"


# --- health -----------------------------------------------------------------------------------


async def check_health(ctx: Context) -> CheckResult:
    base = ctx.options.service_url
    url = base.rstrip("/") + "/health"
    started = time.perf_counter()
    try:
        # httpx's timeout is per phase (connect, read, …); the outer one bounds the call.
        async with (
            asyncio.timeout(NETWORK_TIMEOUT_S),
            SequencerClient(base, timeout=NETWORK_TIMEOUT_S) as client,
        ):
            await client.health()
    except SequencerError as exc:
        return CheckResult("health", "FAIL", f"{url} answered {exc.status}")
    except (httpx.HTTPError, TimeoutError) as exc:
        return CheckResult("health", "FAIL", f"{url} unreachable: {type(exc).__name__} {exc}")
    ms = (time.perf_counter() - started) * 1000
    ctx.health_ok = True
    return CheckResult("health", "PASS", f"{url} answered 200 in {ms:.0f} ms")


# --- database ---------------------------------------------------------------------------------


async def check_database(ctx: Context) -> CheckResult:
    settings = ctx.options.settings
    try:
        database = parse_database_url(settings.DATABASE_URL, settings.DATA_DIR)
    except StoreError as exc:
        return CheckResult("database", "FAIL", str(exc))
    # Opening SQLite creates the file; a doctor must not invent an empty database where
    # the real one is missing.
    if database.embedded and not Path(database.target).is_file():
        return CheckResult("database", "FAIL", f"no SQLite database at {database.target}")
    name = database.backend
    try:
        runtime = await _db(ctx.opened.enter_async_context(open_runtime(settings)))
        ctx.store = runtime.store
        seconds = await _db(ctx.store.ping())
        migrations = await _db(ctx.store.migration_status())
    except _CheckFailed as exc:
        return CheckResult("database", "FAIL", f"{name}: {exc}")
    pending = [f"{m.version:03d}" for m in migrations if not m.applied]
    edited = [f"{m.version:03d}" for m in migrations if m.applied and not m.checksum_ok]
    ping = f"{name} ping {seconds * 1000:.1f} ms"
    if pending or edited:
        await ctx.opened.aclose()
        ctx.store = None
        problems = ([f"pending migrations {', '.join(pending)}"] if pending else []) + (
            [f"migrations edited after applying {', '.join(edited)}"] if edited else []
        )
        return CheckResult("database", "FAIL", f"{ping}; {'; '.join(problems)}")
    return CheckResult(
        "database", "PASS", f"{ping}; schema at {migrations[-1].version:03d}, all applied"
    )


# --- counters and gaps ------------------------------------------------------------------------


async def check_counters(ctx: Context, store: Store) -> CheckResult:
    ctx.states = await _db(store.counter_states())
    ctx.states_read = True
    bad = repair.mismatched(ctx.states)
    if bad:
        named = [
            f"{_name(s.stream)}: counter "
            f"{'missing' if s.counter is None else s.counter} != highest stored event "
            f"{s.max_sequence}"
            for s in bad
        ]
        return CheckResult(
            "counters", "FAIL", f"{len(bad)} stream(s) out of step: {_listed(named)}"
        )
    if not ctx.states:
        return CheckResult("counters", "PASS", "no streams yet")
    return CheckResult(
        "counters",
        "PASS",
        f"{len(ctx.states)} stream(s); every counter equals its highest stored event",
    )


async def check_gaps(ctx: Context, store: Store) -> CheckResult:
    gaps = await _db(store.sequence_gaps())
    if gaps:
        grouped = repair.group_gaps(gaps)
        named = [f"{_name(s)} missing {repair.format_ranges(g)}" for s, g in grouped.items()]
        return CheckResult("gaps", "FAIL", f"{len(grouped)} stream(s) with gaps: {_listed(named)}")
    return CheckResult(
        "gaps", "PASS", f"no missing sequence numbers in {len(ctx.states)} stream(s)"
    )


# --- agents -----------------------------------------------------------------------------------


async def _last_seen(
    store: Store, state: CounterState, agents: set[uuid.UUID], cutoff: datetime
) -> dict[uuid.UUID, datetime]:
    """Newest ``sequenced_at`` per agent among the stream's events from its head back to
    ``cutoff`` (at most SCAN_CAP events); agents absent from that window are left out."""
    seen: dict[uuid.UUID, datetime] = {}
    high, scanned = state.max_sequence, 0
    while high >= 1 and scanned < SCAN_CAP and len(seen) < len(agents):
        low = max(1, high - SCAN_PAGE + 1)
        page = await _db(store.read_range(state.stream, low, high))
        scanned += high - low + 1
        for event in reversed(page):
            if event.sequenced_at < cutoff:
                return seen
            agent = event.envelope.source_agent_id
            if agent in agents and agent not in seen:
                seen[agent] = event.sequenced_at
        high = low - 1
    return seen


async def check_agents(ctx: Context, store: Store) -> CheckResult:
    hours = ctx.options.recent_hours
    streams = [s for s in ctx.states if s.event_count > 0]
    if not streams:
        return CheckResult("agents", "PASS", "no events stored yet")
    now = datetime.now(UTC)
    cutoff = now - timedelta(hours=hours)
    active: dict[uuid.UUID, set[uuid.UUID]] = {}
    for tenant in sorted({s.stream.tenant_id for s in streams}):
        keys = await _db(store.list_agent_keys(tenant))
        # Active: a key ingest would accept now, by ingest's own rule.
        agents = {k.agent_id for k in keys if judge_key(k, now).ok}
        if agents:
            active[tenant] = agents
    if not active:
        return CheckResult(
            "agents",
            "FAIL",
            "events are stored but no agent has an active signing key "
            "(restore agent_signing_keys or register the agents' keys again)",
        )
    last: dict[tuple[uuid.UUID, uuid.UUID], datetime] = {}
    for state in streams:
        agents = active.get(state.stream.tenant_id, set())
        if not agents:
            continue
        for agent, at in (await _last_seen(store, state, agents, cutoff)).items():
            key = (state.stream.tenant_id, agent)
            if key not in last or at > last[key]:
                last[key] = at
    every = sorted((t, a) for t, agents in active.items() for a in agents)
    recent = [
        f"{a} (tenant {t}) at {format_rfc3339(last[(t, a)])}" for t, a in every if (t, a) in last
    ]
    stale = [f"{a} (tenant {t})" for t, a in every if (t, a) not in last]
    window = f"the last {hours:g} h"
    acked = [
        f"{c.agent_id} (tenant {c.tenant_id}, store {c.store_id}) at {c.acknowledged_sequence}, "
        f"{format_rfc3339(c.updated_at)}"
        for c in await _db(store.list_cursors(since=cutoff, limit=CURSOR_CAP))
    ]
    acks = f"cursors acknowledged in {window}: {_listed(acked)}"
    if not recent and acked:
        return CheckResult(
            "agents",
            "PASS",
            f"no event from any of {len(every)} agent(s) with an active key in {window}, "
            f"but agents are reading: {acks}",
        )
    if not recent:
        heads = [
            await _db(store.read_range(s.stream, s.max_sequence, s.max_sequence)) for s in streams
        ]
        newest = max((h[0].sequenced_at for h in heads if h), default=None)
        note = f"; newest stored event at {format_rfc3339(newest)}" if newest else ""
        return CheckResult(
            "agents",
            "FAIL",
            f"no event from any of {len(every)} agent(s) with an active key in {window}: "
            f"{_listed(stale)}{note}",
        )
    detail = f"{len(recent)} of {len(every)} agent(s) sent events in {window}: {_listed(recent)}"
    if stale:
        detail += f"; quiet: {_listed(stale)}"
    if acked:
        detail += f"; {acks}"
    return CheckResult("agents", "PASS", detail)


# --- history ----------------------------------------------------------------------------------


async def _first_event(store: Store, state: CounterState) -> StoredEvent | None:
    found = await _db(store.read_range(state.stream, 1, 1))
    if found:
        return found[0]
    # The log starts after a gap: the gap query says where, without reading the events
    # between (which may be many, or none).
    gaps = await _db(store.sequence_gaps(state.stream))
    if not gaps or gaps[0].first_missing != 1:
        return None
    first = gaps[0].last_missing + 1
    found = await _db(store.read_range(state.stream, first, first))
    return found[0] if found else None


async def _api_event(client: SequencerClient, stream: StreamKey, sequence: int) -> str | None:
    try:
        async with asyncio.timeout(NETWORK_TIMEOUT_S):
            events = await client.events(stream.tenant_id, stream.store_id, sequence, 1)
    except TimeoutError:
        raise _CheckFailed(f"API read timed out after {NETWORK_TIMEOUT_S:g} s") from None
    except SequencerError as exc:
        raise _CheckFailed(f"GET /api/v1/ves/events answered {exc.status}") from None
    return str(events[0]["event_id"]) if events else None


async def check_history(ctx: Context, store: Store) -> CheckResult:
    streams = [s for s in ctx.states if s.event_count > 0]
    if not streams:
        return CheckResult("history", "PASS", "no events stored yet")
    ends: list[tuple[StreamKey, StoredEvent, StoredEvent]] = []
    broken: list[str] = []
    for state in streams:
        first = await _first_event(store, state)
        tail = await _db(store.read_range(state.stream, state.max_sequence, state.max_sequence))
        if first is None or not tail:
            broken.append(f"{_name(state.stream)}: cannot read its first or last event")
            continue
        ends.append((state.stream, first, tail[0]))
    if broken:
        return CheckResult("history", "FAIL", _listed(broken))
    detail = f"first and last event of {len(ends)} stream(s) read from the store"
    opts = ctx.options
    if opts.api_key is None:
        return CheckResult("history", "PASS", detail + "; API not checked (no --api-key)")
    if not ctx.health_ok:
        return CheckResult("history", "PASS", detail + "; API not checked (health failed)")
    mismatched: list[str] = []
    # A stream of one event has it as both its first and its last: checked once.
    checked = [
        (stream, event)
        for stream, first, last in ends[:API_STREAM_CAP]
        for event in ((first,) if first.sequence_number == last.sequence_number else (first, last))
    ]
    try:
        async with SequencerClient(
            opts.service_url, opts.api_key, timeout=NETWORK_TIMEOUT_S
        ) as client:
            for stream, event in checked:
                got = await _api_event(client, stream, event.sequence_number)
                if got != str(event.envelope.event_id):
                    mismatched.append(
                        f"{_name(stream)} sequence {event.sequence_number}: API gave "
                        f"{got or 'nothing'}, store holds {event.envelope.event_id}"
                    )
    except httpx.HTTPError as exc:
        return CheckResult("history", "FAIL", f"API read failed: {type(exc).__name__} {exc}")
    if mismatched:
        return CheckResult("history", "FAIL", _listed(mismatched))
    return CheckResult(
        "history", "PASS", detail + f" and the same {len(checked)} event(s) through the API"
    )


# --- commitment dry run -----------------------------------------------------------------------


async def _dry_run(store: Store, state: CounterState) -> tuple[bool, str]:
    """The engine's own preview of the stream's next commitment (nothing written), or,
    with everything committed, its last commitment recomputed from the stored events."""
    stream = state.stream
    engine = CommitmentEngine(store, store)
    preview = await _db(engine.preview_next(stream, COMMIT_CAP))
    if preview is not None:
        made = preview.commitment
        if made is None:
            return False, (
                f"{_name(stream)}: sequence {preview.start} is missing, so nothing can be "
                "committed until it is restored"
            )
        return True, (
            f"{_name(stream)}: would commit {made.sequence_start}..{made.sequence_end} "
            f"({made.leaf_count} leaves, root {_short(made.merkle_root)}, "
            f"state root {_short(made.new_state_root)})"
        )
    last = await _db(store.last_commitment(stream))
    if last is None:  # counter rows without events never reach here (max_sequence 0)
        return True, f"{_name(stream)}: nothing to commit"
    where = f"{_name(stream)}: all committed; commitment {last.sequence_start}..{last.sequence_end}"
    try:
        same = await _db(engine.recomputes(last))
    except CommitmentError:
        return False, f"{where}: its events are missing"
    return same, f"{where} {'recomputes to the same roots' if same else 'does NOT recompute'}"


async def check_commitment(ctx: Context, store: Store) -> CheckResult:
    streams = [s for s in ctx.states if s.event_count > 0]
    if not streams:
        return CheckResult("commitment", "PASS", "no events stored yet; nothing to commit")
    good: list[str] = []
    bad: list[str] = []
    for state in streams:
        try:
            ok, line = await _dry_run(store, state)
        except VesError as exc:
            ok, line = False, f"{_name(state.stream)}: {exc}"
        (good if ok else bad).append(line)
    if bad:
        return CheckResult("commitment", "FAIL", _listed(bad))
    return CheckResult("commitment", "PASS", "dry run, nothing written: " + _listed(good))


# --- anchoring --------------------------------------------------------------------------------


async def check_anchoring(ctx: Context) -> CheckResult:
    url = ctx.options.settings.L2_RPC_URL
    if not url:
        return CheckResult("anchoring", "SKIP", "not configured (L2_RPC_URL is not set)")
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    try:
        async with (
            asyncio.timeout(NETWORK_TIMEOUT_S),
            httpx.AsyncClient(timeout=NETWORK_TIMEOUT_S) as client,
        ):
            response = await client.post(url, json=body)
        result = response.json().get("result") if response.status_code == 200 else None
    except (httpx.HTTPError, TimeoutError, ValueError, AttributeError) as exc:
        return CheckResult("anchoring", "FAIL", f"{_where(url)}: {type(exc).__name__} {exc}")
    if not isinstance(result, str) or not result.startswith("0x"):
        return CheckResult(
            "anchoring",
            "FAIL",
            f"{_where(url)}: eth_chainId gave no chain id (HTTP {response.status_code})",
        )
    try:
        chain = int(result, 16)
    except ValueError:
        return CheckResult("anchoring", "FAIL", f"{_where(url)}: bad chain id {result!r}")
    expected = ctx.options.settings.L2_CHAIN_ID
    if expected and expected.strip() != str(chain):
        return CheckResult(
            "anchoring", "FAIL", f"{_where(url)}: chain id {chain}, L2_CHAIN_ID says {expected}"
        )
    try:
        config = chain_config(ctx.options.settings)
    except AnchoringConfigError as exc:
        # The service refuses to start on this configuration: say so here too.
        return CheckResult("anchoring", "FAIL", f"{_where(url)}: eth_chainId {chain}, but {exc}")
    assert config is not None  # L2_RPC_URL is set, so the set is whole or refused
    from ..anchoring.chain import Chain  # the Ethereum stack, only when it is used

    registry = Chain(config)
    try:
        async with asyncio.timeout(NETWORK_TIMEOUT_S):
            probe = await registry.probe()
    except (ChainError, TimeoutError) as exc:
        return CheckResult("anchoring", "FAIL", f"{_where(url)}: {exc or 'timed out'}")
    finally:
        registry.close()
    where = f"{_where(url)}: chain {probe.chain_id}, registry {registry.registry}"
    if not probe.has_code:
        return CheckResult("anchoring", "FAIL", f"{where} has no contract code")
    if not probe.sender_authorized:
        return CheckResult(
            "anchoring",
            "FAIL",
            f"{where}: sender {registry.sender} is not an authorized sequencer "
            "(commitBatch would revert NotAuthorizedSequencer)",
        )
    if probe.balance_wei == 0:
        return CheckResult("anchoring", "FAIL", f"{where}: sender {registry.sender} has no funds")
    strict = "strict mode on" if probe.strict_mode else "strict mode OFF"
    return CheckResult(
        "anchoring", "PASS", f"{where}, sender {registry.sender} authorized, {strict}"
    )


# --- the run ----------------------------------------------------------------------------------

STORE_CHECKS = (
    ("counters", check_counters),
    ("gaps", check_gaps),
    ("agents", check_agents),
    ("history", check_history),
    ("commitment", check_commitment),
)


async def run_checks(options: DoctorOptions) -> list[CheckResult]:
    ctx = Context(options)
    results = [await check_health(ctx), await check_database(ctx)]
    store = ctx.store
    try:
        for name, check in STORE_CHECKS:
            if store is None:
                results.append(CheckResult(name, "SKIP", "database not usable (see database)"))
                continue
            if name != "counters" and not ctx.states_read:
                results.append(CheckResult(name, "SKIP", "stream list unavailable (see counters)"))
                continue
            try:
                results.append(await check(ctx, store))
            except _CheckFailed as exc:
                results.append(CheckResult(name, "FAIL", str(exc)))
    finally:
        await ctx.opened.aclose()
    results.append(await check_anchoring(ctx))
    return results

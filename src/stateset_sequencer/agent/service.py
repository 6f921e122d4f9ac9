"""What an offline-first agent does: sign into the outbox, push, pull, sync, re-sync a
window, rebase conflicts and rotate its key. The commands in ``cli/agent.py`` are thin
shells over :class:`AgentService`.

Every network step is safe to repeat. Push marks events ``pushed`` before sending and
acknowledges only receipts that verify against the sequencer's key; a lost answer leaves
them ``pushed`` and they are sent again, and the sequencer answers an exact replay with its
stored receipt. Pull stores an event only after its agent signature and its receipt have
verified. Nothing here deletes an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..client import (
    Agent,
    ReceiptMismatch,
    SequencerClient,
    SequencerError,
    TailEvent,
)
from ..client import errors as client_errors
from ..ves import envelope as ves_envelope
from ..ves.envelope import PAYLOAD_KIND_ENCRYPTED
from ..ves.errors import EnvelopeInvalid, VesError
from ..ves.signing import parse_public_key
from .config import AgentConfig
from .keystore import AgentKey, KeyStore, KeyStoreError
from .outbox import (
    UNSYNCED,
    Outbox,
    OutboxError,
    OutboxEvent,
    OutboxReason,
    PulledEvent,
    State,
    now_text,
    time_text,
)
from .pulled import KeyBook, check_pulled
from .reports import (
    UNREACHABLE,
    AgentError,
    PullReport,
    PushReport,
    WindowReport,
    describe_fault,
    parse_conflict,
    reason_code,
)

DEFAULT_BATCH = 100
MAX_BATCH = 1000
PULL_PAGE = 500
RECEIPT_FETCH_CONCURRENCY = 8
# What `agent status` reports as "the server did not tell" instead of failing.
_SERVER_FAULTS: tuple[type[Exception], ...] = (SequencerError, *UNREACHABLE)


ClientFactory = Callable[[AgentConfig, str | None], SequencerClient]


def default_client(config: AgentConfig, api_key: str | None) -> SequencerClient:
    pinned = parse_public_key(config.sequencer_public_key) if config.sequencer_public_key else None
    return SequencerClient(
        list(config.urls),
        api_key if api_key is not None else config.api_key,
        sequencer_public_key=pinned,
        allow_unsigned_receipts=config.allow_unsigned_receipts,
    )


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        outbox: Outbox,
        keystore: KeyStore,
        *,
        client_factory: ClientFactory = default_client,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.keystore = keystore
        self._client_factory = client_factory
        self._signing: Agent | None = None

    # --- signing (offline) ----------------------------------------------------------------

    def _agent(self) -> Agent:
        # Read once per service: the key store takes a lock and reads two files per look.
        if self._signing is None:
            self._signing = self._load_agent()
        return self._signing

    def _load_agent(self) -> Agent:
        key = self.keystore.current(self.config.agent_id)
        return Agent(
            signer=self.keystore.signer(self.config.agent_id, key.key_id),
            tenant_id=self.config.tenant_id,
            store_id=self.config.store_id,
            agent_id=self.config.agent_id,
            key_id=key.key_id,
            ves_version=self.config.ves_version,
        )

    def emit(
        self,
        entity_type: str,
        entity_id: str,
        event_type: str,
        payload: Any,
        *,
        base_version: int | str | None = None,
        command_id: uuid.UUID | None = None,
        rebased_from: uuid.UUID | None = None,
    ) -> OutboxEvent:
        """Sign and append; no network. ``base_version="auto"`` takes the version this
        outbox expects the entity to be at (:meth:`Outbox.next_version`)."""
        if base_version == "auto":
            base: int | None = self.outbox.next_version(
                self.config.tenant_id, self.config.store_id, entity_type, entity_id
            )
        elif isinstance(base_version, str):
            raise AgentError("bad_base_version", f"base version {base_version!r}: auto or N")
        else:
            base = base_version
        try:
            event = self._agent().event(
                entity_type,
                entity_id,
                event_type,
                payload,
                command_id=command_id,
                base_version=base,
            )
            # The checks the sequencer runs before the key lookup, now, so that nothing
            # goes into the outbox that can only be refused.
            ves_envelope.validate(event)
        except EnvelopeInvalid as exc:
            raise AgentError(exc.reason, exc.message) from None
        except VesError as exc:
            raise AgentError("invalid_event", str(exc)) from None
        return self.outbox.append(event, rebased_from=rebased_from)

    # --- push -----------------------------------------------------------------------------

    async def push(
        self, batch_size: int = DEFAULT_BATCH, *, limit: int | None = None
    ) -> PushReport:
        """Send every ``pending`` and ``pushed`` event in local order, in batches."""
        if not 1 <= batch_size <= MAX_BATCH:
            raise AgentError("bad_batch_size", f"batch size must be 1..{MAX_BATCH}")
        report = PushReport()
        async with self._client() as client:
            try:
                await self._push_all(client, batch_size, limit, report)
            except BaseException as exc:
                self._note_error(exc)
                raise
            self._note(last_push_at=now_text(), last_error=None)
            await self._advance_cursor(client, report)
        return report

    async def _push_all(
        self, client: SequencerClient, batch_size: int, limit: int | None, report: PushReport
    ) -> None:
        after = 0
        size = batch_size
        while limit is None or report.sent < limit:
            take = size if limit is None else min(size, limit - report.sent)
            batch = self.outbox.events(UNSYNCED, after=after, limit=take)
            if not batch:
                return
            try:
                await self._push_batch(client, batch, report)
            except SequencerError as exc:
                if exc.status == 413 and size > 1:
                    size = max(1, size // 2)  # the server's body limit: send less at once
                    continue
                raise self._refused(exc) from None
            after = batch[-1].local_seq

    async def _push_batch(
        self, client: SequencerClient, batch: Sequence[OutboxEvent], report: PushReport
    ) -> None:
        self.outbox.claim(batch)
        envelopes = [e.envelope for e in batch]
        try:
            outcome = await client.ingest(self.config.agent_id, envelopes)
        except ReceiptMismatch as exc:
            raise AgentError(
                "receipt_not_trusted",
                f"the sequencer's answer did not verify ({exc}); the events stay pushed and "
                "are sent again by the next push",
            ) from None
        report.batches += 1
        report.sent += len(batch)
        report.acked += self.outbox.acknowledge(outcome.receipts)
        report.replayed += outcome.replayed
        self._note(last_pushed_local_seq=batch[-1].local_seq)
        for rejection in outcome.rejections:
            self._record_rejection(rejection.event_id, rejection.reason, rejection.message)
            report.reasons[reason_code(rejection.reason)] += 1
            if parse_conflict(rejection.reason) is not None:
                report.conflicts += 1
            else:
                report.rejected += 1
        report.cursor = (
            max([report.cursor or 0] + [r.sequence_number for r in outcome.receipts])
            or report.cursor
        )

    def _record_rejection(self, event_id: uuid.UUID, reason: str, message: str) -> None:
        actual = parse_conflict(reason)
        self.outbox.reject(event_id, reason, message, actual_version=actual)
        if actual is not None:
            event = self.outbox.get(event_id)
            if event is not None:
                env = event.envelope
                self.outbox.note_server_version(
                    env.tenant_id, env.store_id, env.entity_type, env.entity_id, actual
                )

    def _refused(self, exc: SequencerError) -> AgentError:
        return AgentError(
            "push_refused",
            f"the sequencer refused the batch: {describe_fault(exc)}; the events stay in the "
            "outbox as pushed",
        )

    async def _advance_cursor(self, client: SequencerClient, report: PushReport) -> None:
        """Tell the server how far this agent has got: the highest sequence number it holds
        a verified receipt or a verified pulled event for."""
        state = self.outbox.sync_state(self.config.tenant_id, self.config.store_id)
        target = max(report.cursor or 0, state.last_pulled_sequence, self._highest_acked())
        if target <= (state.server_cursor or 0) and state.server_cursor is not None:
            report.cursor = state.server_cursor
            return
        try:
            answer = await client.put_cursor(
                self.config.tenant_id, self.config.store_id, self.config.agent_id, target
            )
        except SequencerError as exc:
            # The events are acknowledged; a cursor the key may not move is worth a
            # warning, not a failed push.
            report.cursor_error = describe_fault(exc)
            return
        cursor = int(answer.get("acknowledgedSequence", target))
        report.cursor = cursor
        self._note(server_cursor=cursor, server_head=answer.get("headSequence"))

    def _highest_acked(self) -> int:
        return self.outbox.highest_remote_sequence()

    # --- pull -----------------------------------------------------------------------------

    async def pull(self, page: int = PULL_PAGE) -> PullReport:
        """Fetch the stream from the last pulled sequence; keep each event only after its
        agent signature and its receipt verified."""
        tenant, store = self.config.tenant_id, self.config.store_id
        report = PullReport()
        start = self.outbox.sync_state(tenant, store).last_pulled_sequence + 1
        report.last_sequence = start - 1
        async with self._client() as client:
            try:
                keys = KeyBook(client, tenant)
                batch: list[dict[str, Any]] = []
                async for item in client.iter_events(tenant, store, start=start, page=page):
                    batch.append(item)
                    if len(batch) >= page:
                        await self._store_page(client, keys, batch, report)
                        batch = []
                await self._store_page(client, keys, batch, report)
                report.head = await client.head(tenant, store)
            except BaseException as exc:
                self._note_error(exc)
                raise
            self._note(last_error=None)
            push_report = PushReport()
            await self._advance_cursor(client, push_report)
        return report

    async def _store_page(
        self,
        client: SequencerClient,
        keys: KeyBook,
        items: Sequence[dict[str, Any]],
        report: PullReport,
    ) -> None:
        if not items:
            return
        checked: list[tuple[PulledEvent, OutboxEvent | None]] = []
        semaphore = asyncio.Semaphore(RECEIPT_FETCH_CONCURRENCY)

        async def one(item: dict[str, Any]) -> tuple[PulledEvent, OutboxEvent | None]:
            async with semaphore:
                return await check_pulled(client, keys, self.config, self.outbox, item)

        checked = list(await asyncio.gather(*(one(item) for item in items)))
        pulled = [p for p, _ in checked]
        self.outbox.store_pulled(self.config.tenant_id, self.config.store_id, pulled)
        for p, own in checked:
            if own is None:
                continue
            report.own += 1
            # Our own event, sent but never answered: the pull is the answer.
            if own.state in UNSYNCED and p.receipt is not None:
                report.acked_by_pull += self.outbox.acknowledge([p.receipt])
        report.pulled += len(pulled)
        report.last_sequence = max(report.last_sequence, pulled[-1].sequence_number)

    # --- sync -----------------------------------------------------------------------------

    async def sync(self, batch_size: int = DEFAULT_BATCH) -> tuple[PushReport, PullReport]:
        pushed = await self.push(batch_size)
        pulled = await self.pull()
        self._note(last_sync_at=now_text())
        return pushed, pulled

    async def watch(
        self,
        *,
        batch_size: int = DEFAULT_BATCH,
        interval_s: float = 2.0,
        max_backoff_s: float = 60.0,
        rounds: int | None = None,
        on_round: Callable[[str], None] = lambda _text: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        live: bool = False,
    ) -> int:
        """Sync again and again; while the server is unreachable, wait longer each time
        (doubling up to ``max_backoff_s``). Returns the rounds run. A fault that waiting
        cannot cure (a refused batch, an untrusted receipt) stops it. With ``live``, the
        wait between rounds ends early when the stream has news (:meth:`_pause_live`)."""
        done = 0
        delay = interval_s
        while rounds is None or done < rounds:
            done += 1
            try:
                pushed, pulled = await self.sync(batch_size)
            except UNREACHABLE as exc:
                on_round(
                    f"sequencer unreachable ({describe_fault(exc)}); next try in {delay:.0f} s"
                )
                await sleep(delay)
                delay = min(delay * 2, max_backoff_s)
                continue
            except SequencerError as exc:
                if exc.status < 500 and exc.status not in (408, 425, 429):
                    raise
                on_round(f"sequencer busy ({describe_fault(exc)}); next try in {delay:.0f} s")
                await sleep(delay)
                delay = min(delay * 2, max_backoff_s)
                continue
            delay = interval_s
            on_round(
                f"pushed {pushed.sent} (acked {pushed.acked}), pulled {pulled.pulled}, "
                f"head {pulled.head}"
            )
            if rounds is None or done < rounds:
                await (self._pause_live(interval_s, sleep) if live else sleep(interval_s))
        return done

    async def _pause_live(self, seconds: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """The pause between rounds, cut short by the first event of the sequencer's live
        stream that this outbox has not pulled. The pause stays the longest wait (events
        emitted here are pushed by a round only); a stream that is unavailable (a server
        without the route, or down) leaves the whole of it, as polling does."""
        tenant, store = self.config.tenant_id, self.config.store_id
        start = self.outbox.sync_state(tenant, store).last_pulled_sequence + 1

        async def news() -> None:
            with contextlib.suppress(Exception):
                async with self._client() as client:
                    items = client.tail(tenant, store, from_sequence=start, heartbeat_ms=0)
                    async with contextlib.aclosing(items):
                        async for item in items:
                            if isinstance(item, TailEvent):
                                return
            await asyncio.Event().wait()  # no news to be had: the sleep ends the pause

        waits = [asyncio.ensure_future(sleep(seconds)), asyncio.ensure_future(news())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            # The stream's connection is closed before the next round begins.
            await asyncio.gather(*waits, return_exceptions=True)

    async def sync_window(self, start: datetime, end: datetime) -> WindowReport:
        """``sync-agent``: send again every event recorded in ``[start, end)`` whatever its
        state (superseded ones excepted: their rebased successor stands for them)."""
        if end <= start:
            raise AgentError("bad_window", "--end-time must be after --start-time")
        states = tuple(s for s in State if s is not State.SUPERSEDED)
        window = self.outbox.events(
            states, recorded_from=time_text(start), recorded_to=time_text(end)
        )
        report = WindowReport(total=len(window))
        async with self._client() as client:
            try:
                for i in range(0, len(window), DEFAULT_BATCH):
                    await self._resend(client, window[i : i + DEFAULT_BATCH], report)
            except BaseException as exc:
                self._note_error(exc)
                raise
            await self._advance_cursor(client, PushReport())
        return report

    async def _resend(
        self, client: SequencerClient, batch: Sequence[OutboxEvent], report: WindowReport
    ) -> None:
        try:
            outcome = await client.ingest(self.config.agent_id, [e.envelope for e in batch])
        except ReceiptMismatch as exc:
            raise AgentError(
                "receipt_not_trusted", f"the sequencer's answer did not verify ({exc})"
            ) from None
        except SequencerError as exc:
            raise self._refused(exc) from None
        held = {e.event_id: e for e in batch}
        fresh_from = outcome.sequence_start if outcome.events_accepted else None
        for receipt in outcome.receipts:
            local = held[receipt.event_id]
            new = fresh_from is not None and receipt.sequence_number >= fresh_from
            if local.receipt is None:
                self.outbox.acknowledge([receipt])
                report.newly_acked += 1
            elif receipt.to_wire() == local.receipt.to_wire():
                report.replayed_same += 1
            elif new:
                self.outbox.replace_receipt(receipt)
                report.resequenced += 1
            else:
                report.receipt_mismatches.append(
                    f"{receipt.event_id}: the server holds receipt {receipt.sequence_number} "
                    f"({receipt.receipt_hash.hex()[:16]}…), this outbox "
                    f"{local.receipt.sequence_number} ({local.receipt.receipt_hash.hex()[:16]}…)"
                )
        for rejection in outcome.rejections:
            self._record_rejection(rejection.event_id, rejection.reason, rejection.message)
            report.rejected += 1

    # --- conflicts ------------------------------------------------------------------------

    def conflicts(self) -> list[OutboxEvent]:
        return self.outbox.events((State.CONFLICT,))

    def rebase(self, event_id: uuid.UUID) -> OutboxEvent:
        """Sign the refused event again on top of the entity's current version, with a new
        event id and the current key; the original is kept, marked superseded, and linked."""
        original = self.outbox.get(event_id)
        if original is None:
            raise OutboxError(OutboxReason.NOT_FOUND, f"no event {event_id} in {self.outbox.path}")
        if original.state not in (State.CONFLICT, State.REJECTED):
            raise OutboxError(
                OutboxReason.WRONG_STATE,
                f"event {event_id} is {original.state.value}; only a conflict or a rejected "
                "event can be rebased",
            )
        env = original.envelope
        if env.payload_kind == PAYLOAD_KIND_ENCRYPTED:
            raise AgentError(
                "rebase_encrypted",
                f"event {event_id} has an encrypted payload; this outbox does not hold its "
                "plaintext, so it cannot be signed again here",
            )
        base: int | str | None = "auto" if env.base_version is not None else None
        return self.emit(
            env.entity_type,
            env.entity_id,
            env.event_type,
            env.payload,
            base_version=base,
            command_id=env.command_id,
            rebased_from=event_id,
        )

    # --- keys -----------------------------------------------------------------------------

    async def register_current_key(self, admin_key: str | None) -> dict[str, Any]:
        key = self.keystore.current(self.config.agent_id)
        async with self._client(admin_key) as client:
            return await client.register_agent_key(
                self.config.tenant_id, self.config.agent_id, key.key_id, key.public_key
            )

    async def pinned_config(self) -> AgentConfig:
        """The configuration with the receipt key the sequencer publishes pinned (trust on
        first use); a key other than the one already pinned is refused."""
        config = self.config
        async with self._client() as client:
            info = await client.sequencer_info()
        published = info.get("publicKey")
        if not published:
            if not config.allow_unsigned_receipts:
                raise AgentError(
                    "receipt_key_missing",
                    "the sequencer publishes no receipt key: its receipts cannot be verified "
                    "(pass --allow-unsigned-receipts to accept that)",
                )
            return config
        try:
            key = parse_public_key(str(published)).hex()
        except VesError as exc:
            raise AgentError(
                "receipt_key_invalid", f"the sequencer publishes an unusable key: {exc}"
            ) from None
        if config.sequencer_public_key and config.sequencer_public_key != key:
            raise AgentError(
                "receipt_key_changed",
                f"the sequencer now signs receipts with {key[:16]}…, not the pinned "
                f"{config.sequencer_public_key[:16]}…; if that change is expected, run "
                "`sequencer-cli agent init … --repin`",
            )
        return config.with_values(sequencer_public_key=key)

    async def rotate_key(self, grace: timedelta, admin_key: str | None) -> AgentKey:
        """A new key id, registered before it signs anything; the keys before it retire and
        are revoked by :meth:`revoke_due` once ``grace`` has passed."""
        agent_id = self.config.agent_id
        previous = [k for k in self.keystore.keys(agent_id) if k.status == "active"]
        new = self.keystore.create(agent_id)
        try:
            async with self._client(admin_key) as client:
                await client.register_agent_key(
                    self.config.tenant_id, agent_id, new.key_id, new.public_key
                )
        except BaseException:
            # Never left as the signing key while the server does not know it.
            self.keystore.mark_revoked(agent_id, new.key_id, datetime.now(UTC))
            raise
        revoke_after = datetime.now(UTC) + grace
        for key in previous:
            self.keystore.retire(agent_id, key.key_id, revoke_after)
        self._signing = None
        return new

    async def revoke_due(self, admin_key: str | None, now: datetime | None = None) -> list[str]:
        """Revoke retiring keys whose grace has passed, unless unsynced events signed with
        them remain (revoking first would get those refused)."""
        moment = now or datetime.now(UTC)
        notes: list[str] = []
        due = self.keystore.due_for_revocation(self.config.agent_id, moment)
        if not due:
            return notes
        waiting = Counter(e.envelope.agent_key_id for e in self.outbox.events(UNSYNCED))
        async with self._client(admin_key) as client:
            for key in due:
                if waiting[key.key_id]:
                    notes.append(
                        f"key {key.key_id}: {waiting[key.key_id]} unsynced event(s) signed with "
                        "it; revoked after they are pushed"
                    )
                    continue
                try:
                    await client.revoke_agent_key(
                        self.config.tenant_id, self.config.agent_id, key.key_id
                    )
                except SequencerError as exc:
                    if exc.status != 404 and "revoked" not in exc.message.lower():
                        raise
                self.keystore.mark_revoked(self.config.agent_id, key.key_id, moment)
                notes.append(f"key {key.key_id}: revoked")
        return notes

    # --- status ---------------------------------------------------------------------------

    async def status(self, *, online: bool = True) -> dict[str, Any]:
        tenant, store = self.config.tenant_id, self.config.store_id
        counts = self.outbox.counts()
        oldest = self.outbox.oldest(UNSYNCED)
        state = self.outbox.sync_state(tenant, store)
        server: dict[str, Any] = {"reachable": None}
        if online:
            try:
                async with self._client(retries=False) as client:
                    cursor = await client.get_cursor(tenant, store, self.config.agent_id)
                server = {
                    "reachable": True,
                    "cursor": cursor.get("acknowledgedSequence"),
                    "head": cursor.get("headSequence"),
                    "lag": cursor.get("lag"),
                }
                self._note(server_head=cursor.get("headSequence"))
            except _SERVER_FAULTS as exc:
                server = {"reachable": False, "error": describe_fault(exc)}
        try:
            key: AgentKey | None = self.keystore.current(self.config.agent_id)
        except KeyStoreError:
            key = None
        age = None
        if oldest is not None:
            recorded = datetime.strptime(oldest.recorded_at, "%Y-%m-%dT%H:%M:%S.%fZ")
            age = round((datetime.now(UTC) - recorded.replace(tzinfo=UTC)).total_seconds(), 3)
        lag = server.get("lag")
        if lag is None and state.server_head is not None and state.server_cursor is not None:
            lag = max(int(state.server_head) - int(state.server_cursor), 0)
        return {
            "agent_id": str(self.config.agent_id),
            "tenant_id": str(tenant),
            "store_id": str(store),
            "outbox": str(self.outbox.path),
            "key_id": key.key_id if key else None,
            "counts": counts,
            "unsynced": counts[State.PENDING] + counts[State.PUSHED],
            "conflicts": counts[State.CONFLICT],
            "oldest_unsynced": oldest.recorded_at if oldest else None,
            "oldest_unsynced_age_s": age,
            "last_push_at": state.last_push_at,
            "last_pull_at": state.last_pull_at,
            "last_sync_at": state.last_sync_at,
            "last_pulled_sequence": state.last_pulled_sequence,
            "server_cursor": state.server_cursor,
            "lag": lag,
            "last_error": state.last_error,
            "server": server,
        }

    # --- plumbing -------------------------------------------------------------------------

    def _client(self, api_key: str | None = None, *, retries: bool = True) -> SequencerClient:
        client = self._client_factory(self.config, api_key)
        if not retries:
            client.retry = client_errors.RetryPolicy.none()
        return client

    def _note(self, **values: Any) -> None:
        self.outbox.update_sync_state(self.config.tenant_id, self.config.store_id, **values)

    def _note_error(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            # An outbox that cannot take the note has its own fault, which the caller reports.
            with contextlib.suppress(OutboxError):
                self._note(last_error=f"{now_text()} {describe_fault(exc)}")

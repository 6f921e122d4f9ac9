"""The blocking client: :class:`SequencerClient`'s methods, each run to its end on a
private event loop in a daemon thread, so that code without an event loop (scripts,
threads, a REPL) calls them directly. Each method is the async one wrapped, with its
signature kept for the type checker: nothing is written twice.

    with SyncSequencerClient("http://127.0.0.1:8080", api_key) as client:
        head = client.head(tenant_id, store_id)
        for envelope in client.iter_events(tenant_id, store_id):
            ...
        for item in client.tail(tenant_id, store_id, from_sequence=1):  # until broken out of
            ...

One client may be shared by threads; its calls run concurrently on its loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx

from .asyncclient import SequencerClient
from .core import DEFAULT_TIMEOUT_S
from .retry import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[SequencerClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncSequencerClient, P], R]:
    @functools.wraps(method)
    def call(self: SyncSequencerClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method(self._client, *args, **kwargs))

    return call


def _blocking_iter(
    method: Callable[Concatenate[SequencerClient, P], AsyncIterator[T]],
) -> Callable[Concatenate[SyncSequencerClient, P], Generator[T, None, None]]:
    # A generator, not a bare iterator: leaving a loop early closes it (and the pages).
    @functools.wraps(method)
    def call(
        self: SyncSequencerClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> Generator[T, None, None]:
        return self._iterate(method(self._client, *args, **kwargs))

    return call


async def _step(items: AsyncIterator[T]) -> tuple[T] | None:
    # The end is a value here: StopAsyncIteration is not meant to cross a future.
    try:
        return (await anext(items),)
    except StopAsyncIteration:
        return None


async def _open(*args: Any, **kwargs: Any) -> SequencerClient:
    return SequencerClient(*args, **kwargs)


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class SyncSequencerClient:
    """A blocking client with :class:`SequencerClient`'s constructor and methods. Use as
    ``with SyncSequencerClient(url, api_key) as client``, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        sequencer_public_key: bytes | None = None,
        allow_unsigned_receipts: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sequencer-client", daemon=True
        )
        self._thread.start()
        # A client dropped without close() still stops its thread.
        self._finalizer = weakref.finalize(self, _stop, self._loop)
        try:
            # Built on its loop, where every call of it will run.
            self._client = self._run(
                _open(
                    base_url,
                    api_key,
                    timeout=timeout,
                    transport=transport,
                    sequencer_public_key=sequencer_public_key,
                    allow_unsigned_receipts=allow_unsigned_receipts,
                    retry=retry,
                )
            )
        except BaseException:
            self._shut()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the loop's thread; later calls raise."""
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._shut()

    def _shut(self) -> None:
        self._closed = True
        self._finalizer()
        self._thread.join()
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, R]) -> R:
        if self._closed:
            work.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            work.close()
            raise RuntimeError("a blocking call from the client's own loop would never end")
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): the call is not left running
            raise

    def _iterate(self, items: AsyncIterator[T]) -> Generator[T, None, None]:
        try:
            while (step := self._run(_step(items))) is not None:
                yield step[0]
        finally:
            close = getattr(items, "aclose", None)
            if close is not None and not self._closed:
                self._run(close())

    # --- the async client's state ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._client.base_url

    @property
    def base_urls(self) -> tuple[str, ...]:
        return self._client.base_urls

    @property
    def retry(self) -> RetryPolicy:
        return self._client.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._client.retry = policy

    @property
    def sequencer_public_key(self) -> bytes | None:
        return self._client.sequencer_public_key

    @sequencer_public_key.setter
    def sequencer_public_key(self, key: bytes | None) -> None:
        self._client.sequencer_public_key = key

    @property
    def allow_unsigned_receipts(self) -> bool:
        return self._client.allow_unsigned_receipts

    @allow_unsigned_receipts.setter
    def allow_unsigned_receipts(self, allow: bool) -> None:
        self._client.allow_unsigned_receipts = allow

    # --- every route, as the async client has it -----------------------------------------

    request = _blocking(SequencerClient.request)

    ingest = _blocking(SequencerClient.ingest)
    record = _blocking(SequencerClient.record)
    head = _blocking(SequencerClient.head)
    events = _blocking(SequencerClient.events)
    iter_events = _blocking_iter(SequencerClient.iter_events)
    event = _blocking(SequencerClient.event)
    entity = _blocking(SequencerClient.entity)
    sequencer_info = _blocking(SequencerClient.sequencer_info)
    use_sequencer_key = _blocking(SequencerClient.use_sequencer_key)
    get_cursor = _blocking(SequencerClient.get_cursor)
    put_cursor = _blocking(SequencerClient.put_cursor)
    get_projection = _blocking(SequencerClient.get_projection)
    tail = _blocking_iter(SequencerClient.tail)

    register_agent_key = _blocking(SequencerClient.register_agent_key)
    list_agent_keys = _blocking(SequencerClient.list_agent_keys)
    revoke_agent_key = _blocking(SequencerClient.revoke_agent_key)
    get_policy = _blocking(SequencerClient.get_policy)
    put_policy = _blocking(SequencerClient.put_policy)
    mint_api_key = _blocking(SequencerClient.mint_api_key)
    create_api_key = _blocking(SequencerClient.create_api_key)
    list_api_keys = _blocking(SequencerClient.list_api_keys)
    revoke_api_key = _blocking(SequencerClient.revoke_api_key)
    get_agent = _blocking(SequencerClient.get_agent)
    create_agent_api_key = _blocking(SequencerClient.create_agent_api_key)
    list_agent_api_keys = _blocking(SequencerClient.list_agent_api_keys)
    revoke_agent_api_key = _blocking(SequencerClient.revoke_agent_api_key)
    register_agent = _blocking(SequencerClient.register_agent)

    create_commitment = _blocking(SequencerClient.create_commitment)
    list_commitments = _blocking(SequencerClient.list_commitments)
    get_commitment = _blocking(SequencerClient.get_commitment)
    get_proof = _blocking(SequencerClient.get_proof)
    get_event_proof = _blocking(SequencerClient.get_event_proof)
    verify_proof = _blocking(SequencerClient.verify_proof)
    anchor = _blocking(SequencerClient.anchor)
    commit_and_anchor = _blocking(SequencerClient.commit_and_anchor)
    verify_anchor = _blocking(SequencerClient.verify_anchor)
    verify_anchor_transaction = _blocking(SequencerClient.verify_anchor_transaction)

    list_schemas = _blocking(SequencerClient.list_schemas)
    register_schema = _blocking(SequencerClient.register_schema)
    validate_payload = _blocking(SequencerClient.validate_payload)
    get_latest_schema = _blocking(SequencerClient.get_latest_schema)
    list_event_type_schemas = _blocking(SequencerClient.list_event_type_schemas)
    get_schema = _blocking(SequencerClient.get_schema)
    set_schema_status = _blocking(SequencerClient.set_schema_status)
    delete_schema = _blocking(SequencerClient.delete_schema)
    health = _blocking(SequencerClient.health)
    ready = _blocking(SequencerClient.ready)
    health_detailed = _blocking(SequencerClient.health_detailed)
    metrics = _blocking(SequencerClient.metrics)
    openapi = _blocking(SequencerClient.openapi)

"""``sequencer-cli tail``: follow a stream live, one JSON line per event on stdout (the item
as ``GET /api/v1/ves/events`` pages hold it), over Server-Sent Events or gRPC. The client
reconnects by itself (``client/stream.py``); ``--count`` and ``--timeout`` bound the run,
for scripts and the docs, which need it to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from rich.markup import escape

from ..client import RetryPolicy, SequencerClient, StreamError, TailEvent
from .common import fail, print_json
from .remote import ApiKeyFile, ApiKeyOpt, Url, api_key_from, call

commands = typer.Typer()

# A server never reached is an error at once (the client's default tries, a few seconds);
# one that was followed and went away (a restart, a deploy) is waited for, up to an hour.
FOLLOWING = RetryPolicy(attempts=100_000, max_delay=5.0, deadline=3600.0)


class _Tally:
    events = 0
    timed_out = False


@commands.command("tail")
def tail(
    tenant: Annotated[uuid.UUID, typer.Option("--tenant", help="Tenant UUID of the stream")],
    store: Annotated[uuid.UUID, typer.Option("--store", help="Store UUID of the stream")],
    url: Url = "http://localhost:8080",
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFile = None,
    from_: Annotated[
        int | None,
        typer.Option("--from", min=1, help="First sequence wanted; default: after the head"),
    ] = None,
    use_grpc: Annotated[
        bool, typer.Option("--grpc", help="Read over gRPC StreamEvents instead of SSE")
    ] = False,
    grpc_target: Annotated[
        str | None,
        typer.Option("--grpc-target", help="host:port with --grpc; default: the URL's port + 1"),
    ] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, help="Stop after K events")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0.001, help="Stop after SECS seconds, short of --count: exit 1"
        ),
    ] = None,
    heartbeats: Annotated[
        bool, typer.Option("--heartbeats", help='Print heartbeats too, as {"heartbeat": …}')
    ] = False,
    heartbeat_ms: Annotated[
        int,
        typer.Option("--heartbeat-ms", min=0, help="Interval the server beats at; 0: never"),
    ] = 15_000,
    entity_type: Annotated[
        list[str] | None, typer.Option("--entity-type", help="Only this entity type (repeatable)")
    ] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", help="Only this event type (repeatable)")
    ] = None,
    agent: Annotated[
        list[uuid.UUID] | None, typer.Option("--agent-id", help="Only this agent (repeatable)")
    ] = None,
) -> None:
    """Print the stream's events as they are sequenced, one JSON line each, reconnecting
    after a lost connection without a gap or a repeat. Exit 0 at --count events or at
    --timeout; 1 if --timeout comes first while --count is not reached, or on a refusal."""
    if grpc_target is not None and not use_grpc:
        fail("--grpc-target goes with --grpc", 2)
    key = api_key_from(api_key, api_key_file)
    tally = _Tally()

    async def follow(client: SequencerClient) -> None:
        items = client.tail(
            tenant,
            store,
            from_sequence=from_,
            heartbeat_ms=heartbeat_ms,
            entity_types=entity_type or (),
            event_types=event_type or (),
            agents=agent or (),
            transport="grpc" if use_grpc else "sse",
            grpc_target=grpc_target,
        )
        async with contextlib.aclosing(items):
            async for item in items:
                client.retry = FOLLOWING
                if isinstance(item, TailEvent):
                    print_json(item.to_wire())
                    tally.events += 1
                elif heartbeats:
                    print_json({"heartbeat": {"position": item.position, "at": item.at}})
                elif _reader_gone():
                    return  # `| head -n 3` has what it wanted; nothing was printed to tell
                sys.stdout.flush()  # a pipe reads each line as it comes, not a block later
                if count is not None and tally.events >= count:
                    return

    async def bounded(client: SequencerClient) -> None:
        if timeout is None:
            await follow(client)
            return
        try:
            await asyncio.wait_for(follow(client), timeout)
        except TimeoutError:
            tally.timed_out = True

    started = time.monotonic()
    try:
        asyncio.run(call(url, key, _one_line_stream_errors(bounded)))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader went (`| head -n 3`): not a failure. Python would report it again
        # flushing stdout at exit, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if tally.timed_out and count is not None:
        elapsed = time.monotonic() - started
        fail(f"timed out after {elapsed:.1f} s with {tally.events} of {count} events")


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has exited, as `tail -f` asks between writes
    (a quiet stream would otherwise never write again to find out)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # 0: only errors and hang-ups are told
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fd (a test's buffer), no poll
        return False


def _one_line_stream_errors(
    work: Callable[[SequencerClient], Awaitable[None]],
) -> Callable[[SequencerClient], Awaitable[None]]:
    # `call` words the other failures: refusals, unreachable, not a sequencer.
    async def guarded(client: SequencerClient) -> None:
        try:
            await work(client)
        except StreamError as exc:
            fail(escape(f"the stream failed: {exc}"))

    return guarded

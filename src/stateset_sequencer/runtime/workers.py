"""Serving: one sequencer process (:func:`serve`), or several on one PostgreSQL database
under a supervisor (:func:`supervise`, ``serve --workers N``), so that a server uses every
core of its host.

With one worker nothing here runs but :func:`serve`, as it always has. With N the
supervisor

1. prepares once, before any worker exists (``service.prepare_service``: migrations, the
   receipt key, a bootstrap admin key minted and printed once, the sequencer's id), so N
   workers never race through a first start;
2. binds the HTTP socket itself and hands the same listening socket to every worker;
3. checks that no one else holds ``GRPC_PORT``, which every worker then binds with
   ``SO_REUSEPORT``;
4. makes a private directory for prometheus_client's multiprocess files, so that
   ``/metrics`` adds up every worker's values whichever worker answers;
5. starts N workers, each a full sequencer (``start_services``, gRPC, uvicorn), and then
   keeps them: SIGTERM or SIGINT stops them all gracefully, SIGHUP replaces them one at a
   time (the new one ready before the old one is told to stop), and a worker that dies is
   started again, with a growing pause, until it has died right at its start
   ``MAX_QUICK_DEATHS`` times in a row, when the supervisor gives up.

Why one shared HTTP socket rather than ``SO_REUSEPORT`` on it: the socket lives as long
as the supervisor, so a connection that arrives while a worker restarts waits in its
queue for another worker, where a worker's own reuseport socket would take the
connections the kernel had queued on it down with it (reset, the client sees a refusal).
The price is that the kernel does not spread the connections: whichever worker wakes
first accepts. Each worker accepts one connection per wake-up (``ACCEPT_BATCH``), so a
burst of new connections is shared out, and a busy worker, slower to wake, takes fewer.

Workers are child processes running this module (``python -m
stateset_sequencer.runtime.workers``, internal and not a command of the CLI), started
with ``subprocess`` and the two descriptors they need passed by number (``pass_fds``):
the listening socket, and a Unix socket pair to the supervisor over which the worker
receives its settings and reports ``ready`` (or why it could not start), and whose end
of file tells an orphaned worker that its supervisor is gone. A fork of the supervisor
would inherit its event loop and threads; multiprocessing's spawn would import the CLI
again and pickle the settings; an exec'd interpreter starts clean, and shows in ``ps``
for what it is. Each worker is its own process group, so a terminal's Ctrl-C reaches the
supervisor alone, which then stops the workers in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
import uvicorn

from ..config import Settings
from ..logs import configure
from ..sequencer.identity import IdentityError
from ..store.errors import StoreError
from .core import database_config
from .service import Services, StartupError, prepare_service, start_services

log = structlog.get_logger("stateset_sequencer.workers")

WORKER_MODULE = "stateset_sequencer.runtime.workers"
# uvicorn's own default backlog, which a single process listens with.
LISTEN_BACKLOG = 2048
# Connections a worker accepts per wake-up. asyncio accepts up to its server's backlog
# at once, so the first worker to wake would take a whole burst of new connections (and
# keep them, kept alive) while the others stayed idle; one at a time, a busy worker
# takes fewer and an idle one more.
ACCEPT_BATCH = 1
# A worker not ready by then is stopped and counts as having died at its start.
START_TIMEOUT_S = 120.0
# SIGTERM to exit: the drain, uvicorn's 10 s grace for requests, gRPC's 5 s, the
# services' close; a worker still running after this is killed.
STOP_TIMEOUT_S = 30.0
# How long a worker told to stop keeps serving the requests it has accepted while it
# accepts no more: a connection it accepted whose request has not been read yet would
# otherwise be closed unanswered by uvicorn's shutdown.
DRAIN_S = 1.0
# A worker that dies before it is ready, or within this long after, died at its start.
STABLE_S = 10.0
RESTART_PAUSE_S = 0.5  # after the first quick death; doubled after each further one
MAX_RESTART_PAUSE_S = 10.0
MAX_QUICK_DEATHS = 5
# How often each worker refreshes the gauges a scrape reads (health.observe): a scrape is
# answered by one worker from every worker's last values.
GAUGE_REFRESH_S = 2.0


class WorkersFailed(StartupError):
    """A worker could not start, or workers kept dying at their start: the supervisor
    stopped the others and gave up."""


def worker_count(settings: Settings) -> int:
    """How many server processes: ``SERVER_WORKERS`` (``--workers``), else one per CPU
    on a server database and 1 on the embedded one. More than one on the embedded store
    is refused (:class:`StartupError`) before anything is opened or created."""
    # The embedded store is the one whose writer is a thread of the serving process.
    embedded = database_config(settings).embedded
    wanted = settings.SERVER_WORKERS
    if wanted is None:
        return 1 if embedded else max(1, os.cpu_count() or 1)
    if wanted > 1 and embedded:
        raise StartupError(
            f"{wanted} server workers on SQLite: the embedded store has one writer thread "
            "per process and its live-stream notices do not cross processes, so one "
            "process serves it; use a PostgreSQL DATABASE_URL to serve from several "
            "processes (or --workers 1)"
        )
    return wanted


# --- one sequencer process --------------------------------------------------------------------


@dataclass(slots=True)
class WorkerLink:
    """A worker's side of its supervisor: the shared listening socket, the control socket,
    and where the workers' metrics live."""

    slot: int
    listener: socket.socket
    control: socket.socket
    metrics_dir: Path
    started: float  # the supervisor's time.monotonic() at its start

    def tell(self, line: str) -> None:
        # A short line on a local socket whose buffer the supervisor keeps drained.
        with contextlib.suppress(OSError):
            self.control.sendall(line.replace("\n", " ").encode() + b"\n")


async def serve(settings: Settings, *, link: WorkerLink | None = None) -> None:
    """One sequencer: the services, the gRPC API on ``GRPC_PORT`` (unless
    ``GRPC_DISABLED``) and the HTTP API on uvicorn, until SIGTERM or SIGINT. Alone it
    prepares the database and binds ``PORT`` itself; as a supervisor's worker (``link``)
    it finds the database prepared and serves the supervisor's socket."""
    # The app (and the anchoring routes' Ethereum libraries) only for the command that
    # serves it: every other command starts a second sooner.
    from ..api.grpc import GrpcServer
    from ..api.http.app import create_app
    from ..api.http.connections import protocol_class

    configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    watch = None if link is None else asyncio.create_task(_watch_supervisor(link))
    try:
        services = await start_services(settings, announce=link is None, prepared=link is not None)
    except BaseException:
        await _cancel(watch)
        raise
    grpc_server: GrpcServer | None = None
    refresh: asyncio.Task[None] | None = None
    try:
        if not settings.GRPC_DISABLED:
            # Before HTTP: a gRPC port that cannot be bound stops the start, named.
            # A supervisor's workers share the port it checked no one else holds.
            grpc_server = GrpcServer(services, reuse_port=link is not None)
            port = await grpc_server.start()
            structlog.get_logger("stateset_sequencer.grpc").info(
                "grpc listening", host=settings.HOST, port=port
            )
        config = uvicorn.Config(
            create_app(services),
            host=settings.HOST,
            port=settings.PORT,
            log_config=None,
            access_log=False,  # our middleware writes one structured line per request
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            # Our HTTP/1.1 protocol: uvicorn's, with a deadline for request heads and a
            # connection cap (api/http/connections.py); it also sets the keep-alive timeout.
            http=protocol_class(
                header_timeout=settings.HTTP_HEADER_TIMEOUT_SECS,
                keepalive_timeout=settings.HTTP_KEEPALIVE_TIMEOUT_SECS,
                max_connections=settings.HTTP_MAX_CONNECTIONS,
            ),
        )
        if link is None:
            with _signals_after_shutdown():
                await uvicorn.Server(config).serve()
        else:
            # asyncio's accept batch is the backlog it listens with; the socket's queue
            # is set back to the full backlog once this worker serves (_WorkerServer).
            config.backlog = ACCEPT_BATCH
            services.metrics.share(link.metrics_dir, link.started)
            refresh = asyncio.create_task(_refresh_gauges(services))
            with _signals_after_shutdown():
                await _WorkerServer(config, link).serve(sockets=[link.listener])
    finally:
        await _cancel(refresh)
        await _cancel(watch)
        if grpc_server is not None:
            # Streams end first, told where to resume; calls in flight get a grace.
            await grpc_server.stop()
        await services.close()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def _signals_after_shutdown() -> Iterator[None]:
    """uvicorn stops gracefully on SIGTERM or SIGINT and then raises the same signal again
    "for the expected behaviour": with the default handlers that kills the process (or
    cancels the main task) before :meth:`Services.close` has run, and what the services
    still hold (the counted auth refusals) would be lost. The re-raised signal lands
    here instead and is ignored: the process closes its services and exits."""
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _WorkerServer(uvicorn.Server):
    """uvicorn as a supervisor's worker: it says ``ready`` once it accepts, and on SIGTERM
    first stops accepting for ``DRAIN_S`` while it finishes what it has (the listening
    socket stays open in the supervisor and the other workers, so what arrives meanwhile
    waits for them), then shuts down as uvicorn does."""

    def __init__(self, config: uvicorn.Config, link: WorkerLink) -> None:
        super().__init__(config)
        self._link = link
        self._drain_until: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._link.listener.listen(LISTEN_BACKLOG)
            self._link.tell("ready")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_until is None and not self.should_exit:
            self._drain_until = time.monotonic() + DRAIN_S
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None:
            for listening in getattr(self, "servers", ()):
                listening.close()  # this process's copy of the socket; again is a no-op
            if time.monotonic() >= self._drain_until:
                return True
        return await super().on_tick(counter)


async def _watch_supervisor(link: WorkerLink) -> None:
    """The control socket's end of file: the supervisor is gone (killed, say), and an
    orphaned worker stops as if it had been told to."""
    loop = asyncio.get_running_loop()
    while await loop.sock_recv(link.control, 256):
        pass
    log.warning("supervisor gone: this worker stops", slot=link.slot)
    os.kill(os.getpid(), signal.SIGTERM)


async def _refresh_gauges(services: Services) -> None:
    from ..api.http.health import observe

    while True:
        observe(services)
        await asyncio.sleep(GAUGE_REFRESH_S)


def worker_main(argv: list[str] | None = None) -> None:
    """A worker's entry point (``python -m stateset_sequencer.runtime.workers``), for the
    supervisor only."""
    parser = argparse.ArgumentParser(
        prog=WORKER_MODULE, description="One worker of `serve --workers`; its supervisor runs it."
    )
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    hello = json.loads(_read_line(control))
    control.setblocking(False)
    link = WorkerLink(
        slot=int(hello["slot"]),
        listener=socket.socket(fileno=args.listen_fd),
        control=control,
        metrics_dir=Path(hello["metrics_dir"]),
        started=float(hello["started"]),
    )
    # Every line a worker logs says which one.
    structlog.contextvars.bind_contextvars(worker=link.slot)
    problem: str | None = None
    try:
        asyncio.run(serve(Settings.model_validate(hello["settings"]), link=link))
    except (StartupError, IdentityError) as exc:
        problem = str(exc)
    except StoreError as exc:
        problem = f"database: {exc}"
    except KeyboardInterrupt:
        pass
    if problem is not None:
        log.error("worker could not start", slot=link.slot, error=problem)
        link.tell(f"error {problem}")
        sys.exit(1)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise SystemExit("the supervisor closed the control socket before the settings")
        data += chunk
    return data


# --- the supervisor ---------------------------------------------------------------------------


def supervise(settings: Settings, count: int) -> None:
    """Serve with ``count`` worker processes until SIGTERM or SIGINT (module docstring).
    Raises :class:`StartupError` (or a store's fault) when the start fails, and
    :class:`WorkersFailed` when workers cannot be kept running."""
    asyncio.run(_supervise(settings, count))


async def _supervise(settings: Settings, count: int) -> None:
    started = time.monotonic()
    configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    # The ports first: one in use stops the start before the database is touched.
    listener = _bind_http(settings.HOST, settings.PORT)
    try:
        grpc_port = None if settings.GRPC_DISABLED else _claim_grpc_port(settings)
        await prepare_service(settings)
        if settings.RATE_LIMIT_BACKEND.strip().lower() == "memory":
            log.warning(
                f"RATE_LIMIT_BACKEND=memory with {count} workers: each worker counts only "
                "the requests it serves, so a tenant or key may get up to that many times "
                "its budget; RATE_LIMIT_BACKEND=postgres makes the budgets exact across "
                "workers (docs/RATE_LIMITS.md)",
                workers=count,
            )
        # Fixed ports for every worker, should PORT 0 have asked for any free one.
        worker_settings = settings.model_copy(
            update={
                "PORT": listener.getsockname()[1],
                "GRPC_PORT": grpc_port or settings.GRPC_PORT,
            }
        )
        # Private (0700, as mkdtemp makes it): the files hold every metric's values.
        metrics_dir = Path(tempfile.mkdtemp(prefix="stateset-sequencer-metrics-"))
        try:
            supervisor = Supervisor(
                worker_settings, count, listener, metrics_dir=metrics_dir, started=started
            )
            await supervisor.run()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    finally:
        listener.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_http(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on, bound as uvicorn binds its own."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"HTTP cannot listen on {host}:{port} ({exc.strerror or exc}): set PORT to a free port"
        ) from None
    return sock


def _claim_grpc_port(settings: Settings) -> int:
    """The gRPC port every worker binds, checked free: the workers bind it with
    ``SO_REUSEPORT``, which would let them share it with another server of ours rather
    than fail, so a port anybody listens on is refused here, before any worker starts.
    Port 0 picks a free one, the same for every worker."""
    host, wanted = settings.HOST, settings.grpc_port
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        # Our own connections in TIME_WAIT from an earlier run do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, wanted))
        except OSError as exc:
            raise StartupError(
                f"gRPC cannot listen on {host}:{wanted} ({exc.strerror or exc}): set "
                "GRPC_PORT to a free port, or GRPC_DISABLED=true"
            ) from None
        port: int = probe.getsockname()[1]
        return port


@dataclass(eq=False)
class _Worker:
    """One worker process as the supervisor sees it."""

    slot: int
    process: asyncio.subprocess.Process
    control: socket.socket
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ready_at: float | None = None
    error: str | None = None  # why it could not start, in its own words
    retiring: bool = False  # told to stop: its exit is expected
    exited: asyncio.Task[int] = field(init=False)
    listening: asyncio.Task[None] = field(init=False)  # ends at the control socket's EOF

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Supervisor:
    """Keeps ``count`` workers serving (module docstring); :meth:`run` returns once they
    have all been stopped after SIGTERM or SIGINT."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        listener: socket.socket,
        *,
        metrics_dir: Path,
        started: float,
    ) -> None:
        self.count = count
        self._listener = listener
        self._metrics_dir = metrics_dir
        self._hello = {
            "settings": settings.model_dump(mode="json"),
            "metrics_dir": str(metrics_dir),
            "started": started,
        }
        # prometheus_client decides its mode when it is imported: in the environment the
        # worker starts with. The settings travel over the control socket instead.
        self._env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        self._slots: list[_Worker | None] = [None] * count
        self._locks = [asyncio.Lock() for _ in range(count)]
        self._quick_deaths = [0] * count
        self._live: set[_Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._rolling: asyncio.Task[None] | None = None
        self._roll_again = False

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._slots if w is not None]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._start_all()
            log.info(
                "workers ready",
                workers=self.count,
                pids=self.pids,
                address=f"{self._listener.getsockname()[0]}:{self._listener.getsockname()[1]}",
            )
            await self._keep()
        finally:
            # Still handled meanwhile: a second signal does not cut the stop short.
            await self._stop_all()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stop.set()
        self._events.put_nowait(("signal", sig))

    async def _start_all(self) -> None:
        workers = [await self._spawn(slot) for slot in range(self.count)]
        self._slots = list(workers)
        ready = await asyncio.gather(*(self._await_ready(w) for w in workers))
        if self._stop.is_set():
            return
        for worker, ok in zip(workers, ready, strict=True):
            if not ok:
                raise WorkersFailed(await self._why_not_ready(worker))

    async def _keep(self) -> None:
        while not self._stop.is_set():
            kind, item = await self._events.get()
            if kind == "signal":
                if item == signal.SIGHUP:
                    self._roll()
                else:
                    log.info("stopping workers", signal=signal.Signals(item).name)
            elif kind == "exit":
                worker: _Worker = item
                if not worker.retiring and self._slots[worker.slot] is worker:
                    self._background(self._revive(worker))
            elif kind == "give up":
                raise WorkersFailed(str(item))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one worker ---------------------------------------------------------------------------

    async def _spawn(self, slot: int) -> _Worker:
        mine, theirs = socket.socketpair()
        try:
            # Sent before the worker runs, small enough for the socket's buffer.
            mine.sendall(json.dumps({**self._hello, "slot": slot}).encode() + b"\n")
            mine.setblocking(False)
            listen_fd, control_fd = self._listener.fileno(), theirs.fileno()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                "--listen-fd",
                str(listen_fd),
                "--control-fd",
                str(control_fd),
                pass_fds=(listen_fd, control_fd),
                env=self._env,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        worker = _Worker(slot, process, mine)
        self._live.add(worker)
        worker.exited = asyncio.create_task(self._exit_of(worker))
        worker.listening = asyncio.create_task(self._listen(worker))
        log.info("worker started", slot=slot, pid=process.pid)
        return worker

    async def _listen(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        pending = b""
        try:
            while chunk := await loop.sock_recv(worker.control, 4096):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line == b"ready":
                        worker.ready_at = time.monotonic()
                        worker.ready.set()
                    elif line.startswith(b"error "):
                        worker.error = line[6:].decode("utf-8", "replace")
        except OSError:
            pass
        finally:
            # Closed only once the worker has closed its end (it exited): closing it
            # earlier would tell a running worker that its supervisor is gone.
            worker.control.close()

    async def _exit_of(self, worker: _Worker) -> int:
        from prometheus_client import multiprocess

        code = await worker.process.wait()
        self._live.discard(worker)
        # Its live gauges leave the sums; its counters stay in them.
        multiprocess.mark_process_dead(worker.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
        if not (worker.retiring or self._stop.is_set()):
            self._events.put_nowait(("exit", worker))
        return code

    async def _await_ready(self, worker: _Worker) -> bool:
        """Whether the worker says it is ready before it exits, ``START_TIMEOUT_S`` runs
        out or the supervisor is told to stop; one that is late is stopped."""
        waits = {
            asyncio.ensure_future(worker.ready.wait()),
            asyncio.ensure_future(self._stop.wait()),
        }
        try:
            await asyncio.wait(
                {*waits, worker.exited},
                timeout=START_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for wait in waits:
                wait.cancel()
        if worker.ready.is_set():
            return True
        if not worker.exited.done() and not self._stop.is_set():
            log.error("worker not ready in time: stopping it", slot=worker.slot, pid=worker.pid)
            worker.error = f"not ready within {START_TIMEOUT_S:g} s"
            # Not retired: its exit is reported as a death at its start.
            await self._terminate(worker)
        return False

    async def _why_not_ready(self, worker: _Worker) -> str:
        code = await worker.exited
        await worker.listening  # its last words, if any, come before the end of file
        said = worker.error or f"{_exit_text(code)}; its log is above"
        return f"worker {worker.slot} could not start: {said}"

    async def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        await self._terminate(worker)

    async def _terminate(self, worker: _Worker) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``."""
        worker.send(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(worker.exited), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("worker did not stop in time: killed", slot=worker.slot, pid=worker.pid)
            worker.send(signal.SIGKILL)
            await worker.exited

    async def _revive(self, dead: _Worker) -> None:
        slot = dead.slot
        code = dead.exited.result()
        quick = dead.ready_at is None or time.monotonic() - dead.ready_at < STABLE_S
        deaths = self._quick_deaths[slot] = self._quick_deaths[slot] + 1 if quick else 0
        log.error(
            "worker died",
            slot=slot,
            pid=dead.pid,
            exit=_exit_text(code),
            error=dead.error,
            at_start=quick,
        )
        if deaths >= MAX_QUICK_DEATHS:
            self._events.put_nowait(
                (
                    "give up",
                    f"worker {slot} died at its start {deaths} times in a row (last: "
                    f"{dead.error or _exit_text(code)}); the supervisor gives up",
                )
            )
            return
        if deaths:
            await asyncio.sleep(min(MAX_RESTART_PAUSE_S, RESTART_PAUSE_S * 2 ** (deaths - 1)))
        async with self._locks[slot]:
            if self._slots[slot] is not dead or self._stop.is_set():
                return  # replaced meanwhile by a rolling restart, or stopping
            worker = await self._spawn(slot)
            self._slots[slot] = worker
            if await self._await_ready(worker):
                log.info("worker restarted", slot=slot, pid=worker.pid, replaces=dead.pid)

    # --- all of them --------------------------------------------------------------------------

    def _roll(self) -> None:
        if self._rolling is not None and not self._rolling.done():
            self._roll_again = True
            log.info("rolling restart under way: another round follows it")
            return
        self._rolling = asyncio.create_task(self._rolling_restart())

    async def _rolling_restart(self) -> None:
        while True:
            self._roll_again = False
            log.info("rolling restart", workers=self.count)
            for slot in range(self.count):
                async with self._locks[slot]:
                    old = self._slots[slot]
                    new = await self._spawn(slot)
                    if not await self._await_ready(new):
                        new.retiring = True
                        if not self._stop.is_set():
                            log.error(
                                "rolling restart abandoned: a new worker did not start; "
                                "the running workers are kept",
                                slot=slot,
                                error=new.error or _exit_text(await new.exited),
                            )
                        return
                    self._slots[slot] = new
                    if old is not None:
                        await self._retire(old)
                    log.info(
                        "worker replaced",
                        slot=slot,
                        pid=new.pid,
                        replaces=None if old is None else old.pid,
                    )
            log.info("rolling restart done", pids=self.pids)
            if not self._roll_again:
                return

    async def _stop_all(self) -> None:
        self._stop.set()
        tasks = [t for t in (self._rolling, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # New connections are refused from here on, not queued for nobody.
        self._listener.close()
        workers = list(self._live)
        for worker in workers:
            worker.retiring = True
            worker.send(signal.SIGTERM)
        if workers:
            _, late = await asyncio.wait([w.exited for w in workers], timeout=STOP_TIMEOUT_S)
            for worker in [w for w in workers if w.exited in late]:
                log.error("worker did not stop in time: killed", slot=worker.slot, pid=worker.pid)
                worker.send(signal.SIGKILL)
            await asyncio.gather(*(w.exited for w in workers), return_exceptions=True)
            await asyncio.gather(*(w.listening for w in workers), return_exceptions=True)
        log.info("workers stopped")


if __name__ == "__main__":
    # Run from the module imported under its own name, so that no second copy of this
    # module's classes (this __main__) is the one running.
    from stateset_sequencer.runtime.workers import worker_main as _worker_main

    _worker_main()

"""Prometheus metrics, named as the reference names them (``sequencer_…``).

Each app owns its registry, so two apps in one process (tests) never share counters.
Labels use the route template, never the raw path, to keep cardinality bounded.

Under ``serve --workers N`` (runtime/workers.py) every worker process keeps its values in
prometheus_client's multiprocess files, in the private directory its supervisor made
(``PROMETHEUS_MULTIPROC_DIR``, set before the worker started), and :meth:`Metrics.share`
makes ``/metrics`` render them all, whichever worker answers: counters and histograms
summed over every worker that ever ran (a restarted worker's counts stay), each gauge
by its ``multiprocess_mode`` over the live ones. A single process never calls it and
renders its own registry as before.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

# The reference exposes no ``*_created`` series; they would double the output for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.monotonic()
        self._shared: Path | None = None  # the workers' directory, once shared
        r = self.registry
        # The gauges' multiprocess modes say how the live workers' values combine; a
        # single process ignores them. Uptime counts from the supervisor's start, which
        # every worker reports alike: the largest is the freshest.
        self.uptime = Gauge(
            "sequencer_uptime_seconds",
            "Seconds since start",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.http_requests = Counter(
            "sequencer_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "path", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "sequencer_http_request_latency_seconds",
            "HTTP request latency",
            ["method", "path", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_latency = Histogram(
            "sequencer_ingest_latency_seconds",
            "Ingest handler latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_per_batch = Histogram(
            "sequencer_request_events_per_batch",
            "Events per ingest request",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.events_received = Counter(
            "sequencer_ves_events_received", "VES events received", registry=r
        )
        self.events_sequenced = Counter(
            "sequencer_events_sequenced", "Events accepted and sequenced", registry=r
        )
        self.events_replayed = Counter(
            "sequencer_events_replayed",
            "Exact replays answered with the stored receipt",
            registry=r,
        )
        self.events_rejected = Counter(
            "sequencer_events_rejected",
            "Events rejected, by reason code",
            ["reason"],
            registry=r,
        )
        self.batches_rejected = Counter(
            "sequencer_batches_rejected",
            "Whole requests refused, by reason",
            ["reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            "sequencer_auth_failures", "Refused credentials, by code", ["code"], registry=r
        )
        self.db_errors = Counter("sequencer_errors_database", "Database errors", registry=r)
        # Exposed as sequencer_agent_registration_total, the reference's name.
        self.agent_registrations = Counter(
            "sequencer_agent_registration",
            "Public self-registrations by outcome (success, error) and reason code",
            ["outcome", "reason"],
            registry=r,
        )
        # Every worker has a pool of its own: the server's connections are their sum,
        # and its utilization that of the busiest pool.
        self.pool_active = Gauge(
            "sequencer_pool_active_connections",
            "Connections in use",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_idle = Gauge(
            "sequencer_pool_idle_connections",
            "Idle connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_total = Gauge(
            "sequencer_pool_total_connections",
            "Open connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "sequencer_pool_max_connections",
            "Connection limit",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_utilization = Gauge(
            "sequencer_pool_utilization",
            "Connections in use, percent of the limit",
            registry=r,
            multiprocess_mode="livemax",
        )

        self.stream_subscribers = Gauge(
            "sequencer_stream_subscribers",
            "Live subscriptions served by this process (SSE and gRPC)",
            registry=r,
            multiprocess_mode="livesum",
        )
        # 0 as soon as one worker's notifications are cut: its subscribers wait on rechecks.
        self.stream_feed_connected = Gauge(
            "sequencer_stream_feed_connected",
            "1 while the database's head notifications reach this process",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.stream_cutoffs = Counter(
            "sequencer_stream_cutoffs",
            "Subscribers cut off for taking nothing within STREAM_STALL_TIMEOUT_MS",
            ["transport"],
            registry=r,
        )

    def set_streams(self, subscribers: int, feed_connected: bool) -> None:
        self.stream_subscribers.set(subscribers)
        self.stream_feed_connected.set(1 if feed_connected else 0)

    def set_pool(self, active: int, idle: int, total: int, maximum: int) -> None:
        self.pool_active.set(active)
        self.pool_idle.set(idle)
        self.pool_total.set(total)
        self.pool_max.set(maximum)
        self.pool_utilization.set(int(100 * active / maximum) if maximum else 0)

    def share(self, directory: Path, started: float) -> None:
        """Render every worker's values from ``directory`` (this process's own included)
        and count uptime from ``started``, the supervisor's ``time.monotonic()`` (one
        clock for every process of a host)."""
        if values.ValueClass is values.MutexValue:
            # The mode is chosen when prometheus_client is imported: too late to change.
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR was not set when this process started")
        self._shared = directory
        self.started = started

    def tick(self) -> None:
        self.uptime.set(int(time.monotonic() - self.started))

    def render(self) -> bytes:
        self.tick()
        if self._shared is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self._shared))  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def rejection_label(reason: str) -> str:
    """``agent_key_invalid: Agent key has expired`` → ``agent_key_invalid``: the stable
    code, not the message, so the label set stays small."""
    return reason.split(":", 1)[0].strip() or "unknown"

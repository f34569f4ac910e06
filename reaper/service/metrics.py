"""Prometheus series for reaper (docs/systemd.md), kept on an injected CollectorRegistry.

Names start `reaper_`, use base units (seconds) and `_total` for counters. Labels are limited
to `backend`, `policy`, `notifier`, `outcome` and `cause`: every one comes from config or from a
closed set,
so cardinality is bounded by the config; job ids never become labels. The sweep hands one
`SweepStats` per backend to `Metrics.record_backend_sweep`; the daemon serves the registry on a
loopback port (`serve`), the one-shot mode writes it for node_exporter (`write_textfile`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server, write_to_textfile

from reaper import __version__
from reaper.engine.guardlog import SweepStats

DEFAULT_LISTEN = "127.0.0.1:9464"
LOOPBACK = "127.0.0.1"
# From a quiet backend (well under a second) to a sweep that pages through 100k jobs.
SWEEP_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
TEXTFILE_MODE = 0o644  # node_exporter runs as another user; the unit's UMask=0077 would hide it


@dataclass(frozen=True)
class BackendSweepStats:
    """A plain `SweepStats`, for callers (and tests) that have no report object of their own."""

    backend: str
    active: int = 0
    matched: Mapping[str, int] = field(default_factory=dict)
    outcomes: Mapping[str, int] = field(default_factory=dict)
    skipped: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    followups: Mapping[str, int] = field(default_factory=dict)


class Metrics:
    """reaper's series on `registry`. Thread-safe (prometheus_client's metrics are)."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock
        self._define_sweep_series(registry)
        self._define_reload_series(registry)
        self._define_notice_series(registry)
        Info("reaper_build", "reaper build information", registry=registry).info(
            {"version": __version__}
        )

    def _define_sweep_series(self, registry: CollectorRegistry) -> None:
        by_backend = ["backend"]
        self.jobs_seen = Counter(
            "reaper_jobs_seen",
            "Active jobs listed, summed over sweeps",
            by_backend,
            registry=registry,
        )
        self.active_jobs = Gauge(
            "reaper_active_jobs",
            "Active jobs listed by the last sweep",
            by_backend,
            registry=registry,
        )
        self.jobs_matched = Counter(
            "reaper_jobs_matched", "Jobs a policy matched", ["backend", "policy"], registry=registry
        )
        self.cancels = Counter(
            "reaper_cancels",
            "Cancel decisions carried out, by outcome",
            ["backend", "outcome"],
            registry=registry,
        )
        self.skipped = Counter(
            "reaper_jobs_skipped",
            "Matched jobs not cancelled, by cause",
            ["backend", "cause"],
            registry=registry,
        )
        self.cancels_confirmed = Counter(
            "reaper_cancels_confirmed",
            "Cancelled jobs seen ended at a later sweep (a `confirmed` audit record)",
            by_backend,
            registry=registry,
        )
        self.cancels_stuck = Counter(
            "reaper_cancels_stuck",
            "Cancelled jobs still active after limits.confirm_within (a `stuck` audit record)",
            by_backend,
            registry=registry,
        )
        self.backend_errors = Counter(
            "reaper_backend_errors",
            "Sweeps in which a backend failed",
            by_backend,
            registry=registry,
        )
        self.sweep_duration = Histogram(
            "reaper_sweep_duration_seconds",
            "Wall time of one backend's sweep",
            by_backend,
            buckets=SWEEP_DURATION_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            "reaper_last_successful_sweep_timestamp_seconds",
            "Unix time the last sweep without a backend error ended",
            by_backend,
            registry=registry,
        )

    def _define_notice_series(self, registry: CollectorRegistry) -> None:
        self.notices = Counter(
            "reaper_notices",
            "Notices (warned, cancelled, ... messages) handed to a notifier, by outcome "
            "(sent, failed: after every retry, audited notify_failed)",
            ["notifier", "outcome"],
            registry=registry,
        )

    def record_notice(self, notifier: str, delivered: bool) -> None:
        """Count one notice's final outcome (called from the notifier thread)."""
        self.notices.labels(notifier=notifier, outcome="sent" if delivered else "failed").inc()

    def _define_reload_series(self, registry: CollectorRegistry) -> None:
        self.policies_loaded = Gauge(
            "reaper_policies_loaded", "Policies in the active set", registry=registry
        )
        self.reloads = Counter("reaper_reloads", "Reloads attempted (SIGHUP)", registry=registry)
        self.reload_failures = Counter(
            "reaper_reload_failures",
            "Reloads refused; the previous policy set stayed active",
            registry=registry,
        )
        self.last_reload_ok = Gauge(
            "reaper_config_last_reload_successful",
            "1 if the last reload succeeded, else 0",
            registry=registry,
        )
        self.last_reload_ok.set(1)
        self.schedule_interval = Gauge(
            "reaper_schedule_interval_seconds",
            "Daemon: the longest time between two scheduled sweeps of a backend",
            registry=registry,
        )

    def declare_backends(self, backends: Iterable[str]) -> None:
        """Create every per-backend series at zero so rates and alerts work before the first
        sweep (and a backend that never succeeds shows up as 0, not as absent)."""
        for backend in backends:
            for metric in (self.jobs_seen, self.backend_errors, self.sweep_duration,
                           self.cancels_confirmed, self.cancels_stuck):  # fmt: skip
                metric.labels(backend=backend)
            self.last_success.labels(backend=backend)

    def record_backend_sweep(self, stats: SweepStats, finished_at: float | None = None) -> None:
        """Count one backend's sweep. `finished_at` (Unix seconds) defaults to the clock."""
        backend = stats.backend
        self.jobs_seen.labels(backend=backend).inc(stats.active)
        self.active_jobs.labels(backend=backend).set(stats.active)
        self.sweep_duration.labels(backend=backend).observe(stats.duration_s)
        add_counts(self.jobs_matched, stats.matched, backend, "policy")
        add_counts(self.cancels, stats.outcomes, backend, "outcome")
        add_counts(self.skipped, stats.skipped, backend, "cause")
        self.cancels_confirmed.labels(backend=backend).inc(stats.followups.get("confirmed", 0))
        self.cancels_stuck.labels(backend=backend).inc(stats.followups.get("stuck", 0))
        errors = self.backend_errors.labels(backend=backend)  # exists at 0 before the first error
        if stats.error is not None:
            errors.inc()
        else:
            done = self._clock() if finished_at is None else finished_at
            self.last_success.labels(backend=backend).set(done)

    def record_reload(self, ok: bool, policies: int) -> None:
        """Count a reload; `policies` is the size of the set active afterwards (the old set
        when the reload failed)."""
        self.reloads.inc()
        if not ok:
            self.reload_failures.inc()
        self.last_reload_ok.set(1 if ok else 0)
        self.policies_loaded.set(policies)

    def set_schedule_interval(self, seconds: float) -> None:
        """The daemon's schedule period, so alerts can say "no success in 3 periods" without
        knowing the config (deploy/prometheus/reaper-rules.yml)."""
        self.schedule_interval.set(seconds)

    def set_policies_loaded(self, policies: int) -> None:
        """The size of the policy set loaded at start-up."""
        self.policies_loaded.set(policies)


def add_counts(counter: Counter, counts: Mapping[str, int], backend: str, label: str) -> None:
    """Add each count to `counter` under (backend, label=key); zero counts still create the
    series."""
    for key, count in counts.items():
        counter.labels(**{"backend": backend, label: str(key)}).inc(count)


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port`/`port` (loopback) → (host, port).

    Raises ValueError for a missing or out-of-range port."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = "", listen
    host = host.strip("[]") or LOOPBACK
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics listen address {listen!r}: expected host:port")
    return host, int(port)


@dataclass
class MetricsServer:
    """A running exposition server; `stop()` closes the socket and joins its thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve(registry: CollectorRegistry, listen: str = DEFAULT_LISTEN) -> MetricsServer:
    """Serve `registry` over HTTP on `listen` (loopback unless a host is given).

    Raises ValueError for a malformed address and OSError when the port cannot be bound."""
    host, port = parse_listen(listen)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


def write_textfile(registry: CollectorRegistry, path: str | os.PathLike[str]) -> None:
    """Write `registry` for node_exporter's textfile collector, replacing `path` atomically.

    prometheus_client's `write_to_textfile` writes `<path>.<pid>.<thread>` in the same directory
    and renames it over `path` (rename(2) is atomic), removing the temporary file on failure,
    so a scrape sees the old file or the new one, never half of one. The mode is then set
    to 0644 (the temporary file got the process umask). Raises OSError on failure."""
    target = os.fspath(path)
    write_to_textfile(target, registry)
    os.chmod(target, TEXTFILE_MODE)

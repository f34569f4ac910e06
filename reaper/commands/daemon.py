"""`reaper daemon [--config F] [--max-sweep DURATION]`: scheduled sweeps until SIGTERM; SIGHUP
reloads (docs/commands.md, docs/systemd.md; docs/systemd.md).

Start-up order: config and policies (invalid → exit 78 before READY), the audit log's lock
(held by another reaper → exit 75), audit log, backends,
reconciliation of interrupted cancels, metrics listener, signal handlers, scheduler, READY=1."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from reaper.commands.common import abandon, add_config_option, add_shard_option, examples, load
from reaper.errors import ExitCode, ReaperError
from reaper.policy.durations import DurationError, parse_duration

if TYPE_CHECKING:
    from reaper.service.coordination import Coordinator
    from reaper.service.daemon import DaemonOptions
    from reaper.service.metrics import Metrics, MetricsServer
    from reaper.service.reload import Loaded

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "daemon",
        help="scheduled sweeps until SIGTERM; SIGHUP reloads",
        description="Sweep every backend on the config's schedule until SIGTERM or SIGINT; "
        "SIGHUP re-reads the config and policies (all or nothing) and reopens the audit log. "
        "Speaks sd_notify under systemd (Type=notify).",
        **examples(
            "reaper daemon --config /etc/reaper/reaper.yaml",
            "systemctl reload reaper    # SIGHUP: reload policies, reopen the audit log",
        ),
    )
    add_config_option(parser)
    add_shard_option(parser)
    parser.add_argument(
        "--max-sweep",
        default="10m",
        metavar="DURATION",
        help="a sweep in flight for longer than this stops the systemd watchdog pings, so "
        "systemd restarts a daemon whose backend hangs (default: 10m)",
    )


def run(args: argparse.Namespace) -> int:
    from reaper.service.daemon import DaemonOptions
    from reaper.service.reload import Loaded

    try:
        max_sweep = parse_duration(args.max_sweep)
    except DurationError as exc:
        print(f"reaper daemon: --max-sweep: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    loaded = Loaded(*load(args))  # ConfigError: cli.main prints it and exits 78
    return run_daemon(loaded, DaemonOptions(max_sweep=max_sweep, shard=args.shard))


def run_daemon(loaded: Loaded, options: DaemonOptions) -> int:
    """Open everything the daemon needs, run it until SIGTERM, close everything. Raises
    ReaperError (exit 1) when the audit log cannot be opened or the metrics port not bound."""
    from prometheus_client import CollectorRegistry

    from reaper.audit.lock import AuditLock
    from reaper.audit.reconcile import reconcile
    from reaper.engine.pool import BackendPool
    from reaper.engine.runtime import open_audit
    from reaper.engine.sender import NoticeSender
    from reaper.service.daemon import Daemon, Services
    from reaper.service.metrics import Metrics
    from reaper.service.signals import SignalFlags, Wakeup, handling_signals
    from reaper.service.systemd import Notifier

    config = loaded.config
    metrics = Metrics(CollectorRegistry())
    metrics.declare_backends(loaded.backend_names)
    metrics.set_policies_loaded(len(loaded.policies))
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(AuditLock(config.audit_log))
        lock.acquire()  # another reaper on this log: AuditLockedError, exit 75 before READY
        audit = stack.enter_context(open_audit(config))
        pool = stack.enter_context(BackendPool())
        pool.open_all(config)
        reconcile(audit, pool.live())
        stack.callback(start_metrics(metrics, config.metrics_listen).stop)
        wakeup = Wakeup()
        stack.callback(wakeup.close)
        notifier = stack.enter_context(Notifier())
        flags = SignalFlags(wakeup)
        stack.enter_context(handling_signals(flags))
        coordinator = start_coordination(loaded)
        if coordinator is not None:
            stack.callback(coordinator.stop)
        sender = NoticeSender(audit, on_outcome=metrics.record_notice)
        services = Services(audit, pool, metrics, notifier, wakeup, flags, sender)
        daemon = Daemon(loaded, services, options, coordinator=coordinator)
        code = daemon.run()
        if daemon.abandoned:
            stack.close()
            abandon(code)
    return code


def start_coordination(loaded: Loaded) -> Coordinator | None:
    """Join the coordination group when `coordination:` is configured (docs/scale.md).
    Raises ReaperError (exit 1) when tooz is missing or the service cannot be joined."""
    settings = loaded.config.coordination
    if settings is None:
        return None
    try:
        from reaper.service.coordination import Coordinator, lease_for, resolve_url, with_lease
    except ImportError as exc:  # tooz: the optional `coordination` extra
        raise ReaperError(f"coordination: needs tooz (pip install 'reaper[coordination]'): "
                          f"{exc}") from None  # fmt: skip
    from reaper.engine.runtime import utc_now
    from reaper.service.scheduler import Schedule, longest_interval

    schedule = loaded.config.schedule
    period = longest_interval(Schedule(schedule.every, schedule.cron), utc_now())
    url = with_lease(resolve_url(settings), lease_for(period))
    coordinator = Coordinator(url, settings.member, settings.group)
    coordinator.start()
    return coordinator


def start_metrics(metrics: Metrics, listen: str) -> MetricsServer:
    """Serve `metrics` on `listen`; raises ReaperError when the address cannot be bound."""
    from reaper.service.metrics import serve

    try:
        server = serve(metrics.registry, listen)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReaperError(f"cannot serve metrics on {listen}: {reason}") from None
    log.info("metrics on http://%s/metrics", listen)
    return server

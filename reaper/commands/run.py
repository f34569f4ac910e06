"""`reaper run --once [--dry-run]`: one sweep, then exit (cron, systemd timer)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reaper.commands.common import (
    add_config_option,
    add_deadline_option,
    add_lock_wait_option,
    add_shard_option,
    examples,
    load,
    option_seconds,
    report_interrupted,
)
from reaper.commands.progress import listing_progress
from reaper.errors import ExitCode
from reaper.redact import redact

if TYPE_CHECKING:
    import threading

    from reaper.engine.sender import NoticeSender
    from reaper.engine.sweep import SweepReport
    from reaper.policy.config import Config
    from reaper.policy.model import PolicySet

log = logging.getLogger(__name__)
INTERRUPTED_NOTE = (
    "listings in progress were abandoned, no new cancel was started, cancels in flight were "
    "recorded"
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="one sweep, then exit",
        description="One sweep over every configured backend, then exit (cron, a systemd "
        "timer). Interrupted cancels in the audit log are reconciled first. Exit 0, 1 (a "
        "backend, a cancel or the audit log failed), 3 (a guard refused).",
        **examples(
            "reaper run --once --dry-run",
            "reaper run --once --policy gpu-runtime-cap --backend batch-prod",
            "reaper run --once --json | jq .backends",
        ),
    )
    add_config_option(parser)
    add_shard_option(parser)
    parser.add_argument("--once", action="store_true", help="required: run one sweep and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="cancel nothing, whatever the config says"
    )
    parser.add_argument("--backend", action="append", metavar="NAME", help="only this backend")
    parser.add_argument(
        "--policy", metavar="NAME", help="only this policy: the others neither match nor cancel"
    )
    parser.add_argument("--json", action="store_true", help="the sweep summary as JSON on stdout")
    add_deadline_option(parser)
    add_lock_wait_option(parser)


def run(args: argparse.Namespace) -> int:  # noqa: PLR0911 (one return per usage error)
    if not args.once:
        print(
            "reaper run: give --once (or use `reaper daemon` for scheduled sweeps)", file=sys.stderr
        )
        return ExitCode.USAGE
    from reaper.audit.lock import AuditLock
    from reaper.engine.report import sweep_summary
    from reaper.service.interrupt import Interrupted, run_interruptible

    deadline_s = option_seconds(args, "deadline")
    wait_s = option_seconds(args, "lock_wait", zero_ok=True)
    if deadline_s is None or wait_s is None:
        return ExitCode.USAGE
    config, policies = load(args)
    unknown = set(args.backend or ()) - set(config.backends)
    if unknown:  # a misspelt --backend must not sweep nothing and exit 0
        print(f"reaper run: unknown backend(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return ExitCode.USAGE
    outside = set(args.backend or ()) - set(config.swept_backends)
    if outside:  # a shard never sweeps another shard's backend, even when asked by name
        names = ", ".join(sorted(outside))
        print(f"reaper run: not in shard {config.shard}: {names}", file=sys.stderr)
        return ExitCode.USAGE
    if config.coordination is not None:  # locks and partitions are the daemons' (docs/scale.md)
        print("reaper run: `coordination:` applies to `reaper daemon`; this run sweeps every "
              "backend it is given", file=sys.stderr)  # fmt: skip
    if args.policy:
        if policies.by_name(args.policy) is None:
            print(f"reaper run: unknown policy {args.policy!r}", file=sys.stderr)
            return ExitCode.USAGE
        policies = _only_policy(policies, args.policy)
    lock = AuditLock(config.audit_log)
    lock.acquire(wait_s)  # AuditLockedError: cli.main prints it and exits 75
    try:
        result = run_interruptible(lambda stop: _sweep(config, policies, args, stop, deadline_s))
        if isinstance(result, Interrupted):
            if result.result is not None:
                for line in sweep_summary(result.result):
                    print(redact(line))
            return report_interrupted("run", result, INTERRUPTED_NOTE)
    finally:
        lock.release()
    if config.metrics_textfile is not None:
        write_metrics(config.metrics_textfile, len(policies), result, {})
    _print_result(result, args, configured_dry_run=config.dry_run)
    return result.exit_code


def _sweep(
    config: Config,
    policies: PolicySet,
    args: argparse.Namespace,
    stop: threading.Event,
    deadline_s: float,
) -> SweepReport:
    """Reconcile open intents and sweep once, with the audit log's lock held by the caller (in
    the interruptible work thread). Raises AuditWriteError/ReaperError when the audit log
    cannot be used."""
    from reaper.audit.reconcile import reconcile
    from reaper.engine.runtime import (
        flush_budget_s,
        open_audit,
        open_backends,
        routing_from,
        sweep_env,
    )
    from reaper.engine.sender import NoticeSender
    from reaper.engine.sweep import run_sweep

    opened = open_backends(config, args.backend)
    progress = listing_progress(sys.stderr)
    routing = routing_from(config, os.environ)
    try:
        with open_audit(config, clock=runtime_clock()) as audit:
            reconcile(audit, opened.backends)
            sender = None if routing is None else NoticeSender(audit)
            env = sweep_env(
                config, policies, opened.backends, audit, force_dry_run=args.dry_run,
                unreachable=opened.errors, routing=routing, sender=sender,
                clock=runtime_clock(), progress=progress, stop=stop, deadline_s=deadline_s,
            )  # fmt: skip
            try:
                return run_sweep(env)
            finally:
                if sender is not None and routing is not None:
                    _finish_notices(sender, flush_budget_s(routing))
    finally:
        if progress is not None:
            progress.done()
        opened.close()


def _only_policy(policies: PolicySet, name: str) -> PolicySet:
    """`--policy NAME`: the set holding that one policy (which exists)."""
    from reaper.policy.model import PolicySet

    return PolicySet.of(p for p in policies if p.name == name)


def _print_result(
    result: SweepReport, args: argparse.Namespace, *, configured_dry_run: bool
) -> None:
    """The sweep summary: JSON with --json, else the dry-run notice and one line per backend."""
    from reaper.engine.report import sweep_json, sweep_summary

    if args.json:
        body = sweep_json(result, dry_run=args.dry_run or configured_dry_run)
        print(redact(json.dumps(body, indent=2)))  # output a person keeps is masked too
        return
    if notice := _dry_run_notice(args.dry_run, configured_dry_run):
        print(notice)
    for line in sweep_summary(result):
        print(redact(line))  # output a person keeps is masked as log lines are


def runtime_clock() -> Callable[[], datetime]:
    """The clock of this run: the wall clock (tests replace `reaper.engine.runtime.utc_now`)."""
    from reaper.engine import runtime

    return runtime.utc_now


def _finish_notices(sender: NoticeSender, budget_s: float) -> None:
    """Give the notices of this run a bounded time to go out (after every cancel is done)."""
    if not sender.flush(budget_s):
        log.error("notices still unsent after %.0fs: giving up on them at exit", budget_s)
    sender.close()


def write_metrics(
    path: Path, policies: int, result: SweepReport, unreachable: Mapping[str, str]
) -> None:
    """This sweep's series, in a fresh registry, for node_exporter's textfile collector
    (replaced atomically). A write failure is logged: the sweep itself went as it went."""
    from prometheus_client import CollectorRegistry

    from reaper.service.metrics import BackendSweepStats, Metrics, write_textfile

    metrics = Metrics(CollectorRegistry())
    metrics.set_policies_loaded(policies)
    metrics.declare_backends([*result.backends, *unreachable])
    for report in result.backends.values():
        metrics.record_backend_sweep(report)
    for name, error in unreachable.items():
        metrics.record_backend_sweep(BackendSweepStats(name, error=error))
    try:
        write_textfile(metrics.registry, path)
    except OSError as exc:
        log.error("cannot write metrics textfile %s: %s", path, exc.strerror or exc)


def _dry_run_notice(forced: bool, configured: bool) -> str | None:
    """Dry run is loud: say that nothing was cancelled, and why."""
    if forced:
        return "DRY RUN (--dry-run): nothing was cancelled"
    if configured:
        return ("DRY RUN: nothing was cancelled: reaper.yaml says `dry_run: true`, or says nothing "
                "(absent means true); set `dry_run: false` to act")  # fmt: skip
    return None

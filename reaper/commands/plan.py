"""`reaper plan`: list jobs and show what would be cancelled, by which policy, and why.
Never cancels, never writes the audit log."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from reaper.commands.common import (
    add_config_option,
    add_deadline_option,
    add_now_option,
    add_shard_option,
    add_wide_option,
    examples,
    load,
    option_seconds,
    report_interrupted,
    table_width,
)
from reaper.commands.progress import listing_progress
from reaper.engine import report
from reaper.engine.decide import Decision, Plan
from reaper.engine.scan import Scan
from reaper.errors import ExitCode
from reaper.policy.model import Match
from reaper.redact import redact
from reaper.untrusted import clean

if TYPE_CHECKING:
    import threading

    from reaper.policy.config import Config
    from reaper.policy.model import PolicySet


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what a sweep would cancel, and why",
        description="List the jobs of every backend and show what one sweep would do, by which "
        "policy and why. Never cancels and never writes the audit log. The table fits the "
        "terminal ($COLUMNS) unless --wide. Exit 0; 1 when a listing failed; 3 when a guard "
        "would refuse.",
        **examples(
            "reaper plan",
            "reaper plan --backend batch-prod --policy gpu-runtime-cap",
            "reaper plan --json | jq '.decisions[] | select(.action == \"cancel\")'",
        ),
    )
    add_config_option(parser)
    add_shard_option(parser)
    parser.add_argument("--backend", action="append", metavar="NAME", help="only this backend")
    parser.add_argument("--policy", metavar="NAME", help="only decisions involving this policy")
    parser.add_argument("--job", metavar="ID", help="only the decision about this job id")
    add_now_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_wide_option(parser)
    add_deadline_option(parser)


class _Planned(NamedTuple):
    scans: list[Scan]
    plan: Plan[Match]
    errors: dict[str, str]  # backends that could not be built
    now: datetime


def run(args: argparse.Namespace) -> int:
    from reaper.service.interrupt import Interrupted, run_interruptible

    deadline_s = option_seconds(args, "deadline")
    if deadline_s is None:
        return ExitCode.USAGE
    config, policies = load(args)
    unknown = set(args.backend or ()) - set(config.backends)
    if unknown:
        print(f"reaper plan: unknown backend(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return ExitCode.USAGE
    outside = set(args.backend or ()) - set(config.swept_backends)
    if outside:  # a shard never sweeps another shard's backend, even when asked by name
        names = ", ".join(sorted(outside))
        print(f"reaper plan: not in shard {config.shard}: {names}", file=sys.stderr)
        return ExitCode.USAGE
    if args.policy and policies.by_name(args.policy) is None:
        print(f"reaper plan: unknown policy {args.policy!r}", file=sys.stderr)
        return ExitCode.USAGE
    planned = run_interruptible(lambda stop: _plan(config, policies, args, stop, deadline_s))
    if isinstance(planned, Interrupted):
        return report_interrupted("plan", planned, "nothing was cancelled (plan never cancels)",
                                  "plan makes no mutating call")  # fmt: skip
    scans, plan, errors, now = planned
    decisions = [d for d in plan.decisions if _involves(d, args.policy, args.job)]
    if args.json:
        body = report.plan_json(scans, plan, now)
        body["decisions"] = [report.decision_json(d, now, plan) for d in decisions]
        body["backend_errors"] = errors
        print(redact(json.dumps(body, indent=2, default=str)))
    else:
        width = table_width(args.wide)
        _print_human(scans, plan, decisions, errors, now,
                     empty=_empty_text(scans, errors, args.job), width=width)  # fmt: skip
    failed = errors or any(s.error for s in scans)
    return ExitCode.FAILED if failed else ExitCode.REFUSED if plan.refused else ExitCode.OK


def _plan(
    config: Config,
    policies: PolicySet,
    args: argparse.Namespace,
    stop: threading.Event,
    deadline_s: float,
) -> _Planned:
    """Build the backends, list and decide (in the interruptible work thread: building a Tapis
    client with a password makes a call too)."""
    from reaper.engine.runtime import open_backends, sweep_env, utc_now
    from reaper.engine.sweep import plan_sweep

    opened = open_backends(config, args.backend)
    progress = listing_progress(sys.stderr)
    try:
        at = args.now or utc_now()
        env = sweep_env(config, policies, opened.backends, audit=None, clock=lambda: at,
                        progress=progress, stop=stop, deadline_s=deadline_s)  # fmt: skip
        scans, plan = plan_sweep(env)
    finally:
        if progress is not None:
            progress.done()
        opened.close()
    return _Planned(scans, plan, opened.errors, env.clock())


def _involves(decision: Decision[Match], policy: str | None, job: str | None) -> bool:
    if job is not None and decision.job.id != job:
        return False
    return policy is None or decision.policy.name == policy or policy in decision.also_matched


def _empty_text(scans: Sequence[Scan], errors: dict[str, str], job: str | None) -> str:
    """The line instead of an empty table: never "no job matches" about unlisted jobs."""
    if job is None or errors or any(s.error for s in scans):
        return report.plan_headline(scans, 0, list(errors))
    return f"job {job}: no policy matches it (`reaper explain BACKEND {job}` shows why)"


def _print_human(
    scans: Sequence[Scan],
    plan: Plan[Match],
    decisions: Sequence[Decision[Match]],
    errors: dict[str, str],
    now: datetime,
    *,
    empty: str,
    width: int | None = None,
) -> None:
    rows = [report.decision_row(d, now, plan) for d in decisions]
    table = report.format_table(rows, width=width)
    # Output a person keeps (a terminal, a CI log) is masked as log lines are.
    print(redact(table or empty))
    print()
    for name, error in errors.items():
        print(redact(f"{name}: not reachable: {clean(error, report.MAX_REASON)}"))
    for line in report.plan_summary(scans, plan):
        print(redact(line))

"""`reaper run --once [--dry-run]`: one sweep, then exit (cron, systemd timer)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reaper.commands.common import add_config_option, load
from reaper.errors import ExitCode


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="one sweep, then exit")
    add_config_option(parser)
    parser.add_argument("--once", action="store_true", help="required: run one sweep and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="cancel nothing, whatever the config says"
    )
    parser.add_argument("--backend", action="append", metavar="NAME", help="only this backend")


def run(args: argparse.Namespace) -> int:
    if not args.once:
        print(
            "reaper run: give --once (or use `reaper daemon` for scheduled sweeps)", file=sys.stderr
        )
        return ExitCode.USAGE
    from reaper.audit import AuditLog
    from reaper.reconcile import reconcile
    from reaper.report import sweep_summary
    from reaper.runtime import open_backends, sweep_env
    from reaper.sweep import run_sweep

    config, policies = load(args)
    unknown = set(args.backend or ()) - set(config.backends)
    if unknown:  # a misspelt --backend must not sweep nothing and exit 0
        print(f"reaper run: unknown backend(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return ExitCode.USAGE
    opened = open_backends(config, args.backend)
    try:
        with AuditLog(config.audit_log) as audit:
            reconcile(audit, opened.backends)
            env = sweep_env(config, policies, opened.backends, audit, force_dry_run=args.dry_run)
            result = run_sweep(env)
    finally:
        opened.close()
    if notice := _dry_run_notice(args.dry_run, config.dry_run):
        print(notice)
    for line in sweep_summary(result):
        print(line)
    for name, error in opened.errors.items():
        print(f"{name}: not reachable: {error}")
    return ExitCode.FAILED if opened.errors else result.exit_code


def _dry_run_notice(forced: bool, configured: bool) -> str | None:
    """Dry run is loud (STYLE.md habit 2): say that nothing was cancelled, and why."""
    if forced:
        return "DRY RUN (--dry-run): nothing was cancelled"
    if configured:
        return ("DRY RUN: nothing was cancelled: reaper.yaml says `dry_run: true`, or says nothing "
                "(absent means true); set `dry_run: false` to act")  # fmt: skip
    return None

"""`reaper validate [--config F] [PATH…]`: schema and semantic checks of the config and the
policies, with no network, no credentials and no SDK imports (docs/commands.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from reaper.errors import ConfigError, ConfigNotFoundError, ExitCode
from reaper.policy.config import (
    expand_policy_paths,
    load_all,
    load_config,
    load_policies,
    locate_config,
)


def add_parser(subparsers: Any) -> None:
    """Register `validate`."""
    parser = subparsers.add_parser(
        "validate",
        help="check the config and the policies",
        description=(
            "Check reaper.yaml and the policies it points to, or the policy files and folders "
            "given. Prints every problem as FILE:LINE:COL: message. Exit 0 valid, 78 invalid."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the config (default: $REAPER_CONFIG, ./reaper.yaml, /etc/reaper/reaper.yaml)",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        type=Path,
        help="policy files or folders; with --config, checked against its backends",
    )


def run(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Validate and report; returns 0, 78 (invalid, or no config found) or 2 (a named policy
    path does not exist)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config_path = _config_path(args)
    except ConfigNotFoundError as exc:  # the same answer as every other command (exit 78)
        print(f"reaper validate: {exc}", file=err)
        return ExitCode.CONFIG
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"reaper validate: no such file or folder: {missing[0]}", file=err)
        return ExitCode.USAGE
    try:
        summary = _validate(config_path, list(args.paths))
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=err)
        count = len(exc.diagnostics)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=err)
        return ExitCode.CONFIG
    print(summary, file=out)
    return ExitCode.OK


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config to check: --config always; otherwise only when no PATH is given. Raises
    ConfigNotFoundError."""
    if args.config or not args.paths:
        return locate_config(args.config, os.environ, Path.cwd())
    return None


def _validate(config_path: Path | None, paths: list[Path]) -> str:
    """Load everything; returns the one-line success summary or raises ConfigError."""
    if config_path is None:
        policy_set = load_policies(paths)
        files = len(expand_policy_paths(paths)[0])
        return _summary(files, len(policy_set.policies))
    if paths:
        config = load_config(config_path)
        policy_set = load_policies(paths, config.backends)
    else:
        config, policy_set = load_all(config_path)
        paths = [config.policies_path]
    files = len(expand_policy_paths(paths)[0])
    return f"{config_path}: ok; " + _summary(files, len(policy_set.policies))


def _summary(files: int, policies: int) -> str:
    return (
        f"{files} file{'s' if files != 1 else ''}, "
        f"{policies} polic{'ies' if policies != 1 else 'y'}: ok"
    )

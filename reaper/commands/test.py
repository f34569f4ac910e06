"""`reaper test [--config F] [PATH…]`: unit tests for policies (docs/testing.md). Runs the cases
of `*.test.yaml` files — backends' raw records and what must happen to them — through the
sweep's parse → evaluate → decide path with `now` fixed: no network, no credentials, no SDK."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from reaper.commands.common import examples
from reaper.errors import BackendError, ConfigError, ExitCode

if TYPE_CHECKING:
    from reaper.policy.config import Config
    from reaper.policy.model import PolicySet

DEFAULT_RECORD_LIMIT = 100


def add_parser(subparsers: Any) -> None:
    """Register `test`."""
    parser = subparsers.add_parser(
        "test",
        help="run the policy test cases (*.test.yaml)",
        description=(
            "Run every case of the *.test.yaml files under PATH (default: the config's policy "
            "folder and tests/ beside it) through the sweep's parse, evaluate and decide steps, "
            "at the file's `now`. Exit 0 all pass, 1 a case fails, 78 a file is invalid."
        ),
        **examples(
            "reaper test",
            "reaper test policies/tests/gpu.test.yaml --junit report.xml",
            "reaper test --policies policies/ --require-coverage",
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="reaper.yaml (default: $REAPER_CONFIG, ./reaper.yaml, /etc/reaper/reaper.yaml)",
    )
    parser.add_argument(
        "--policies",
        action="append",
        type=Path,
        metavar="PATH",
        help="policy files or folders to test instead of the config's (repeatable)",
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="test files or folders to search"
    )
    parser.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--require-coverage",
        action="store_true",
        help="fail when a policy is exercised by no case",
    )
    record = parser.add_argument_group("recording a test file from a live backend")
    record.add_argument("--record", metavar="BACKEND", help="list this backend (read-only)")
    record.add_argument("--out", type=Path, metavar="FILE", help="the test file to write")
    record.add_argument("--policy", metavar="NAME", help="only jobs this policy matches")
    record.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_RECORD_LIMIT,
        metavar="N",
        help=f"at most N cases, decided jobs first (default {DEFAULT_RECORD_LIMIT})",
    )
    record.add_argument(
        "--keep-owners",
        action="store_true",
        help="keep owner fields and every tag (default: only the tags a policy reads)",
    )


def run(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the tests (or record a file); returns 0, 1, 2 (usage) or 78 (invalid input)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config, policies = _load(args)
        if args.record:
            return _record(args, config, policies, out, err)
        return _test(args, config, policies, out, err)
    except _UsageError as exc:
        print(f"reaper test: {exc}", file=err)
        return ExitCode.USAGE
    except ConfigError as exc:  # as `validate` reports it
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=err)
        count = len(exc.diagnostics)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=err)
        return ExitCode.CONFIG


class _UsageError(Exception):
    pass


def _load(args: argparse.Namespace) -> tuple[Config | None, PolicySet]:
    """The config (None when only --policies are given and none is found) and the policies.
    Raises ConfigError (exit 78) for invalid ones, ConfigNotFoundError (78) for a missing
    config, _UsageError for a missing policy path."""
    from reaper.policy.config import (
        find_config_path,
        load_all,
        load_config,
        load_policies,
        locate_config,
    )

    for path in [*(args.policies or []), *args.paths]:
        if not path.exists():
            raise _UsageError(f"no such file or folder: {path}")
    config_path = find_config_path(args.config, os.environ, Path.cwd())
    if args.policies:
        config = load_config(config_path) if args.config or config_path.exists() else None
        return config, load_policies(args.policies, config.backends if config else None)
    # No config where it was looked for: ConfigNotFoundError, exit 78 as for every command.
    return load_all(locate_config(args.config, os.environ, Path.cwd()))


def default_test_paths(policy_paths: list[Path]) -> list[Path]:
    """Each policy folder (searched recursively; a policy file's folder) and `tests/` beside it."""
    paths: list[Path] = []
    for path in policy_paths:
        folder = path if path.is_dir() else path.parent
        paths.extend(p for p in (folder, folder.parent / "tests") if p not in paths)
    return paths


def _test(
    args: argparse.Namespace,
    config: Config | None,
    policies: PolicySet,
    out: TextIO,
    err: TextIO,
) -> int:
    from reaper.engine import testreport
    from reaper.engine.decide import Guards
    from reaper.engine.policytest import run_tests
    from reaper.engine.runtime import guards_from
    from reaper.policy.testfile import find_test_files, load_test_files

    policy_paths = args.policies or ([] if config is None else [config.policies_path])
    searched = args.paths or default_test_paths(policy_paths)
    files = find_test_files(searched)
    if not files:
        where = ", ".join(str(p) for p in searched) or "(no path given)"
        print(f"reaper test: no test files (*.test.yaml) under {where}", file=err)
        return ExitCode.USAGE
    types = {} if config is None else {n: b.type for n, b in config.backends.items()}
    test_files = load_test_files(files, types)
    guards = Guards() if config is None else guards_from(config)
    result = run_tests(test_files, policies, guards)
    required = bool(args.require_coverage)
    if args.junit:
        args.junit.write_bytes(testreport.junit_xml(result, require_coverage=required))
    if args.json:
        json.dump(testreport.run_json(result, require_coverage=required), out, indent=2)
        print(file=out)
    else:
        for line in testreport.text_lines(result, require_coverage=required):
            print(line, file=out)
    return ExitCode.OK if testreport.is_ok(result, require_coverage=required) else ExitCode.FAILED


def _record(
    args: argparse.Namespace,
    config: Config | None,
    policies: PolicySet,
    out: TextIO,
    err: TextIO,
) -> int:
    """List the backend read-only and write the test file; 0, 1 (the backend failed) or 2."""
    problem = _record_usage(args, config, policies)
    if problem or config is None:
        print(f"reaper test --record: {problem}", file=err)
        return ExitCode.USAGE
    from datetime import UTC, datetime

    from reaper.engine.record import RecordOptions, record
    from reaper.engine.runtime import guards_from, open_backends

    opened = open_backends(config, [args.record])
    if args.record in opened.errors:
        print(f"reaper test --record: {opened.errors[args.record]}", file=err)
        return ExitCode.FAILED
    now = datetime.now(UTC).replace(microsecond=0)  # the listing time: the file's `now`
    options = RecordOptions(args.policy, args.limit, args.keep_owners)
    try:
        recording = record(
            opened.backends[args.record], policies, guards_from(config), now, options
        )
    except BackendError as exc:
        print(f"reaper test --record: {exc}", file=err)
        return ExitCode.FAILED
    finally:
        opened.close()
    _write_recording(args.out, args.record, recording.document)
    for warning in recording.warnings:
        print(f"reaper test --record: warning: {warning}", file=err)
    cases = len(recording.document["cases"])
    print(f"{args.out}: {cases} cases of {recording.listed} active jobs on {args.record}", file=out)
    return ExitCode.OK


def _record_usage(args: argparse.Namespace, config: Config | None, policies: PolicySet) -> str:
    if config is None:
        return "needs a config (--config) naming the backend"
    if args.out is None:
        return "give --out FILE"
    if args.record not in config.backends:
        return f"unknown backend {args.record!r}: the config defines {', '.join(config.backends)}"
    if args.policy and policies.by_name(args.policy) is None:
        return f"unknown policy {args.policy!r}"
    if args.limit < 1:
        return "--limit must be at least 1"
    return ""


def _write_recording(path: Path, backend: str, document: dict[str, Any]) -> None:
    import yaml

    header = (
        f"# Recorded from {backend} by `reaper test --record` at {document['now']}: real records,\n"
        "# cut to what decides, and today's decisions as the expectations. Rename the cases,\n"
        "# check the expectations, then commit it beside the policies (docs/testing.md).\n"
    )
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(header + body, encoding="utf-8")

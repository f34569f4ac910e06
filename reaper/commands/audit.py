"""`reaper audit`: query the audit log; `reaper audit verify`: check its hash chain (docs/audit.md).

The file is `--file` (repeatable, oldest first for rotated files), else the config's `audit_log`.
Several files are merged by time: rotated files of one log, or the logs of several instances.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from reaper.audit.reader import AuditReadResult, Record, matches_filter, read_audit
from reaper.audit.seal import AuditKeyError, Head, head_path, load_key, read_head
from reaper.audit.verify import verify_audit
from reaper.commands.common import examples
from reaper.errors import ConfigError, ConfigNotFoundError, ExitCode
from reaper.policy.durations import DurationError, parse_duration
from reaper.untrusted import MAX_TEXT, clean

SCHEMA_VERSION = 1
HEADER = ("TS", "EVENT", "BACKEND", "JOB", "POLICY", "OUTCOME", "REASON")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="query the audit log, or check its hash chain",
        description="Show audit records (all, or those matching the filters). "
        "`reaper audit verify` checks the hash chain and names the first bad line.",
        **examples(
            "reaper audit --since 24h --policy gpu-runtime-cap",
            "reaper audit --job 1f0c9a3e --json",
            "reaper audit verify --file audit.jsonl.1 --file audit.jsonl",
        ),
    )
    # One path per --file here (repeat it): `--file A verify` must not read `verify` as a path.
    _add_file_options(parser, None, nargs=None)
    parser.add_argument(
        "--since", help="records newer than a duration (24h, 7d) or a time (ISO 8601)"
    )
    parser.add_argument("--policy", help="records of this policy only")
    parser.add_argument("--job", help="records about this job id only")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check the hash chain",
        description="Check every line and `prev` link; exit 1 naming FILE:LINE if broken. "
        "Give rotated files oldest first; a later file must continue the one before it, "
        "unless --new-chain-ok.",
        **examples(
            "reaper audit verify",
            "reaper audit verify --file /var/log/reaper/audit.jsonl.1 "
            "--file /var/log/reaper/audit.jsonl",
            "reaper audit verify --new-chain-ok --file audit.jsonl.1 --file audit.jsonl",
        ),
    )
    # SUPPRESS: an option left out after `verify` must not reset one given before it.
    _add_file_options(verify, argparse.SUPPRESS, nargs="+")
    verify.add_argument(
        "--new-chain-ok",
        action="store_true",
        help="accept a later file that starts a new chain (a one-shot run after rotation) "
        "instead of continuing the file before it; without it that fails",
    )
    verify.add_argument(
        "--key-file",
        type=Path,
        metavar="PATH",
        help="the audit key (default: the config's audit_key_file): every record and the head "
        "must carry a correct mac",
    )


def _add_file_options(parser: argparse.ArgumentParser, default: Any, nargs: str | None) -> None:
    parser.add_argument("--config", default=default, help="reaper.yaml (for `audit_log`)")
    parser.add_argument(
        "--file",
        dest="files",
        action="append" if nargs is None else "extend",
        nargs=nargs,
        type=Path,
        default=default,
        metavar="PATH",
        help="audit file instead of the config's audit_log; several (rotated) files: oldest first",
    )


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `reaper audit [verify]`; returns an ExitCode."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        files, key_file = _audit_files(args)
    except ConfigNotFoundError as exc:
        print(f"reaper audit: {exc}", file=err)
        return ExitCode.CONFIG
    except ConfigError as exc:
        print(exc, file=err)
        return ExitCode.CONFIG
    if args.audit_action == "verify":
        key_file = getattr(args, "key_file", None) or key_file
        return _run_verify(files, key_file, out, err, new_chain_ok=args.new_chain_ok)
    return _run_query(args, files, out, err)


def _audit_files(args: argparse.Namespace) -> tuple[list[Path], Path | None]:
    """`--file`, else the config's `audit_log`; and the config's `audit_key_file` when the
    config is read (without --file, or with --config). Raises ConfigError or
    ConfigNotFoundError."""
    if args.files and not args.config:
        return list(args.files), None
    # Imported here: config loading is only needed without --file.
    from reaper.policy.config import load_config, locate_config

    config = load_config(locate_config(args.config, os.environ, Path.cwd()))
    return list(args.files or [config.audit_log]), config.audit_key_file


def parse_since(text: str, now: datetime) -> datetime:
    """`24h` → now minus 24 hours; `2024-05-01T12:00:00Z` or `2024-05-01` → that time (UTC if
    no zone is given). Raises ValueError naming both accepted forms."""
    try:
        return now - parse_duration(text)
    except DurationError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (24h, 7d, 1h30m) or a time (2024-05-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _run_verify(
    files: list[Path], key_file: Path | None, out: TextIO, err: TextIO, *, new_chain_ok: bool
) -> int:
    """Check the chain, the head file beside the newest file when there is one (required with a
    key), and with a key every mac."""
    try:
        key = None if key_file is None else load_key(key_file)
        head = _read_head(files[-1], key)
        result = verify_audit(files, new_chain_ok=new_chain_ok, head=head, key=key)
    except (AuditKeyError, ValueError) as exc:
        print(f"reaper audit verify: {exc}", file=out)
        return ExitCode.FAILED
    except OSError as exc:
        print(f"reaper audit verify: cannot read {exc.filename}: {exc.strerror}", file=err)
        return ExitCode.FAILED
    if not result.ok:
        print(f"{result.file}:{result.first_bad_line}: {result.message}", file=out)
        return ExitCode.FAILED
    print(f"{', '.join(map(str, files))}: {result.message}", file=out)
    return ExitCode.OK


def _read_head(newest: Path, key: bytes | None) -> Head | None:
    """`<newest>.head`, or None when there is none and no key asks for one. Raises ValueError
    (malformed, wrong mac, or missing with a key) and OSError."""
    try:
        return read_head(head_path(newest), key)
    except FileNotFoundError:
        if key is not None:
            message = f"{head_path(newest)}: no head file, and a key is configured"
            raise ValueError(message) from None
        return None


def _run_query(args: argparse.Namespace, files: list[Path], out: TextIO, err: TextIO) -> int:
    try:
        since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    except ValueError as exc:
        print(f"reaper audit: {exc}", file=err)
        return ExitCode.USAGE
    keep = partial(matches_filter, since=since, policy=args.policy, job=args.job)
    results: list[tuple[Path, AuditReadResult]] = []
    for path in files:
        try:
            results.append((path, read_audit(path, keep)))
        except OSError as exc:
            print(f"reaper audit: cannot read {path}: {exc.strerror}", file=err)
            return ExitCode.FAILED
    records = merge_by_time([result.records for _, result in results])
    if args.json:
        json.dump(_json_document(results, records), out, ensure_ascii=False)
        out.write("\n")
    else:
        _print_table(records, out, err)
    return _report_problems(results, err)


def merge_by_time(files: list[list[Record]]) -> list[Record]:
    """The records of several files in one list ordered by `ts`. Each file is already in time
    order (one writer appends to it), so this is a merge: rotated files of one log come out as
    they are, and the logs of several instances (docs/scale.md) interleave by time. A record
    without a readable `ts` keeps its place after the one before it in its file."""
    merged = heapq.merge(*(_keyed(records) for records in files), key=lambda pair: pair[0])
    return [record for _, record in merged]


def _keyed(records: list[Record]) -> Iterator[tuple[str, Record]]:
    # The writer's ts is ISO 8601 UTC with a fixed width (2024-05-01T12:00:00.000Z), so text
    # order is time order.
    last = ""
    for record in records:
        ts = record.get("ts")
        last = ts if isinstance(ts, str) else last
        yield last, record


def _json_document(results: list[tuple[Path, AuditReadResult]], records: list[Record]) -> Any:
    torn = [{"file": str(p), "line": r.torn_line} for p, r in results if r.torn_line is not None]
    errors = [_locate(p, e) for p, r in results for e in r.errors]
    return {
        "schema_version": SCHEMA_VERSION,
        "files": [str(path) for path, _ in results],
        "records": records,
        "torn_line": torn[0] if torn else None,
        "errors": errors,
    }


def _report_problems(results: list[tuple[Path, AuditReadResult]], err: TextIO) -> int:
    """Torn last lines are notes; corrupt lines in the middle fail the command."""
    failed = False
    for path, result in results:
        if result.torn_line is not None:
            print(f"{path}:{result.torn_line}: torn last line (a write cut short)", file=err)
        for error in result.errors:
            print(_locate(path, error), file=err)
            failed = True
    return ExitCode.FAILED if failed else ExitCode.OK


def _locate(path: Path, error: str) -> str:
    """`line 7: message` → `PATH:7: message`."""
    return f"{path}:{error.removeprefix('line ')}"


def _print_table(records: list[Record], out: TextIO, err: TextIO) -> None:
    if not records:
        print("no matching audit records", file=err)
        return
    rows = [HEADER, *(_row(record) for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


def _row(record: Record) -> tuple[str, ...]:
    outcome = record.get("outcome") or record.get("cause")
    reason = _cell(record.get("reason"), "", 4 * MAX_TEXT)
    if record.get("error"):
        reason = f"{reason} (error: {_cell(record['error'], '', 4 * MAX_TEXT)})".lstrip()
    return (
        _cell(record.get("ts")),
        _cell(record.get("event")),
        _cell(record.get("backend")),
        _cell(record.get("job_id")),
        _cell(record.get("policy")),
        _cell(outcome),
        reason,
    )


def _cell(value: object, missing: str = "-", limit: int = MAX_TEXT) -> str:
    """One line of safe text: a reason with newlines or tabs must not break the table, and a job
    name with escape sequences must not reach the terminal (the file keeps the full value)."""
    return missing if value is None or value == "" else clean(" ".join(str(value).split()), limit)

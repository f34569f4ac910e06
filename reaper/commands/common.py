"""Pieces several commands share."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reaper.policy.durations import DurationError, parse_duration

if TYPE_CHECKING:
    from reaper.policy.config import Config
    from reaper.policy.model import PolicySet
    from reaper.policy.shard import Shard
    from reaper.service.interrupt import Interrupted

# `plan` and `run --once`: a sweep's whole budget. Below the 10 minutes of reaper-once.service's
# TimeoutStartSec=, so that a hung backend is reported by reaper, not killed by systemd.
DEFAULT_DEADLINE = "5m"


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """Wraps the description as usual; keeps the `examples:` epilog's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


EXAMPLES = "examples:\n"


def examples(*commands: str) -> dict[str, Any]:
    """`add_parser` keywords for a help text that ends with example commands, shown as written."""
    lines = "\n".join(f"  {command}" for command in commands)
    return {"epilog": EXAMPLES + lines, "formatter_class": ExamplesHelpFormatter}


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="reaper.yaml (default: $REAPER_CONFIG, ./reaper.yaml, /etc/reaper/reaper.yaml)",
    )


def add_shard_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        type=shard_argument,
        metavar="INDEX/COUNT",
        help="sweep only the backends that hash to this shard, e.g. 0/3 (overrides `shard:` "
        "in reaper.yaml; docs/scale.md)",
    )


def shard_argument(text: str) -> Shard:
    """argparse type for `--shard`: a usage error (exit 2) names what is wrong."""
    from reaper.policy.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load(args: argparse.Namespace) -> tuple[Config, PolicySet]:
    """The config named by --config / $REAPER_CONFIG / the defaults, and its policies, with
    `--shard` (when the command has it and it is given) in place of the config's `shard:`. The
    commands that call this go on to load credentials, so core dumps are forbidden first
    (`reaper.redact.forbid_core_dumps`). Raises ConfigNotFoundError or ConfigError (cli.main
    prints either and exits 78)."""
    from dataclasses import replace

    from reaper.policy.config import load_all, locate_config
    from reaper.redact import forbid_core_dumps

    forbid_core_dumps()

    config, policies = load_all(locate_config(args.config, os.environ, Path.cwd()))
    shard = getattr(args, "shard", None)
    return (config if shard is None else replace(config, shard=shard)), policies


def add_deadline_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline",
        default=DEFAULT_DEADLINE,
        metavar="DURATION",
        help="give up on listings still running after this long, and start no cancel after "
        f"it; those backends count as failed (default: {DEFAULT_DEADLINE})",
    )


def report_interrupted(
    command: str,
    interrupted: Interrupted[Any],
    done: str,
    left_behind: str = "an open intent is reconciled at the next start",
) -> int:
    """Say how a signal ended `command`; exit 130 (SIGINT) or 143 (SIGTERM). `done` says what
    was recorded. A call still hanging after the grace is left behind: the process exits now
    (`abandon`); `left_behind` says what becomes of it."""
    code = interrupted.exit_code
    if interrupted.finished:
        print(f"reaper {command}: interrupted by {interrupted.signal_name}; {done}",
              file=sys.stderr)  # fmt: skip
        return code
    print(f"reaper {command}: interrupted by {interrupted.signal_name}; a backend call was still "
          f"in flight and is abandoned ({left_behind})", file=sys.stderr)  # fmt: skip
    abandon(code)
    return code  # not reached


def abandon(code: int) -> None:
    """Exit now although worker threads still run (a backend call that outlived the stop grace):
    the interpreter would otherwise wait for them at exit. Not from a signal handler: from the
    main thread, after everything was closed and flushed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def add_lock_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-wait",
        default="0",
        metavar="DURATION",
        help="how long to wait for another reaper writing the same audit log to finish before "
        "giving up with exit 75 (default: 0, do not wait)",
    )


def option_seconds(args: argparse.Namespace, dest: str, *, zero_ok: bool = False) -> float | None:
    """A duration option (`--deadline`, `--lock-wait`) in seconds, or None (after printing why)
    when it is not a duration. `zero_ok`: "0" is allowed and means none (parse_duration refuses
    zero)."""
    text = str(getattr(args, dest))
    if zero_ok and text.strip() in ("0", "0s"):
        return 0.0
    try:
        return parse_duration(text).total_seconds()
    except DurationError as exc:
        option = "--" + dest.replace("_", "-")
        print(f"reaper {args.command}: {option}: {exc}", file=sys.stderr)
        return None


def add_wide_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wide", action="store_true", help="do not cut the NAME and REASON columns to fit"
    )


def table_width(wide: bool) -> int | None:
    """How wide a table may be: `$COLUMNS` when set, else the terminal's; None (no limit) with
    --wide or when stdout is not a terminal and `$COLUMNS` is unset (a pipe gets whole rows)."""
    if wide:
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def parse_now(text: str) -> datetime:
    """An ISO 8601 time with a zone (`2026-12-01T12:00:00Z`), as UTC. Raises
    argparse.ArgumentTypeError (exit 2) for a malformed or naive time: a zone-less time would
    be read in whichever zone the host happens to be in."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-12-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add Z or an offset, e.g. 2026-12-01T12:00:00Z"
        )
    return value.astimezone(UTC)


def add_now_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--now",
        metavar="TIME",
        type=parse_now,
        help="evaluate as if at this ISO 8601 time with a zone, e.g. 2026-12-01T12:00:00Z",
    )

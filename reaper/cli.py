"""Command line: parses arguments, runs one command, returns an exit code (docs/commands.md).

Every command lives in `reaper/commands/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`. Exit codes are `reaper.errors.ExitCode`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from reaper import __version__
from reaper.errors import ConfigError, ConfigNotFoundError, ExitCode, ReaperError
from reaper.service.logs import configure_logging
from reaper.service.signals import Terminated, terminate_as_exception

# Command name → module. Add a line here for a new command.
COMMANDS: dict[str, str] = {
    "validate": "reaper.commands.validate",
    "plan": "reaper.commands.plan",
    "explain": "reaper.commands.explain",
    "run": "reaper.commands.run",
    "audit": "reaper.commands.audit",
    "schema": "reaper.commands.schema",
    "test": "reaper.commands.test",
    "demo": "reaper.commands.demo",
    "daemon": "reaper.commands.daemon",
}


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command's sub-parser, or only `only`'s (to keep imports light)."""
    parser = argparse.ArgumentParser(prog="reaper", description="Policy-driven batch job reaper.")
    parser.add_argument("--version", action="version", version=f"reaper {__version__}")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)"
    )
    parser.set_defaults(run_command=main)  # lets a command (demo) run others without importing cli
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        _command_module(name).add_parser(subparsers)
    return parser


def _first_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `reaper` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _first_command(argv)
    parser = build_parser(only=command if "-h" not in argv and "--help" not in argv else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"reaper: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; the errors every command may raise become exit codes."""
    try:
        with terminate_as_exception():
            return int(_command_module(args.command).run(args))
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return ExitCode.CONFIG
    except ConfigNotFoundError as exc:
        print(f"reaper {args.command}: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except ReaperError as exc:  # e.g. the audit log cannot be opened: nothing was done
        print(f"reaper: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (loading the config)
        print(f"reaper {args.command}: interrupted by SIGINT", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Terminated:
        print(f"reaper {args.command}: interrupted by SIGTERM", file=sys.stderr)
        return ExitCode.TERMINATED


if __name__ == "__main__":
    sys.exit(main())

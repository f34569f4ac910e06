"""Command line: parses arguments, runs one command, returns an exit code (docs/commands.md).

Every command lives in `reaper/commands/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`. Exit codes are `reaper.errors.ExitCode`."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from reaper import __version__
from reaper.errors import ConfigError, ConfigNotFoundError, ExitCode, ReaperError, TemporaryError
from reaper.service.logs import configure_logging
from reaper.service.signals import Terminated, terminate_as_exception

EXIT_SIGPIPE = 128 + signal.SIGPIPE

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
    "completion": "reaper.commands.completion",
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
    # Let a command run others (demo) or see the whole parser (completion) without importing cli.
    parser.set_defaults(run_command=main, build_parser=build_parser)
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


def _run_command(args: argparse.Namespace) -> int:  # noqa: PLR0911 (one return per exit cause)
    """Run the chosen command, turning the errors every command shares into exit codes."""
    try:
        with terminate_as_exception():
            code = int(_command_module(args.command).run(args))
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
            return code
    except BrokenPipeError:
        return _stdout_closed()
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return ExitCode.CONFIG
    except ConfigNotFoundError as exc:
        print(f"reaper {args.command}: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except ReaperError as exc:  # e.g. the audit log cannot be opened: nothing was done
        print(f"reaper: {exc}", file=sys.stderr)
        # Another reaper holds the audit log: EX_TEMPFAIL, try again later.
        return ExitCode.TEMPFAIL if isinstance(exc, TemporaryError) else ExitCode.FAILED
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (loading the config)
        print(f"reaper {args.command}: interrupted by SIGINT", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Terminated:
        print(f"reaper {args.command}: interrupted by SIGTERM", file=sys.stderr)
        return ExitCode.TERMINATED


def _stdout_closed() -> int:
    """The reader went away (`reaper audit | head -1`): stop quietly, as a program killed by
    SIGPIPE would, and exit 141 (128 + SIGPIPE). stdout is pointed at /dev/null so that the
    interpreter's final flush does not raise again (Python docs, "Note on SIGPIPE"); SIGPIPE
    itself stays ignored, so that the daemon's sockets never kill the process."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
        pass
    return EXIT_SIGPIPE


if __name__ == "__main__":
    sys.exit(main())

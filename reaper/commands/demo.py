"""`reaper demo`: plan and one sweep against the built-in emulators, in a few seconds."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reaper.commands.common import examples
from reaper.errors import ExitCode


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="plan and one sweep against local emulators",
        description="Start loopback emulators of AWS Batch, Tapis and Sutro, seed them, write a "
        "config and policies, then run plan, one sweep and audit verify through the real clients.",
        **examples("reaper demo", "reaper demo --dir /tmp/reaper-demo"),
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="where to write the demo config and audit log (default: a new temp dir)",
    )


def run(args: argparse.Namespace) -> int:
    from reaper.emulators.world import emulated_world

    # The demo runs other commands through the command line's own entry point, which the CLI
    # hands to every command (`args.run_command`): a command never imports the CLI above it.
    cli_main: Callable[[list[str]], int] = args.run_command

    folder = args.dir or Path(tempfile.mkdtemp(prefix="reaper-demo-"))
    with emulated_world(folder) as world:
        config = str(world.config_path)
        _banner("reaper plan: what a sweep would do, and why (nothing is cancelled)")
        planned = cli_main(["plan", "--config", config])
        _banner("reaper run --once: one sweep through the real clients")
        swept = cli_main(["run", "--once", "--config", config])
        _banner("what the emulators report now")
        for name, emulator in world.emulators.items():
            print(f"{name}: {emulator.mutating_calls()} mutating calls received (cancel, event)")
    _banner(f"audit log: {world.audit_path}")
    verified = cli_main(["audit", "verify", "--file", str(world.audit_path)])
    print(f"\nconfig and policies kept in {folder}; query with:\n"
          f"  reaper audit --file {world.audit_path}")  # fmt: skip
    worst = max(planned, swept, verified)
    return ExitCode.OK if worst == ExitCode.OK else worst


def _banner(text: str) -> None:
    print(f"\n== {text}")

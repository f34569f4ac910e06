"""`reaper demo`: plan and one sweep against the built-in emulators, in a few seconds."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reaper.commands.common import examples
from reaper.errors import ExitCode

if TYPE_CHECKING:
    from reaper.emulators.base import EmulatorServer
    from reaper.emulators.world import World

# md-run-ladder's `grace: 3s` (reaper/emulators/demo-policies.yaml), and a little more.
LADDER_GRACE_S = 3.5


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
        swept = max(swept, _ladder(world, config, cli_main))
        _banner("what the emulators report now")
        for name, emulator in world.emulators.items():
            print(f"{name}: {emulator.mutating_calls()} mutating calls received (cancel, event)")
    _banner(f"audit log: {world.audit_path}")
    verified = cli_main(["audit", "verify", "--file", str(world.audit_path)])
    print(f"\nconfig and policies kept in {folder}; query with:\n"
          f"  reaper audit --file {world.audit_path}")  # fmt: skip
    worst = max(planned, swept, verified)
    return ExitCode.OK if worst == ExitCode.OK else worst


def _ladder(world: World, config: str, cli_main: Callable[[list[str]], int]) -> int:
    """The rest of the ladder: policy md-run-ladder warned md-run-0 and md-run-1 above; one of
    them finishes on its own, and a sweep after the grace cancels the other and clears the
    warning of the finished one."""
    hpc = world.emulators["hpc"]
    finished = _job_id(hpc, "md-run-1")
    if finished is not None:
        hpc.set_status(finished, "FINISHED")
        print("\n(hpc: md-run-1 finishes on its own during the grace period)")
    _banner(f"reaper run --once, {LADDER_GRACE_S:.0f}s later: the grace is over")
    time.sleep(LADDER_GRACE_S)
    return cli_main(["run", "--once", "--config", config])


def _job_id(emulator: EmulatorServer, name: str) -> str | None:
    """The id of the seeded job called `name` (the demo's ids are generated)."""
    return next((job.id for job in emulator.table.values() if job.record.get("name") == name), None)


def _banner(text: str) -> None:
    print(f"\n== {text}")

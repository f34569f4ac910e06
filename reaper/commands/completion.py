"""`reaper completion bash|zsh|tcsh`: a shell completion script generated from the argparse
parser by shtab (docs/commands.md), so it never drifts from the options. shtab has no fish
generator (github.com/tqdm/shtab issue 134), so `fish` says so rather than print a hand-written
script."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from reaper.commands.common import examples
from reaper.errors import ExitCode

SHELLS = ("bash", "zsh", "tcsh")
UNSUPPORTED = {"fish": "shtab, which generates reaper's completion, has no fish support yet"}


def add_parser(subparsers: Any) -> None:
    """Register `completion`."""
    parser = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description="Print a completion script for bash, zsh or tcsh, generated from reaper's "
        "own option parser (shtab). fish is not supported: shtab has no fish generator.",
        **examples(
            "reaper completion bash > /etc/bash_completion.d/reaper",
            'reaper completion zsh > "${fpath[1]}/_reaper"',
            'eval "$(reaper completion bash)"     # this shell only',
        ),
    )
    parser.add_argument("shell", choices=[*SHELLS, *UNSUPPORTED], help="the shell")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if args.shell in UNSUPPORTED:
        supported = ", ".join(SHELLS)
        print(f"reaper completion: {UNSUPPORTED[args.shell]}; use {supported}", file=err)
        return ExitCode.USAGE
    import shtab  # only this command needs it

    parser: argparse.ArgumentParser = args.build_parser()
    out.write(shtab.complete(parser, shell=args.shell))
    return ExitCode.OK

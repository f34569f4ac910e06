"""`reaper completion bash|zsh|tcsh|fish`: a shell completion script generated from the argparse
parser (docs/commands.md), so it never drifts from the options: by shtab for bash, zsh and tcsh;
for fish, which shtab does not generate (github.com/tqdm/shtab issue 134), by
`reaper.commands.fish` from the same parser."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from reaper.commands.common import examples
from reaper.errors import ExitCode

SHELLS = ("bash", "zsh", "tcsh", "fish")


def add_parser(subparsers: Any) -> None:
    """Register `completion`."""
    parser = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh, fish)",
        description="Print a completion script for bash, zsh, tcsh or fish, generated from "
        "reaper's own option parser (shtab; fish by reaper from the same parser).",
        **examples(
            "reaper completion bash > /etc/bash_completion.d/reaper",
            'reaper completion zsh > "${fpath[1]}/_reaper"',
            "reaper completion fish > ~/.config/fish/completions/reaper.fish",
            'eval "$(reaper completion bash)"     # this shell only',
        ),
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser: argparse.ArgumentParser = args.build_parser()
    if args.shell == "fish":
        from reaper.commands.fish import fish_script

        out.write(fish_script(parser))
        return ExitCode.OK
    import shtab  # only this command needs it

    out.write(shtab.complete(parser, shell=args.shell))
    return ExitCode.OK

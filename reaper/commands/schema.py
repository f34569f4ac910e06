"""`reaper schema [--config | --test]`: print the JSON Schema (draft-07) of policy files, of
reaper.yaml or of policy test files, for editors' YAML language servers (docs/commands.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from reaper.commands.common import examples
from reaper.errors import ExitCode
from reaper.policy.schema import schema_text


def add_parser(subparsers: Any) -> None:
    """Register `schema`."""
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of policy files",
        description=(
            "Print the JSON Schema (draft-07) of policy files; with --config, of reaper.yaml. "
            "Point your editor at it, e.g. `# yaml-language-server: $schema=policy.schema.json`."
        ),
        **examples(
            "reaper schema > policy.schema.json",
            "reaper schema --config > config.schema.json",
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", action="store_true", help="print the schema of reaper.yaml")
    which.add_argument(
        "--test", action="store_true", help="print the schema of policy test files (*.test.yaml)"
    )


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Print the schema; always succeeds."""
    out = stdout or sys.stdout
    out.write(schema_text("config" if args.config else "test" if args.test else "policy"))
    return ExitCode.OK

"""Pieces several commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reaper.policy.config import Config
    from reaper.policy.model import PolicySet


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="reaper.yaml (default: $REAPER_CONFIG, ./reaper.yaml, /etc/reaper/reaper.yaml)",
    )


def load(args: argparse.Namespace) -> tuple[Config, PolicySet]:
    """The config named by --config / $REAPER_CONFIG / the defaults, and its policies.
    Raises ConfigNotFoundError or ConfigError (cli.main prints either and exits 78)."""
    from reaper.policy.config import load_all, locate_config

    return load_all(locate_config(args.config, os.environ, Path.cwd()))

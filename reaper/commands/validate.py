"""`reaper validate [--config F] [PATH…]`: schema and semantic checks of the config and the
policies, with no network, no credentials and no SDK imports (docs/commands.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from reaper.errors import ConfigError, Diagnostic, ExitCode
from reaper.policy.config import (
    CONFIG_ENV,
    SYSTEM_CONFIG,
    Config,
    expand_policy_paths,
    find_config_path,
    load_all,
    load_config,
    load_policies,
)


def add_parser(subparsers: Any) -> None:
    """Register `validate`."""
    parser = subparsers.add_parser(
        "validate",
        help="check the config and the policies",
        description=(
            "Check reaper.yaml and the policies it points to, or the policy files and folders "
            "given. Prints every problem as FILE:LINE:COL: message. Exit 0 valid, 78 invalid."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the config (default: $REAPER_CONFIG, ./reaper.yaml, /etc/reaper/reaper.yaml)",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        type=Path,
        help="policy files or folders; with --config, checked against its backends",
    )


def run(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Validate and report; returns 0, 78 (invalid) or 2 (a named path does not exist)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    config_path = _config_path(args)
    missing = [p for p in [*args.paths, *([config_path] if config_path else [])] if not p.exists()]
    if missing:
        print(f"reaper validate: {_missing_message(missing[0], args)}", file=err)
        return ExitCode.USAGE
    try:
        summary = _validate(config_path, list(args.paths))
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=err)
        count = len(exc.diagnostics)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=err)
        return ExitCode.CONFIG
    print(summary, file=out)
    return ExitCode.OK


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config to check: --config always; otherwise only when no PATH is given."""
    if args.config or not args.paths:
        return find_config_path(args.config, os.environ)
    return None


def _missing_message(path: Path, args: argparse.Namespace) -> str:
    if args.config or args.paths:
        return f"no such file or folder: {path}"
    return (
        f"no config found (looked at ${CONFIG_ENV}, ./reaper.yaml and {SYSTEM_CONFIG}); "
        "give --config FILE or policy files and folders to check"
    )


def _validate(config_path: Path | None, paths: list[Path]) -> str:
    """Load everything; returns the one-line success summary or raises ConfigError."""
    if config_path is None:
        policy_set = load_policies(paths)
        files = len(expand_policy_paths(paths)[0])
        return _summary(files, len(policy_set.policies))
    if paths:
        config = load_config(config_path)
        policy_set = load_policies(paths, config.backends)
    else:
        config, policy_set = load_all(config_path)
        paths = [config.policies_path]
    notes = check_notifier_urls(config)
    files = len(expand_policy_paths(paths)[0])
    return "\n".join([*notes, f"{config_path}: ok; " + _summary(files, len(policy_set.policies))])


def check_notifier_urls(config: Config) -> list[str]:
    """Check with apprise each notifier URL known now (`url`, a set `url_env`, a readable
    `url_file`), rendered with sample values for its placeholders; apprise is imported only if
    there is one. Returns a note per notifier not checked; raises ConfigError (naming the
    notifier, never the URL) for one apprise cannot parse."""
    from reaper.backends.notify import NotifyError, can_parse, read_url

    notes: list[str] = []
    problems: list[tuple[str, str]] = []  # (notifier, message)
    for name, notifier in config.notifiers.items():
        try:
            url = read_url(name, notifier.source, notifier.ref, os.environ)
        except NotifyError as exc:
            notes.append(f"{exc}: its URL is not checked")
            continue
        sample = _sample_url(url)
        if sample is None:
            problems.append((name, "its URL has a placeholder that is not allowed"))
        elif not can_parse(sample):
            problems.append((name, "apprise cannot parse its URL (unknown scheme or form)"))
    if problems:
        located = _locate_notifiers(config.path)
        raise ConfigError(
            [
                Diagnostic(*located[name], f"notifier {name}: {message}")
                for name, message in problems
            ]
        )
    return notes


def _sample_url(url: str) -> str | None:
    """The URL with every placeholder rendered as `x` (None if one is not allowed)."""
    from reaper.policy.templates import TemplateError, compile_template, render_template

    try:
        template = compile_template(url)
    except TemplateError:
        return None
    names = {piece.name for piece in template.pieces if piece.name}
    tags = {piece.tag: "x" for piece in template.pieces if piece.tag}
    return render_template(template, dict.fromkeys(names, "x"), tags)


def _locate_notifiers(config_path: Path) -> dict[str, tuple[str, int, int]]:
    """Where each `notifiers:` entry is in the config file, for the diagnostics."""
    from reaper.policy.yamlsrc import Problem, load_yaml_file

    doc, _ = load_yaml_file(config_path)
    found = {}
    for name in doc.data.get("notifiers") or {}:
        where = doc.source.locate(Problem(("notifiers", name), ""))
        found[name] = (where.file, where.line, where.column)
    return found


def _summary(files: int, policies: int) -> str:
    return (
        f"{files} file{'s' if files != 1 else ''}, "
        f"{policies} polic{'ies' if policies != 1 else 'y'}: ok"
    )

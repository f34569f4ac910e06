"""`reaper validate [--config F] [PATH…]`: schema and semantic checks of the config and the
policies, with no network, no credentials and no SDK imports (docs/commands.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from reaper.commands.common import examples
from reaper.errors import ConfigError, ConfigNotFoundError, Diagnostic, ExitCode
from reaper.policy.config import (
    Config,
    expand_policy_paths,
    load_all,
    load_config,
    load_policies,
    locate_config,
)

SCHEMA_VERSION = 1


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    GITHUB = "github"


def add_parser(subparsers: Any) -> None:
    """Register `validate`."""
    parser = subparsers.add_parser(
        "validate",
        help="check the config and the policies",
        description=(
            "Check reaper.yaml and the policies it points to, or the policy files and folders "
            "given. Prints every problem as FILE:LINE:COL: message. Exit 0 valid, 78 invalid."
        ),
        **examples(
            "reaper validate                       # ./reaper.yaml and its policies",
            "reaper validate policies/             # policy files only, against every backend type",
            "reaper validate --format github       # annotations in a GitHub workflow",
            "reaper validate --json | jq .problems",
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the config (default: $REAPER_CONFIG, ./reaper.yaml, /etc/reaper/reaper.yaml)",
    )
    parser.add_argument(
        "--format",
        choices=[f.value for f in OutputFormat],
        default=OutputFormat.TEXT.value,
        help="text (default); json (one object on stdout); github (workflow annotations, "
        "::error file=…,line=…,col=…::message, on stdout)",
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
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
    """Validate and report; returns 0, 78 (invalid, or no config found) or 2 (a named policy
    path does not exist)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    fmt = OutputFormat(getattr(args, "format", OutputFormat.TEXT))
    try:
        config_path = _config_path(args)
    except ConfigNotFoundError as exc:  # the same answer as every other command (exit 78)
        _report_usage(fmt, f"reaper validate: {exc}", out, err)
        return ExitCode.CONFIG
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        message = f"reaper validate: no such file or folder: {missing[0]}"
        _report_usage(fmt, message, out, err)
        return ExitCode.USAGE
    try:
        summary = _validate(config_path, list(args.paths))
    except ConfigError as exc:
        _report_problems(fmt, exc.diagnostics, out, err)
        return ExitCode.CONFIG
    if fmt is OutputFormat.JSON:
        notes = list(summary.notes)
        counts = {"files": summary.files, "policies": summary.policies, "notes": notes}
        _dump({"ok": True, "summary": summary.text, "config": summary.config, **counts,
               "problems": []}, out)  # fmt: skip
    else:
        print(summary.text, file=out)
    return ExitCode.OK


def _report_usage(fmt: OutputFormat, message: str, out: TextIO, err: TextIO) -> None:
    if fmt is OutputFormat.JSON:
        _dump({"ok": False, "summary": message, "problems": []}, out)
    elif fmt is OutputFormat.GITHUB:
        print(f"::error::{_escape_data(message)}", file=out)
    print(message, file=err)


def _report_problems(
    fmt: OutputFormat, diagnostics: Sequence[Diagnostic], out: TextIO, err: TextIO
) -> None:
    count = len(diagnostics)
    found = f"{count} problem{'s' if count != 1 else ''} found"
    if fmt is OutputFormat.JSON:
        problems = [{"file": d.file, "line": d.line, "column": d.column, "message": d.message}
                    for d in diagnostics]  # fmt: skip
        _dump({"ok": False, "summary": found, "problems": problems}, out)
        return
    for diagnostic in diagnostics:
        if fmt is OutputFormat.GITHUB:
            print(github_annotation(diagnostic), file=out)
        print(diagnostic, file=err)
    print(found, file=err)


def _dump(body: dict[str, Any], out: TextIO) -> None:
    json.dump({"schema_version": SCHEMA_VERSION, **body}, out, indent=2)
    print(file=out)


def github_annotation(diagnostic: Diagnostic) -> str:
    """`::error file=F,line=L,col=C::message`, escaped as GitHub's workflow commands require
    (docs.github.com, "Workflow commands": `%`, CR and LF in the message; also `:` and `,` in
    property values)."""
    file = _escape_property(diagnostic.file)
    where = f"file={file},line={diagnostic.line},col={diagnostic.column}"
    return f"::error {where}::{_escape_data(diagnostic.message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config to check: --config always; otherwise only when no PATH is given. Raises
    ConfigNotFoundError."""
    if args.config or not args.paths:
        return locate_config(args.config, os.environ, Path.cwd())
    return None


@dataclass(frozen=True, slots=True)
class Summary:
    """What a successful validation checked."""

    config: str | None
    files: int
    policies: int
    notes: tuple[str, ...] = ()  # e.g. a notifier URL that could not be checked

    @property
    def text(self) -> str:
        """The notes, then `reaper.yaml: ok; 4 files, 5 policies: ok`."""
        counts = _summary(self.files, self.policies)
        line = counts if self.config is None else f"{self.config}: ok; {counts}"
        return "\n".join([*self.notes, line])


def _validate(config_path: Path | None, paths: list[Path]) -> Summary:
    """Load everything; returns what was checked or raises ConfigError."""
    if config_path is None:
        policy_set = load_policies(paths)
        files = len(expand_policy_paths(paths)[0])
        return Summary(None, files, len(policy_set.policies))
    if paths:
        config = load_config(config_path)
        policy_set = load_policies(paths, config.backends)
    else:
        config, policy_set = load_all(config_path)
        paths = [config.policies_path]
    notes = check_notifier_urls(config)
    files = len(expand_policy_paths(paths)[0])
    return Summary(str(config_path), files, len(policy_set.policies), tuple(notes))


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

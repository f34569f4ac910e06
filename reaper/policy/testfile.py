"""Policy test files (`*.test.yaml`, docs/testing.md): YAML with positions → JSON Schema
(schema/test.schema.json) → semantic checks, every problem a `file:line:col` Diagnostic in one
ConfigError, as the config loader reports them (reaper.policy.config).

A file holds `now`, optional `backends` (name → type) and guard overrides, and `cases`: each a
backend's raw record and what the policies must decide for it. Records are kept as the YAML gave
them, except that a plain scalar YAML read as a date or time becomes its text again: an API
answers JSON, which has no date type."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from reaper.errors import ConfigError, Diagnostic
from reaper.policy.config import TEST_SUFFIXES
from reaper.policy.schema import check_schema, load_schema
from reaper.policy.yamlsrc import NodePath, Problem, SourceMap, load_yaml_file


class ExpectedAction(StrEnum):
    CANCEL = "cancel"  # a policy decides the job and it is cancelled (or would be, in dry run)
    SKIP = "skip"  # a policy matches, then a guard holds the job (`cause`)
    WARN = "warn"  # a policy with a grace period matches: a warning, no cancel yet
    NONE = "none"  # no policy matches


@dataclass(frozen=True, slots=True)
class Expect:
    action: ExpectedAction
    policy: str | None = None
    cause: str | None = None
    reason_contains: tuple[str, ...] = ()
    facts_contain: tuple[str, ...] = ()
    dry_run: bool | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """One test case: a raw record of `backend` (of `backend_type`) and its expectation.
    `listing` groups cases decided together; `at` locates the case in its file."""

    name: str
    backend: str
    backend_type: str
    record: Mapping[str, Any]
    expect: Expect
    at: Diagnostic
    queue: str = ""
    listing: str | None = None
    index: int = 0  # position in the file


@dataclass(frozen=True, slots=True)
class Overrides:
    """Guard settings a test file sets instead of the config's."""

    max_cancels_per_sweep: int | None = None
    max_match_fraction: float | None = None
    protect_tag: str | None = None


@dataclass(frozen=True)
class TestFile:
    path: Path
    now: datetime
    cases: tuple[Case, ...]
    overrides: Overrides = field(default_factory=Overrides)
    source: SourceMap | None = None

    __test__ = False  # not a pytest class


def find_test_files(paths: Iterable[Path]) -> list[Path]:
    """The `*.test.yaml` / `*.test.yml` files named by `paths`: files as given, folders searched
    recursively (hidden folders and files skipped), each file once, sorted within a folder."""
    found: dict[Path, Path] = {}
    for path in paths:
        for file in [path] if path.is_file() else _tests_under(path):
            found.setdefault(file.resolve(), file)
    return list(found.values())


def is_test_file(path: Path) -> bool:
    return path.name.endswith(TEST_SUFFIXES)


def _tests_under(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.endswith(TEST_SUFFIXES):
                yield Path(root) / name


def load_test_files(paths: Sequence[Path], backend_types: Mapping[str, str]) -> list[TestFile]:
    """Load every file; `backend_types` (name → type, from the config) resolves the backend
    names a file does not define itself. Raises ConfigError with the problems of every file."""
    loaded, diagnostics = [], []
    for path in paths:
        try:
            loaded.append(load_test_file(path, backend_types))
        except ConfigError as exc:
            diagnostics.extend(exc.diagnostics)
    if diagnostics:
        raise ConfigError(diagnostics)
    return loaded


def load_test_file(path: Path, backend_types: Mapping[str, str]) -> TestFile:
    """One test file. Raises ConfigError with every problem, located `file:line:col`."""
    doc, _ = load_yaml_file(path)
    data = _texts_for_dates(doc.data, doc.source, ())
    problems = check_schema(data, doc.source, load_schema("test"))
    if problems:
        raise ConfigError([doc.source.locate(p) for p in problems])
    reader = _Reader(doc.source, {**backend_types, **(data.get("backends") or {})})
    now = reader.now(data["now"])
    cases = tuple(reader.case(i, raw) for i, raw in enumerate(data["cases"]))
    reader.check_unique_names(data["cases"])
    if reader.problems:
        raise ConfigError([doc.source.locate(p) for p in reader.problems])
    assert now is not None  # a bad `now` is a problem above
    limits = data.get("limits") or {}
    overrides = Overrides(
        max_cancels_per_sweep=limits.get("max_cancels_per_sweep"),
        max_match_fraction=limits.get("max_match_fraction"),
        protect_tag=data.get("protect_tag"),
    )
    return TestFile(path, now, cases, overrides, doc.source)


def _texts_for_dates(value: Any, source: SourceMap, path: NodePath) -> Any:
    """`value` with every date or time YAML made of a plain scalar turned back into its text."""
    if isinstance(value, dict):
        return {k: _texts_for_dates(v, source, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts_for_dates(v, source, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, date | datetime):
        return source.plain_text(path) or value.isoformat()
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class _Reader:
    """The semantic checks the schema cannot make, collecting problems."""

    def __init__(self, source: SourceMap, backend_types: Mapping[str, str]) -> None:
        self.source = source
        self.backend_types = backend_types
        self.problems: list[Problem] = []

    def now(self, text: str) -> datetime | None:
        try:
            now = datetime.fromisoformat(text)
        except ValueError:
            now = None
        if now is None or now.tzinfo is None:
            example = '"2026-12-01T12:00:00Z"'
            message = f"now must be an ISO 8601 time with a zone, e.g. {example}; got {text!r}"
            self.problems.append(Problem(("now",), message))
            return None
        return now

    def case(self, index: int, raw: Mapping[str, Any]) -> Case:
        path: NodePath = ("cases", index)
        backend = raw["backend"]
        backend_type = self.backend_types.get(backend)
        if backend_type is None:
            self.problems.append(Problem((*path, "backend"), self._unknown_backend(backend)))
        expect = self.expect((*path, "expect"), raw["expect"])
        at = self.source.locate(Problem(path, ""))
        return Case(
            name=raw["name"],
            backend=backend,
            backend_type=backend_type or "",
            record=raw["record"],
            expect=expect,
            at=Diagnostic(at.file, at.line, at.column, ""),
            queue=raw.get("queue", ""),
            listing=raw.get("listing"),
            index=index,
        )

    def expect(self, path: NodePath, raw: Mapping[str, Any]) -> Expect:
        action = ExpectedAction(raw["action"])
        if "cause" in raw and action is not ExpectedAction.SKIP:
            message = f"cause goes with action skip, not {action.value}"
            self.problems.append(Problem((*path, "cause"), message, at_key=True))
        if "dry_run" in raw and action is not ExpectedAction.CANCEL:
            message = f"dry_run goes with action cancel, not {action.value}"
            self.problems.append(Problem((*path, "dry_run"), message, at_key=True))
        for key in ("reason_contains", "facts_contain"):
            if key in raw and action is ExpectedAction.NONE:
                message = f"{key} needs a policy to match: action none has no reason or facts"
                self.problems.append(Problem((*path, key), message, at_key=True))
        return Expect(
            action=action,
            policy=raw.get("policy"),
            cause=raw.get("cause"),
            reason_contains=_strings(raw.get("reason_contains")),
            facts_contain=_strings(raw.get("facts_contain")),
            dry_run=raw.get("dry_run"),
        )

    def check_unique_names(self, cases: Sequence[Mapping[str, Any]]) -> None:
        first: dict[str, int] = {}
        for index, case in enumerate(cases):
            name = case["name"]
            if name in first:
                line = self.source.value_position(("cases", first[name], "name")).line
                message = f"case name {name!r} is already used at line {line}"
                self.problems.append(Problem(("cases", index, "name"), message))
            else:
                first[name] = index

    def _unknown_backend(self, name: str) -> str:
        message = f"unknown backend {name!r}"
        close = difflib.get_close_matches(name, list(self.backend_types), n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean {close[0]!r}?"
        known = ", ".join(sorted(self.backend_types)) or "none"
        return f"{message}: give its type under `backends:` (known: {known})"

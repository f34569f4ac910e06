"""Compiled policy selectors: each one tests a job and says why it holds (DESIGN.md §2.2).

A selector is compiled once from the policy mapping; `explain` returns the facts that made it
true, or None. Evaluation never raises on any job a backend can produce: a value of the wrong
type simply does not match.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from reaper.durations import DurationError, format_duration, parse_duration
from reaper.globs import Pattern, PatternError, compile_glob
from reaper.jobs import PHASES, Job, Phase
from reaper.where import PathPart, Problems, WhereClause, compile_where

# Canonical order: facts (and so generated reasons) list the numbers first.
SELECTOR_KEYS = (
    "max_runtime", "max_pending", "max_age", "queues", "names", "statuses", "tags", "where",
)  # fmt: skip
GROUPS = (Phase.PENDING.value, Phase.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Fact:
    """One reason a selector held, e.g. `runtime 13h02m > max_runtime 12h`."""

    selector: str
    text: str


class Selector(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def needs_detail(self) -> bool: ...

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None: ...


@dataclass(frozen=True, slots=True)
class GlobSelector:
    """`queues` / `names`: the job's queue or name matches any of the globs."""

    key: str
    attribute: str  # "queue" | "name"
    patterns: tuple[Pattern, ...]
    needs_detail: ClassVar[bool] = False

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        value = str(getattr(job, self.attribute))
        for pattern in self.patterns:
            if pattern.matches(value):
                shown = _quote_empty(value)
                return (Fact(self.key, f"{self.attribute} {shown} ~ {pattern.text}"),)
        return None


def _quote_empty(value: str) -> str:
    """An empty queue (Sutro) or tag value is shown as `""` so that a fact still reads."""
    return value or '""'


@dataclass(frozen=True, slots=True)
class StatusSelector:
    """`statuses`: the exact lower-case words `pending` / `running` name a phase group; any
    other entry is a native status, compared case-insensitively with `job.status`."""

    groups: frozenset[Phase]
    natives: tuple[tuple[str, str], ...]  # (as written, upper-cased)
    key: ClassVar[str] = "statuses"
    needs_detail: ClassVar[bool] = False

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        status = job.status.upper()
        for written, upper in self.natives:
            if status == upper:
                return (Fact(self.key, f"status {job.status} = {written}"),)
        if job.phase in self.groups:
            return (Fact(self.key, f"status {job.status} in {job.phase.value}"),)
        return None


@dataclass(frozen=True, slots=True)
class TagSelector:
    """`tags`: every key is present and its value matches the glob (`*` = any value, even empty)."""

    items: tuple[tuple[str, Pattern], ...]
    key: ClassVar[str] = "tags"
    needs_detail: ClassVar[bool] = True

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        facts = []
        for name, pattern in self.items:
            value = job.tags.get(name)
            if not isinstance(value, str) or not pattern.matches(value):
                return None
            shown = _quote_empty(value)
            facts.append(Fact(self.key, f"tag {name}={shown} ~ {pattern.text}"))
        return tuple(facts)


class Measure(StrEnum):
    RUNTIME = "runtime"
    PENDING = "pending"
    AGE = "age"


@dataclass(frozen=True, slots=True)
class DurationSelector:
    """`max_runtime`: started (started_at set), now - started_at > limit.
    `max_pending`: not started (started_at None), now - created_at > limit.
    `max_age`: now - created_at > limit, whatever the state.
    Terminal jobs never reach a selector (see `reaper.policy.evaluate`)."""

    measure: Measure
    limit: timedelta
    text: str  # the limit as written, shown in facts and `{max_runtime}`
    needs_detail: ClassVar[bool] = False

    @property
    def key(self) -> str:
        return f"max_{self.measure.value}"

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        measured = _measure(job, self.measure, now)
        if measured is None or measured <= self.limit:
            return None
        shown = format_duration(measured)
        return (Fact(self.key, f"{self.measure.value} {shown} > {self.key} {self.text}"),)


def _measure(job: Job, measure: Measure, now: datetime) -> timedelta | None:
    if measure is Measure.RUNTIME:
        return job.runtime(now)
    if measure is Measure.PENDING:
        return job.pending(now)
    return job.age(now)


@dataclass(frozen=True, slots=True)
class WhereSelector:
    """`where`: every operator of every path holds on `job.raw`."""

    clauses: tuple[WhereClause, ...]
    key: ClassVar[str] = "where"
    needs_detail: ClassVar[bool] = True

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        facts = []
        for clause in self.clauses:
            text = clause.explain(job.raw)
            if text is None:
                return None
            facts.append(Fact(self.key, text))
        return tuple(facts)


@dataclass(frozen=True, slots=True)
class SelectorBlock:
    """The selectors of a policy (or of its `exclude:`); all must hold."""

    selectors: tuple[Selector, ...]

    @property
    def needs_detail(self) -> bool:
        return any(selector.needs_detail for selector in self.selectors)

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        """The facts of every selector, in SELECTOR_KEYS order, or None if one does not hold."""
        facts: list[Fact] = []
        for selector in self.selectors:
            found = selector.explain(job, now)
            if found is None:
                return None
            facts.extend(found)
        return tuple(facts)

    def maybe(self, job: Job, now: datetime) -> bool:
        """False only if a selector a listing can answer (not tags, not where) fails."""
        return all(
            selector.explain(job, now) is not None
            for selector in self.selectors
            if not selector.needs_detail
        )

    def limit_text(self, key: str) -> str | None:
        """The duration limit as written for `max_runtime` / `max_pending` / `max_age`."""
        for selector in self.selectors:
            if isinstance(selector, DurationSelector) and selector.key == key:
                return selector.text
        return None


def compile_block(
    raw: Mapping[str, Any],
    path: tuple[PathPart, ...],
    target_types: Collection[str],
    problems: Problems,
) -> SelectorBlock:
    """Compile the selector keys of `raw`; append every problem found (path, message) to
    `problems` instead of raising. Keys that are not selectors are ignored here."""
    selectors: list[Selector] = []
    for key in SELECTOR_KEYS:
        if key in raw:
            selector = _compile_one(key, raw[key], (*path, key), target_types, problems)
            if selector is not None:
                selectors.append(selector)
    return SelectorBlock(tuple(selectors))


def _compile_one(
    key: str,
    value: Any,
    path: tuple[PathPart, ...],
    target_types: Collection[str],
    problems: Problems,
) -> Selector | None:
    if key.startswith("max_"):
        return _compile_duration(Measure(key.removeprefix("max_")), value, path, problems)
    if key in ("queues", "names"):
        patterns = _compile_globs(value, path, problems)
        return GlobSelector(key, key[:-1], patterns) if patterns else None
    if key == "statuses":
        return _compile_statuses(value, path, target_types, problems)
    if key == "tags":
        return _compile_tags(value, path, problems)
    clauses = compile_where(value, path, problems)
    return WhereSelector(clauses) if clauses else None


def _compile_duration(
    measure: Measure, value: Any, path: tuple[PathPart, ...], problems: Problems
) -> DurationSelector | None:
    try:
        return DurationSelector(measure, parse_duration(value), value)
    except DurationError as exc:
        problems.append((path, str(exc)))
        return None


def _string_list(value: Any, path: tuple[PathPart, ...], problems: Problems) -> list[str]:
    """The items of a non-empty list of non-empty strings; problems for anything else."""
    if not isinstance(value, list) or not value:
        problems.append(
            (path, "expected a non-empty list of strings (an empty list matches nothing)")
        )
        return []
    good = []
    for index, item in enumerate(value):
        if isinstance(item, str) and item:
            good.append(item)
        else:
            problems.append(((*path, index), f"expected a non-empty string, got {item!r}"))
    return good if len(good) == len(value) else []


def _compile_globs(
    value: Any, path: tuple[PathPart, ...], problems: Problems
) -> tuple[Pattern, ...]:
    patterns = []
    for index, text in enumerate(_string_list(value, path, problems)):
        try:
            patterns.append(compile_glob(text))
        except PatternError as exc:
            problems.append(((*path, index), str(exc)))
    return tuple(patterns)


def _compile_statuses(
    value: Any, path: tuple[PathPart, ...], target_types: Collection[str], problems: Problems
) -> StatusSelector | None:
    groups: set[Phase] = set()
    natives: list[tuple[str, str]] = []
    entries = _string_list(value, path, problems)
    for index, status in enumerate(entries):
        if status in GROUPS:
            groups.add(Phase(status))
            continue
        problem = _check_native_status(status, target_types)
        if problem:
            problems.append(((*path, index), problem))
        natives.append((status, status.upper()))
    if not entries or len(natives) + len(groups) < len(entries):
        return None
    return StatusSelector(frozenset(groups), tuple(natives))


def _check_native_status(status: str, target_types: Collection[str]) -> str | None:
    """Why `status` is not an active native status of any target type, or None if it is."""
    upper = status.upper()
    phases = {PHASES[t][upper] for t in target_types if t in PHASES and upper in PHASES[t]}
    if phases & {Phase.PENDING, Phase.RUNNING}:
        return None
    types = ", ".join(sorted(target_types)) or "(no backend)"
    if phases:
        return (
            f"status {status!r} is terminal for {types}: reaper only considers pending and "
            "running jobs, so this policy could never match"
        )
    hint = " (groups are lower case: pending, running)" if upper.lower() in GROUPS else ""
    return f"unknown status {status!r} for {types}: use a native status or a group{hint}"


def _compile_tags(value: Any, path: tuple[PathPart, ...], problems: Problems) -> TagSelector | None:
    if not isinstance(value, Mapping) or not value:
        problems.append((path, "expected a non-empty mapping of tag key to value glob"))
        return None
    items = []
    for name, glob in value.items():
        if not isinstance(name, str) or not isinstance(glob, str):
            problems.append(
                ((*path, str(name)), f"tag value must be a string (quote it), got {glob!r}")
            )
            continue
        try:
            items.append((name, compile_glob(glob)))
        except PatternError as exc:
            problems.append(((*path, name), str(exc)))
    return TagSelector(tuple(items)) if len(items) == len(value) else None

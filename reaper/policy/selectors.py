"""Compiled policy selectors: each one tests a job and says why it holds (docs/policies.md).

A selector is compiled once from the policy mapping; `explain` returns the facts that made it
true, or None. Evaluation never raises on any job a backend can produce: a value of the wrong
type simply does not match. `checks` says, holding or not, what each part observed and needed
(`reaper explain`, reaper.policy.explain).

Each selector also answers `holds(job, now)`, true exactly when `explain` is not None, without
building facts (most jobs match nothing: the facts are only worth building for the ones that
do); `compile_test(now)`, the same as a one-argument predicate for a fixed `now` (a sweep's
index, reaper.policy.index); `reads`, the Job fields the answer depends on; and `cost`, to test
the cheap selectors first.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from functools import partial
from operator import attrgetter
from typing import Any, ClassVar, Protocol

from reaper.jobs import (
    ACTIVE_PHASES,
    JOB_KINDS,
    PHASES,
    STARTED_PHASES,
    Job,
    JobKind,
    Phase,
    active_statuses,
)
from reaper.policy.durations import DurationError, format_duration, parse_duration
from reaper.policy.globs import Pattern, PatternError, compile_glob
from reaper.policy.where import PathPart, Problems, WhereClause, compile_where

# Canonical order: facts (and so generated reasons) list the numbers first.
SELECTOR_KEYS = (
    "max_runtime", "max_pending", "max_age", "queues", "names", "statuses", "kinds", "tags",
    "where",
)  # fmt: skip
# The backend types whose jobs have a kind (reaper.jobs.JobKind).
KIND_TYPES = frozenset(("aws_batch",))
GROUPS = (Phase.PENDING.value, Phase.RUNNING.value)
GROUP_WORDS = ", ".join(GROUPS)

Test = Callable[[Job], bool]  # `explain(job, now) is not None`, for one `now`


@dataclass(frozen=True, slots=True)
class Fact:
    """One reason a selector held, e.g. `runtime 13h02m > max_runtime 12h`."""

    selector: str
    text: str


@dataclass(frozen=True, slots=True)
class Check:
    """One part of a selector on one job, holding or not, e.g. clause `max_runtime`, observed
    `runtime 1h02m`, needed `> 12h`, holds False. `clause` names the selector (`tags.team` and
    `where.PATH` per item)."""

    clause: str
    observed: str
    needed: str
    holds: bool


class Selector(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def needs_detail(self) -> bool: ...

    @property
    def reads(self) -> frozenset[str]: ...

    @property
    def cost(self) -> int: ...

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None: ...

    def holds(self, job: Job, now: datetime) -> bool: ...

    def compile_test(self, now: datetime) -> Test: ...

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]: ...


@dataclass(frozen=True, slots=True)
class GlobSelector:
    """`queues` / `names`: the job's queue or name matches any of the globs."""

    key: str
    attribute: str  # "queue" | "name"
    patterns: tuple[Pattern, ...]
    needs_detail: ClassVar[bool] = False
    cost: ClassVar[int] = 2

    @property
    def reads(self) -> frozenset[str]:
        return frozenset((self.attribute,))

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        value = str(getattr(job, self.attribute))
        for pattern in self.patterns:
            if pattern.matches(value):
                shown = _quote_empty(value)
                return (Fact(self.key, f"{self.attribute} {shown} ~ {pattern.text}"),)
        return None

    def holds(self, job: Job, now: datetime) -> bool:
        value = str(getattr(job, self.attribute))
        return any(pattern.matcher(value) for pattern in self.patterns)

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """One check; holds exactly when `holds` does."""
        value = str(getattr(job, self.attribute))
        needed = "~ " + " or ".join(pattern.text for pattern in self.patterns)
        return (Check(self.key, _quote_empty(value), needed, self.holds(job, now)),)

    def compile_test(self, now: datetime) -> Test:
        read = attrgetter(self.attribute)
        if len(self.patterns) == 1:  # the usual case, worth a shorter path
            matcher = self.patterns[0].matcher
            return lambda job: matcher(str(read(job)))
        return partial(self.holds, now=now)


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
    reads: ClassVar[frozenset[str]] = frozenset(("status", "phase"))
    cost: ClassVar[int] = 1
    uppers: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uppers", frozenset(upper for _, upper in self.natives))

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        status = job.status.upper()
        for written, upper in self.natives:
            if status == upper:
                return (Fact(self.key, f"status {job.status} = {written}"),)
        if job.phase in self.groups:
            return (Fact(self.key, f"status {job.status} in {job.phase.value}"),)
        return None

    def holds(self, job: Job, now: datetime) -> bool:
        return job.status.upper() in self.uppers or job.phase in self.groups

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """One check; holds exactly when `holds` does."""
        wanted = [written for written, _ in self.natives] + sorted(self.groups)
        observed = f"{job.status} ({job.phase.value})"
        return (Check(self.key, observed, "one of " + ", ".join(wanted), self.holds(job, now)),)

    def compile_test(self, now: datetime) -> Test:
        return partial(self.holds, now=now)


@dataclass(frozen=True, slots=True)
class KindSelector:
    """`kinds`: the job's kind (AWS Batch `container` or `service`) is one of those named; a job
    of a backend without kinds (Tapis, Sutro) never matches."""

    kinds: frozenset[JobKind]
    key: ClassVar[str] = "kinds"
    needs_detail: ClassVar[bool] = False
    reads: ClassVar[frozenset[str]] = frozenset(("kind",))
    cost: ClassVar[int] = 1

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        if job.kind not in self.kinds:
            return None
        return (Fact(self.key, f"kind {job.kind} in {self._named()}"),)

    def holds(self, job: Job, now: datetime) -> bool:
        return job.kind in self.kinds

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """One check; holds exactly when `holds` does."""
        observed = str(job.kind) if job.kind is not None else "none (the backend has no kinds)"
        return (Check(self.key, observed, f"one of {self._named()}", self.holds(job, now)),)

    def compile_test(self, now: datetime) -> Test:
        kinds = self.kinds
        return lambda job: job.kind in kinds

    def _named(self) -> str:
        return ", ".join(kind for kind in JOB_KINDS if kind in self.kinds)


@dataclass(frozen=True, slots=True)
class TagSelector:
    """`tags`: every key is present and its value matches the glob (`*` = any value, even empty)."""

    items: tuple[tuple[str, Pattern], ...]
    key: ClassVar[str] = "tags"
    needs_detail: ClassVar[bool] = True
    reads: ClassVar[frozenset[str]] = frozenset(("tags",))
    cost: ClassVar[int] = 3

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        facts = []
        for name, pattern in self.items:
            value = job.tags.get(name)
            if not isinstance(value, str) or not pattern.matches(value):
                return None
            shown = _quote_empty(value)
            facts.append(Fact(self.key, f"tag {name}={shown} ~ {pattern.text}"))
        return tuple(facts)

    def holds(self, job: Job, now: datetime) -> bool:
        tags = job.tags
        for name, pattern in self.items:
            value = tags.get(name)
            if not isinstance(value, str) or not pattern.matcher(value):
                return False
        return True

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """One check per tag key; all hold exactly when `holds` does."""
        found = []
        for name, pattern in self.items:
            value = job.tags.get(name)
            holds = isinstance(value, str) and pattern.matches(value)
            shown = _quote_empty(value) if isinstance(value, str) else "missing"
            found.append(Check(f"tags.{name}", shown, f"~ {pattern.text}", holds))
        return tuple(found)

    def compile_test(self, now: datetime) -> Test:
        if len(self.items) == 1:  # the usual case, worth a shorter path
            ((name, pattern),) = self.items
            matcher = pattern.matcher

            def test(job: Job) -> bool:
                value = job.tags.get(name)
                return isinstance(value, str) and matcher(value)

            return test
        return partial(self.holds, now=now)


class Measure(StrEnum):
    RUNTIME = "runtime"
    PENDING = "pending"
    AGE = "age"


@dataclass(frozen=True, slots=True)
class DurationSelector:
    """`max_runtime`: a job in a started phase with a plausible start, now - started_at > limit.
    `max_pending`: a job in a pending phase that records no start, now - created_at > limit.
    `max_age`: now - created_at > limit, whatever the state.
    Every time goes through the Job's plausibility checks first (`Job.started_if_plausible`,
    `Job.pending_since`, `Job.created_if_plausible`): a job whose record cannot support the
    fact is never matched by the selector. Terminal jobs never reach a selector (see
    `reaper.policy.model.evaluate`)."""

    measure: Measure
    limit: timedelta
    text: str  # the limit as written, shown in facts and `{max_runtime}`
    needs_detail: ClassVar[bool] = False
    reads: ClassVar[frozenset[str]] = frozenset(("started_at", "created_at", "phase"))
    cost: ClassVar[int] = 0

    @property
    def key(self) -> str:
        return f"max_{self.measure.value}"

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        measured = _measure(job, self.measure, now)
        if measured is None or measured <= self.limit:
            return None
        shown = format_duration(measured)
        return (Fact(self.key, f"{self.measure.value} {shown} > {self.key} {self.text}"),)

    def holds(self, job: Job, now: datetime) -> bool:
        measured = _measure(job, self.measure, now)
        return measured is not None and measured > self.limit

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """One check; holds exactly when `holds` does."""
        measured = _measure(job, self.measure, now)
        if measured is None:
            observed = f"{self.measure.value} n/a ({_why_unmeasured(job, self.measure, now)})"
        else:
            observed = f"{self.measure.value} {format_duration(measured)}"
        return (Check(self.key, observed, f"> {self.text}", self.holds(job, now)),)

    def compile_test(self, now: datetime) -> Test:
        """The measure exceeds the limit iff the time it counts from is before `now - limit`
        (the measures clamp at zero and a compiled limit is positive), one comparison instead
        of a subtraction. Only for a fixed-offset `now`: with a zone that has daylight saving
        time, `now - limit` and `now - time` would not move the same wall clock."""
        if not isinstance(now.tzinfo, timezone) or self.limit < timedelta(0):
            return partial(self.holds, now=now)
        try:
            cutoff = now - self.limit
        except OverflowError:  # before year 1: no job's time can be that early
            return lambda job: False
        since = _SINCE[self.measure]

        def test(job: Job) -> bool:
            moment = since(job, now)
            return moment is not None and moment < cutoff

        return test


def _why_unmeasured(job: Job, measure: Measure, now: datetime) -> str:
    """Why a job has no runtime / pending time / age (reaper.jobs time facts)."""
    problem = job.time_problem(now)
    if measure is Measure.RUNTIME:
        if job.phase not in STARTED_PHASES:
            return f"not started: phase {job.phase.value}"
        return "no start time" if job.started_at is None else problem or "implausible start"
    if measure is Measure.PENDING:
        if job.phase is not Phase.PENDING:
            return f"not pending: phase {job.phase.value}"
        if job.started_at is not None:
            return "records a start"
    return problem or "implausible creation time"


_SINCE: Mapping[Measure, Callable[[Job, datetime], datetime | None]] = {
    Measure.RUNTIME: Job.started_if_plausible,
    Measure.PENDING: Job.pending_since,
    Measure.AGE: Job.created_if_plausible,
}


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
    reads: ClassVar[frozenset[str]] = frozenset(("raw",))
    cost: ClassVar[int] = 4

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        facts = []
        for clause in self.clauses:
            text = clause.explain(job.raw)
            if text is None:
                return None
            facts.append(Fact(self.key, text))
        return tuple(facts)

    def holds(self, job: Job, now: datetime) -> bool:
        return all(clause.holds(job.raw) for clause in self.clauses)

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """One check per operator; all hold exactly when `holds` does."""
        found = []
        for clause in self.clauses:
            observed, needed, holds = clause.observe(job.raw)
            found.append(Check(f"where.{clause.path}", observed, needed, holds))
        return tuple(found)

    def compile_test(self, now: datetime) -> Test:
        return partial(self.holds, now=now)


@dataclass(frozen=True, slots=True)
class SelectorBlock:
    """The selectors of a policy (or of its `exclude:`); all must hold."""

    selectors: tuple[Selector, ...]
    by_cost: tuple[Selector, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.selectors, key=lambda selector: selector.cost)  # stable
        object.__setattr__(self, "by_cost", tuple(ordered))

    @property
    def needs_detail(self) -> bool:
        return any(selector.needs_detail for selector in self.selectors)

    def holds(self, job: Job, now: datetime) -> bool:
        """True exactly when `explain` is not None; tests the cheap selectors first."""
        return all(selector.holds(job, now) for selector in self.by_cost)

    def explain(self, job: Job, now: datetime) -> tuple[Fact, ...] | None:
        """The facts of every selector, in SELECTOR_KEYS order, or None if one does not hold."""
        facts: list[Fact] = []
        for selector in self.selectors:
            found = selector.explain(job, now)
            if found is None:
                return None
            facts.extend(found)
        return tuple(facts)

    def names_status(self, status: str) -> bool:
        """True if a `statuses` selector of the block names `status` itself (not a group)."""
        upper = status.upper()
        return any(
            isinstance(selector, StatusSelector) and upper in selector.uppers
            for selector in self.selectors
        )

    def checks(self, job: Job, now: datetime) -> tuple[Check, ...]:
        """Every selector's checks, in SELECTOR_KEYS order, holding or not; all hold exactly
        when `holds` does."""
        return tuple(check for selector in self.selectors for check in selector.checks(job, now))

    def maybe(self, job: Job, now: datetime) -> bool:
        """False only if a selector a listing can answer (not tags, not where) fails."""
        return all(
            selector.holds(job, now) for selector in self.by_cost if not selector.needs_detail
        )

    def limit_text(self, key: str) -> str | None:
        """The duration limit as written for `max_runtime` / `max_pending` / `max_age`."""
        found = self.duration_selector(key)
        return None if found is None else found.text

    def duration_selector(self, key: str) -> DurationSelector | None:
        """The `max_runtime` / `max_pending` / `max_age` selector of this block, if any."""
        for selector in self.selectors:
            if isinstance(selector, DurationSelector) and selector.key == key:
                return selector
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
        if key not in raw:
            continue
        before = len(problems)
        selector = _compile_one(key, raw[key], (*path, key), target_types, problems)
        if selector is not None:
            selectors.append(selector)
        elif len(problems) == before:
            # Fail closed: a selector dropped without a problem would widen the policy.
            problems.append(((*path, key), f"{key} could not be compiled"))
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
    if key == "kinds":
        return _compile_kinds(value, path, target_types, problems)
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
    before = len(problems)
    groups: set[Phase] = set()
    natives: list[tuple[str, str]] = []
    for index, status in enumerate(_string_list(value, path, problems)):
        if status in GROUPS:
            groups.add(Phase(status))
            continue
        problem = _check_native_status(status, target_types)
        if problem:
            problems.append(((*path, index), problem))
        natives.append((status, status.upper()))
    if len(problems) > before:
        return None
    return StatusSelector(frozenset(groups), tuple(natives))


def _check_native_status(status: str, target_types: Collection[str]) -> str | None:
    """Why `status` is not an active native status of any target type, or None if it is."""
    upper = status.upper()
    phases = {PHASES[t][upper] for t in target_types if t in PHASES and upper in PHASES[t]}
    if phases & ACTIVE_PHASES:
        return None
    types = ", ".join(sorted(target_types)) or "(no backend)"
    if phases:
        return (
            f"status {status!r} is terminal for {types}: reaper only considers pending and "
            "running jobs, so this policy could never match"
        )
    message = f"unknown status {status!r} for {types}"
    if upper.lower() in GROUPS:
        return f"{message}: use a native status or a group (groups are lower case: {GROUP_WORDS})"
    return message + _status_suggestion(status, target_types)


def _status_suggestion(status: str, target_types: Collection[str]) -> str:
    """ "; did you mean 'running'? Valid: …" naming the groups and the active native statuses of
    the targeted types, like the schema's did-you-mean for keys and enums."""
    valid = list(GROUPS)
    for backend_type in sorted(target_types):
        if backend_type in PHASES:
            valid.extend(s for s in active_statuses(backend_type) if s not in valid)
    by_upper = {v.upper(): v for v in valid}
    if status.islower():  # `runing` means the group `running` rather than RUNNING
        by_upper.update({g.upper(): g for g in GROUPS})
    close = difflib.get_close_matches(status.upper(), list(by_upper), n=1, cutoff=0.6)
    guess = f"; did you mean {by_upper[close[0]]!r}?" if close else ";"
    return f"{guess} valid: {', '.join(valid)}"


def _compile_kinds(
    value: Any, path: tuple[PathPart, ...], target_types: Collection[str], problems: Problems
) -> KindSelector | None:
    """`kinds: [container, service]`; only AWS Batch jobs have a kind, so a policy that can
    reach no AWS Batch backend could never match."""
    before = len(problems)
    kinds: set[JobKind] = set()
    valid = [str(kind) for kind in JOB_KINDS]
    for index, name in enumerate(_string_list(value, path, problems)):
        if name in valid:
            kinds.add(JobKind(name))
            continue
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        guess = f"; did you mean {close[0]!r}?" if close else ";"
        problems.append(((*path, index), f"unknown kind {name!r}{guess} valid: {', '.join(valid)}"))
    if not KIND_TYPES & set(target_types):
        types = ", ".join(sorted(target_types)) or "(no backend)"
        message = (f"only AWS Batch jobs have a kind, and this policy reaches {types} only: it "
                   "could never match")  # fmt: skip
        problems.append((path, message))
    return KindSelector(frozenset(kinds)) if len(problems) == before else None


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

"""`reaper test --record`: list a live backend (read-only) and turn its real records into a
policy test file whose expectations are the decisions of today (docs/testing.md, "Recording").

Only list and enrich calls are made. What is kept of each record is what decides: the fields
the backend's parser reads (reaper.backends.records), the paths the policies' `where` clauses
read, and the tags a policy, a reason or the protect tag reads; everything else may hold secrets
(AWS container environments, command lines) or personal data and is dropped. Owner fields and
the other tags are kept only with `keep_owners`. Every string left is run through
reaper.redact as well.

The expectations are the outcomes of the recorded cases replayed as one listing through
reaper.engine.policytest, so the file passes `reaper test` unchanged; where the cut to `limit`
or `policy` changes a guard's outcome from the live listing's, a warning names the case."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reaper.backends.base import Backend
from reaper.backends.records import owner_fields, record_fields
from reaper.engine.decide import Guards
from reaper.engine.policytest import Outcome, describe, run_listing
from reaper.errors import Diagnostic
from reaper.jobs import ACTIVE_PHASES, Job
from reaper.policy.model import Policy, PolicySet
from reaper.policy.selectors import TagSelector, WhereSelector
from reaper.policy.testfile import Case, Expect, ExpectedAction, TestFile
from reaper.redact import redact

LISTING = "recorded"
_ACTIVE = ACTIVE_PHASES  # finishing jobs too: a sweep lists and counts them


@dataclass(frozen=True, slots=True)
class RecordOptions:
    policy: str | None = None  # only jobs this policy matches
    limit: int | None = None  # at most this many cases, decided ones first
    keep_owners: bool = False


@dataclass
class Recording:
    """The test file to write (plain data for YAML), how many jobs were listed, and warnings."""

    document: dict[str, Any]
    listed: int
    warnings: list[str] = field(default_factory=list)


def list_detailed(backend: Backend) -> list[Job]:
    """Every active job of `backend`, detailed, in listing order (list + enrich only).
    Raises BackendError."""
    # A record the parser cannot read (BadRecord) has no Job to record: it is left out.
    listed = [
        job
        for page in backend.list_active()
        for job in page
        if isinstance(job, Job) and job.phase in _ACTIVE
    ]
    undetailed = [job for job in listed if not job.detailed]
    enriched = backend.enrich(undetailed) if undetailed else []
    details = {job.id: job for job in enriched if isinstance(job, Job)}
    return [
        job if job.detailed else details[job.id]
        for job in listed
        if job.detailed or job.id in details
    ]


def record(
    backend: Backend,
    policies: PolicySet,
    guards: Guards,
    now: datetime,
    options: RecordOptions = RecordOptions(),
) -> Recording:
    """The recording of `backend`'s active jobs at `now` (the time the listing started)."""
    jobs = list_detailed(backend)
    targeting = policies.for_backend(backend.name)
    keep = _Keep.of(targeting, guards.protect_tag, options.keep_owners, backend.type)
    cases = [_case(backend, job, keep, index) for index, job in enumerate(jobs)]
    file = TestFile(path=Path(_NOWHERE.file), now=now, cases=tuple(cases))
    live = run_listing(file, cases, policies, guards)
    chosen = _choose(cases, live, options)
    replayed = run_listing(file, chosen, policies, guards)
    warnings = [
        f"{case.name}: live {describe(live[case.index])}, recorded {describe(replayed[case.index])}"
        " (the recorded cases are a part of the listing)"
        for case in chosen
        if _key(live[case.index]) != _key(replayed[case.index])
    ]
    document = {
        "now": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "backends": {backend.name: backend.type},
        "cases": [_case_data(case, replayed[case.index]) for case in chosen],
    }
    return Recording(document, len(jobs), warnings)


_NOWHERE = Diagnostic("(recorded)", 1, 1, "")


def _key(outcome: Outcome) -> tuple[str, str | None, str | None]:
    return (outcome.action.value, outcome.policy, outcome.cause)


def _case(backend: Backend, job: Job, keep: _Keep, index: int) -> Case:
    return Case(
        name=f"{job.name} ({job.id})" if job.name else job.id,
        backend=backend.name,
        backend_type=backend.type,
        record=keep.record(job.raw),
        expect=Expect(ExpectedAction.NONE),
        at=_NOWHERE,
        queue=job.queue if backend.type == "aws_batch" else "",
        listing=LISTING,
        index=index,
    )


def _choose(
    cases: Sequence[Case], live: Mapping[int, Outcome], options: RecordOptions
) -> list[Case]:
    """The cases to write: those `options.policy` matched (all without), decided ones first,
    cut to `options.limit`, then back in listing order."""
    chosen = [c for c in cases if options.policy is None or options.policy in live[c.index].matched]
    chosen.sort(key=lambda c: live[c.index].action is ExpectedAction.NONE)  # stable
    if options.limit is not None:
        chosen = chosen[: options.limit]
    return sorted(chosen, key=lambda c: c.index)


def _case_data(case: Case, outcome: Outcome) -> dict[str, Any]:
    expect: dict[str, Any] = {"action": outcome.action.value}
    if outcome.policy is not None:
        expect["policy"] = outcome.policy
    if outcome.cause is not None:
        expect["cause"] = outcome.cause
    data: dict[str, Any] = {"name": case.name, "backend": case.backend}
    if case.queue:
        data["queue"] = case.queue
    data.update(listing=case.listing, record=dict(case.record), expect=expect)
    return data


@dataclass(frozen=True)
class _Keep:
    """What of a record to keep: top-level fields, nested `where` paths, tag keys (None: all)."""

    fields: frozenset[str]
    paths: tuple[tuple[str, ...], ...]
    tags: frozenset[str] | None

    @classmethod
    def of(
        cls, policies: Iterable[Policy], protect_tag: str, keep_owners: bool, backend_type: str
    ) -> _Keep:
        fields = {
            *record_fields(backend_type),
            *(owner_fields(backend_type) if keep_owners else ()),
        }
        paths: list[tuple[str, ...]] = []
        tags = {protect_tag}
        for policy in policies:
            blocks = [policy.selectors, *([policy.exclude] if policy.exclude else [])]
            for selector in (s for block in blocks for s in block.selectors):
                if isinstance(selector, WhereSelector):
                    paths.extend(clause.steps for clause in selector.clauses)
                elif isinstance(selector, TagSelector):
                    tags.update(name for name, _ in selector.items)
            pieces = policy.reason.pieces if policy.reason else ()
            tags.update(piece.tag for piece in pieces if piece.tag)
        return cls(frozenset(fields), tuple(paths), None if keep_owners else frozenset(tags))

    def record(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        kept: dict[str, Any] = {k: v for k, v in raw.items() if k in self.fields}
        for steps in self.paths:
            _copy_path(raw, kept, steps)
        if "tags" in kept and self.tags is not None:
            kept["tags"] = _kept_tags(kept["tags"], self.tags)
        plain: dict[str, Any] = _plain(kept)
        return plain


def _copy_path(source: Mapping[str, Any], target: dict[str, Any], steps: tuple[str, ...]) -> None:
    """Copy the value at `steps` (and only the mappings on the way to it) from source to target."""
    head, rest = steps[0], steps[1:]
    if head not in source:
        return
    if not rest or not isinstance(source[head], Mapping):
        target[head] = source[head]
        return
    inner = target.setdefault(head, {})
    if isinstance(inner, dict):
        _copy_path(source[head], inner, rest)


def _kept_tags(tags: Any, keys: frozenset[str]) -> Any:
    """AWS tags are a mapping, Tapis tags a list of `k=v` / `k` strings."""
    if isinstance(tags, Mapping):
        return {k: v for k, v in tags.items() if k in keys}
    if isinstance(tags, list):
        return [t for t in tags if isinstance(t, str) and t.partition("=")[0] in keys]
    return tags


def _plain(value: Any) -> Any:
    """Plain YAML-safe data, every string redacted."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))

"""`reaper test`: run policy test cases through the sweep's own parse → evaluate → decide path
(docs/testing.md), with `now` fixed by the test file and no network.

Each listing (the cases sharing a `listing:` name, or one case alone) is one sweep: its records
are listed per backend by a ReplayBackend (the live parsers), scanned by `scan_backend` (enrich,
PolicyIndex, reasons) and decided by `decide` with the config's guards. What the sweep would do
to each case's job is compared with what the case expects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from reaper.backends.replay import RawRecord, ReplayBackend
from reaper.engine.decide import Decision, Guards, Listing, decide
from reaper.engine.scan import scan_backend
from reaper.errors import ConfigError, Diagnostic
from reaper.policy.model import Match, PolicySet
from reaper.policy.testfile import Case, ExpectedAction, TestFile


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the sweep did with one case's job."""

    action: ExpectedAction
    policy: str | None = None
    cause: str | None = None
    reason: str | None = None
    facts: tuple[str, ...] = ()
    also_matched: tuple[str, ...] = ()
    dry_run: bool | None = None
    rejected: str | None = None  # the parser refused the record: it was never listed

    @property
    def matched(self) -> tuple[str, ...]:
        """Every policy that matched the job, the deciding one first."""
        return (*((self.policy,) if self.policy else ()), *self.also_matched)


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    file: str
    outcome: Outcome
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class TestRun:
    """Every case's result, in file and case order, and the policies no case exercises."""

    results: tuple[CaseResult, ...]
    uncovered: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    __test__ = False  # not a pytest class

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if r.passed)


def guards_for(file: TestFile, guards: Guards) -> Guards:
    """The config's guards with the test file's overrides applied."""
    o = file.overrides
    return replace(
        guards,
        max_cancels_per_sweep=guards.max_cancels_per_sweep
        if o.max_cancels_per_sweep is None
        else o.max_cancels_per_sweep,
        max_match_fraction=guards.max_match_fraction
        if o.max_match_fraction is None
        else o.max_match_fraction,
        protect_tag=guards.protect_tag if o.protect_tag is None else o.protect_tag,
    )


def run_tests(files: Sequence[TestFile], policies: PolicySet, guards: Guards) -> TestRun:
    """Run every case of `files`. Raises ConfigError (located) for a case naming an unknown
    policy or a job that another case of its listing already holds."""
    check_policy_names(files, policies)
    results = [r for file in files for r in run_file(file, policies, guards_for(file, guards))]
    covered = {name for r in results for name in (*r.outcome.matched, r.case.expect.policy)}
    names = tuple(p.name for p in policies)
    return TestRun(tuple(results), tuple(n for n in names if n not in covered), names)


def check_policy_names(files: Iterable[TestFile], policies: PolicySet) -> None:
    known = {p.name for p in policies}
    diagnostics = [
        _at(case, f"case {case.name!r} expects unknown policy {case.expect.policy!r}")
        for file in files
        for case in file.cases
        if case.expect.policy is not None and case.expect.policy not in known
    ]
    if diagnostics:
        raise ConfigError(diagnostics)


def run_file(file: TestFile, policies: PolicySet, guards: Guards) -> list[CaseResult]:
    """The results of one file's cases, in file order."""
    groups: dict[str | int, list[Case]] = defaultdict(list)
    for case in file.cases:
        groups[case.listing if case.listing is not None else case.index].append(case)
    outcomes: dict[int, Outcome] = {}
    for cases in groups.values():
        outcomes.update(run_listing(file, cases, policies, guards))
    return [
        CaseResult(case, str(file.path), outcomes[case.index], compare(case, outcomes[case.index]))
        for case in file.cases
    ]


def run_listing(
    file: TestFile, cases: Sequence[Case], policies: PolicySet, guards: Guards
) -> dict[int, Outcome]:
    """One sweep over the cases of one listing: Outcome by case index."""
    by_backend: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_backend[case.backend].append(case)
    listings: list[Listing[Match]] = []
    jobs: dict[tuple[str, str], Case] = {}
    outcomes: dict[int, Outcome] = {}
    for name, backend_cases in by_backend.items():
        backend = ReplayBackend(
            name,
            backend_cases[0].backend_type,
            [RawRecord(case.record, case.queue) for case in backend_cases],
        )
        for position, case in enumerate(backend_cases):
            job = backend.listed[position]
            if job is None:
                outcomes[case.index] = Outcome(
                    ExpectedAction.NONE, rejected=backend.rejected[position]
                )
                continue
            if (name, job.id) in jobs:
                other = jobs[(name, job.id)]
                message = (
                    f"case {case.name!r}: job {job.id} of {name} is already case {other.name!r} "
                    "of this listing; a listing holds each job once"
                )
                raise ConfigError([_at(case, message)])
            jobs[(name, job.id)] = case
        listings.append(scan_backend(backend, policies.for_backend(name), file.now).to_listing())
    # No audit log in a test: no open warnings, so a policy with a grace period warns.
    decisions = {d.key: d for d in decide(listings, guards, now=file.now).decisions}
    for key, case in jobs.items():
        decision = decisions.get(key)
        outcomes[case.index] = (
            Outcome(ExpectedAction.NONE) if decision is None else _outcome(decision)
        )
    return outcomes


def _outcome(decision: Decision[Match]) -> Outcome:
    return Outcome(
        action=ExpectedAction(decision.action.value),
        policy=decision.policy.name,
        cause=None if decision.cause is None else decision.cause.value,
        reason=decision.reason,
        facts=tuple(fact.text for fact in decision.match.facts),
        also_matched=decision.also_matched,
        dry_run=decision.dry_run,
    )


def compare(case: Case, outcome: Outcome) -> tuple[str, ...]:
    """What differs between the case's expectation and `outcome` (empty: the case passes)."""
    expect, failures = case.expect, []
    if outcome.action is not expect.action:
        failures.append(f"action: expected {expect.action.value}, got {outcome.action.value}")
    deciding = expect.action is not ExpectedAction.NONE
    if expect.policy is not None and deciding and outcome.policy != expect.policy:
        failures.append(f"policy: expected {expect.policy}, got {outcome.policy or 'none'}")
    if expect.cause is not None and outcome.cause != expect.cause:
        failures.append(f"cause: expected {expect.cause}, got {outcome.cause or 'none'}")
    if expect.dry_run is not None and outcome.dry_run is not expect.dry_run:
        failures.append(f"dry_run: expected {expect.dry_run}, got {outcome.dry_run}")
    for text in expect.reason_contains:
        if text not in (outcome.reason or ""):
            failures.append(f"reason does not contain {text!r}")
    for text in expect.facts_contain:
        if not any(text in fact for fact in outcome.facts):
            failures.append(f"no fact contains {text!r}")
    return tuple(failures)


def _at(case: Case, message: str) -> Diagnostic:
    return Diagnostic(case.at.file, case.at.line, case.at.column, message)


def describe(outcome: Outcome) -> str:
    """`cancel by P`, `skip by P (protected)`, `none`, `none (record rejected: …)`."""
    if outcome.rejected is not None:
        return f"none (the parser rejected the record: {outcome.rejected})"
    if outcome.action is ExpectedAction.NONE:
        return "none"
    text = f"{outcome.action.value} by {outcome.policy}"
    return f"{text} ({outcome.cause})" if outcome.cause else text


def expected_text(case: Case) -> str:
    expect = case.expect
    text = expect.action.value
    if expect.policy and expect.action is not ExpectedAction.NONE:
        text += f" by {expect.policy}"
    return f"{text} ({expect.cause})" if expect.cause else text

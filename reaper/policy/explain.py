"""Why a policy does or does not match one job, clause by clause (`reaper explain`,
docs/commands.md).

    explanation = explain_policy(policy, job, now)
    explanation.matches                     # evaluate's answer: a Match or not
    for clause in explanation.clauses:      # scope, selectors, exclude: each holds or fails
        clause.name, clause.holds, clause.checks   # checks: observed vs needed, per selector

A clause is one named step of `reaper.policy.model.evaluate`: `scope` (the policy targets the
job's backend, the job is pending or running, and detailed when the policy reads tags or
`where`), `selectors` (every selector holds), `exclude` (the exclude block does not hold),
`override` (an owner's `reaper:max-runtime` tag does not spare the job).
`CLAUSES` lists the rules in evaluation order. A feature that adds a condition to `evaluate`
(a grace period, a time window, an override tag) appends its rule to `CLAUSES`; the property
test (tests/test_policy_explain.py) holds every rule set to agree with `evaluate`.

Pure: no I/O, no clock; the checks come from the selectors themselves (`Selector.checks`), so
explain never re-implements matching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from reaper.jobs import ACTIVE_PHASES, MAX_RUNTIME_TAG, Job, Phase
from reaper.policy.durations import format_duration
from reaper.policy.model import Match, Policy, evaluate
from reaper.policy.overrides import runtime_override
from reaper.policy.selectors import Check

__all__ = ["CLAUSES", "Check", "Clause", "ClauseRule", "PolicyExplanation", "explain_policy"]


@dataclass(frozen=True, slots=True)
class Clause:
    """One named step of a policy's evaluation on one job. `holds` is True when this step lets
    the policy match (for `exclude`: the job is *not* excluded); `summary` says so in words."""

    name: str
    holds: bool
    summary: str
    checks: tuple[Check, ...]


# A rule builds its clause for (policy, job, now), or None when it does not apply (no exclude).
ClauseRule = Callable[[Policy, Job, datetime], Clause | None]


def scope_clause(policy: Policy, job: Job, now: datetime) -> Clause:
    """The policy targets the job's backend; the job is pending or running; and it is detailed
    when the policy reads tags or `where` (docs/policies.md)."""
    wanted = "any backend" if policy.backends is None else "one of " + ", ".join(policy.backends)
    checks = [
        Check("backend", job.backend, wanted, policy.applies_to(job.backend)),
        Check("phase", f"{job.status} ({job.phase.value})", _wanted_phase(job),
              _phase_considered(policy, job)),
    ]  # fmt: skip
    if policy.needs_detail:
        observed = "detailed record" if job.detailed else "listing only"
        checks.append(Check("detail", observed, "a detailed record (tags, where)", job.detailed))
    holds = all(check.holds for check in checks)
    return Clause("scope", holds, "in scope" if holds else "out of scope", tuple(checks))


def _phase_considered(policy: Policy, job: Job) -> bool:
    """The phase part of `reaper.policy.model.is_considered`."""
    if job.phase is Phase.FINISHING:
        return policy.selectors.names_status(job.status)
    return job.phase in ACTIVE_PHASES


def _wanted_phase(job: Job) -> str:
    if job.phase is Phase.FINISHING:
        return f"pending or running, or a policy naming {job.status} in statuses"
    return "pending or running"


def selectors_clause(policy: Policy, job: Job, now: datetime) -> Clause:
    """Every selector holds (a list inside one selector is an OR)."""
    checks = policy.selectors.checks(job, now)
    failed = [check.clause for check in checks if not check.holds]
    summary = "every selector holds" if not failed else "fails: " + ", ".join(failed)
    return Clause("selectors", not failed, summary, checks)


def exclude_clause(policy: Policy, job: Job, now: datetime) -> Clause | None:
    """The `exclude:` block must not hold: a job it matches (all its selectors) is left alone."""
    if policy.exclude is None:
        return None
    checks = policy.exclude.checks(job, now)
    excluded = all(check.holds for check in checks)
    summary = "excluded: every exclude selector holds" if excluded else "not excluded"
    return Clause("exclude", not excluded, summary, checks)


def override_clause(policy: Policy, job: Job, now: datetime) -> Clause | None:
    """The owner's `reaper:max-runtime` tag (docs/policies.md, "Overrides"): it raises the
    runtime limit by at most the policy's `max_extension`; a job within the raised limit is
    not matched. None when the job has no such tag or the policy no `max_runtime`."""
    limit = policy.selectors.duration_selector("max_runtime")
    if MAX_RUNTIME_TAG not in job.tags or limit is None or job.runtime(now) is None:
        return None
    still, fact = runtime_override(job, limit.limit, policy.max_extension, now)
    extension = format_duration(policy.max_extension) if policy.max_extension else "none"
    needed = f"runtime over max_runtime {limit.text} + what the tag asks, max_extension {extension}"
    observed = fact.text if fact is not None else f"{MAX_RUNTIME_TAG}={job.tags[MAX_RUNTIME_TAG]}"
    summary = "the override does not spare it" if still else "spared: within the owner's limit"
    return Clause("override", still, summary, (Check("max-runtime", observed, needed, still),))


CLAUSES: tuple[ClauseRule, ...] = (
    scope_clause, selectors_clause, exclude_clause, override_clause,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PolicyExplanation:
    """One policy on one job: its clauses, and `evaluate`'s match (facts, numbers) or None."""

    policy: Policy
    clauses: tuple[Clause, ...]
    match: Match | None

    @property
    def matches(self) -> bool:
        """evaluate's verdict, the one a sweep acts on."""
        return self.match is not None

    @property
    def clauses_hold(self) -> bool:
        """Every clause holds: equal to `matches` for every job (the property test's claim)."""
        return all(clause.holds for clause in self.clauses)


def explain_policy(
    policy: Policy, job: Job, now: datetime, rules: Sequence[ClauseRule] = CLAUSES
) -> PolicyExplanation:
    """Every clause of `policy` on `job` at `now` (aware), holding or not, with evaluate's
    match. Pure; never raises for any job; raises ValueError for a naive `now`."""
    match = evaluate(policy, job, now)
    clauses = tuple(clause for rule in rules if (clause := rule(policy, job, now)) is not None)
    return PolicyExplanation(policy, clauses, match)

"""The policies of one sweep, indexed for evaluating many jobs at one `now` (DESIGN.md §2.2).

    index = PolicyIndex(policies, now)      # once per sweep and backend
    matches = index.evaluate_all(job)       # == [evaluate(p, job, now) for p ...] without Nones
    index.may_match(undetailed_job)         # == any(prefilter(p, job, now) for p ...)

Same answers as `reaper.policy.evaluate` / `prefilter`, found faster (tests/test_policy_index.py
checks it against them):
- What a policy's `queues:` and `statuses:`, its `backends:` and the job's phase decide depends
  only on the job's backend, queue, status, phase and detail (its *key*), and a sweep sees few
  distinct keys. For each key seen, the policies still in the running are worked out once, each
  with the predicates left to test (`_Plan`).
- Those predicates (`Selector.compile_test`) answer yes or no without building facts, cheapest
  first: a `max_*` limit is one comparison with a cutoff computed once from `now`.
- Only a job that passes is handed to `evaluate`, which builds the `Match` with its facts, so a
  match is exactly what `evaluate` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from reaper.jobs import Job, Phase
from reaper.policy import Match, Policy, evaluate, prefilter
from reaper.selectors import Selector, SelectorBlock, Test

__all__ = ["PolicyIndex"]

# What `_key` holds. A selector that reads only these fields is decided once per key.
KEY_FIELDS = frozenset(("backend", "queue", "status", "phase", "detailed"))
_ACTIVE = (Phase.PENDING, Phase.RUNNING)

Key = tuple[object, ...]


def _key(job: Job) -> Key:
    return (job.backend, job.queue, job.status, job.phase, job.detailed)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A policy that the key's fields let through, and what is left to test on each job:
    `tests` must all hold, and the job is excluded if every one of `exclude` holds (None: the
    exclude block cannot hold for this key, or is not to be tested)."""

    policy: Policy
    tests: tuple[Test, ...]
    exclude: tuple[Test, ...] | None

    def holds(self, job: Job) -> bool:
        for test in self.tests:
            if not test(job):
                return False
        return self.exclude is None or not all(test(job) for test in self.exclude)


@dataclass(frozen=True, slots=True)
class _Split:
    """A selector block split into the selectors the key decides and compiled tests for the
    rest (cheapest first)."""

    keyed: tuple[Selector, ...]
    tests: tuple[Test, ...]

    @classmethod
    def of(cls, block: SelectorBlock, now: datetime, listing_only: bool) -> _Split:
        """`listing_only` leaves out the tags and where selectors, as `prefilter` does."""
        selectors = [s for s in block.by_cost if not (listing_only and s.needs_detail)]
        keyed = tuple(s for s in selectors if s.reads <= KEY_FIELDS)
        rest = (s for s in selectors if not s.reads <= KEY_FIELDS)
        return cls(keyed, tuple(s.compile_test(now) for s in rest))

    def keyed_hold(self, job: Job, now: datetime) -> bool:
        return all(selector.holds(job, now) for selector in self.keyed)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One policy, split once per sweep, for `evaluate` (full) and for `prefilter` (listing)."""

    policy: Policy
    full: _Split
    full_exclude: _Split | None
    listing: _Split
    listing_exclude: _Split | None  # None also when the exclude needs detail (prefilter)

    @classmethod
    def of(cls, policy: Policy, now: datetime) -> _Compiled:
        exclude = policy.exclude
        full_exclude = listing_exclude = None
        if exclude is not None:
            full_exclude = _Split.of(exclude, now, listing_only=False)
            # `prefilter` decides an exclude block now only if it needs no detail.
            listing_exclude = None if exclude.needs_detail else full_exclude
        return cls(
            policy=policy,
            full=_Split.of(policy.selectors, now, listing_only=False),
            full_exclude=full_exclude,
            listing=_Split.of(policy.selectors, now, listing_only=True),
            listing_exclude=listing_exclude,
        )

    def plan(self, job: Job, now: datetime, listing: bool) -> _Plan | None:
        """What is left to test on jobs of `job`'s key, or None if the key rules it out."""
        policy = self.policy
        if job.phase not in _ACTIVE or not policy.applies_to(job.backend):
            return None
        if not listing and policy.needs_detail and not job.detailed:
            return None
        split, exclude = (
            (self.listing, self.listing_exclude) if listing else (self.full, self.full_exclude)
        )
        if not split.keyed_hold(job, now):
            return None
        if exclude is None or not exclude.keyed_hold(job, now):
            return _Plan(policy, split.tests, None)
        if not exclude.tests:
            return None  # the exclude block holds for every job of this key
        return _Plan(policy, split.tests, exclude.tests)


class PolicyIndex:
    """Evaluates jobs against a fixed sequence of policies at a fixed, timezone-aware `now`.
    Build one per sweep and backend: its memory grows with the distinct keys it has seen."""

    def __init__(self, policies: Sequence[Policy], now: datetime) -> None:
        """Raises ValueError for a naive `now`, as `evaluate` does."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self.policies = tuple(policies)
        self.now = now
        self._compiled = tuple(_Compiled.of(policy, now) for policy in self.policies)
        self._full: dict[Key, tuple[_Plan, ...]] = {}
        self._listing: dict[Key, tuple[_Plan, ...]] = {}

    def evaluate_all(self, job: Job) -> list[Match]:
        """The matches of `job`, in policy order: exactly the non-None `evaluate(policy, job,
        now)` of the policies. Never raises for any job `evaluate` accepts."""
        plans = self._plans(job, listing=False)
        if plans is None:  # an unhashable field: no index, the plain way
            return [m for p in self.policies if (m := evaluate(p, job, self.now)) is not None]
        matches = []
        for plan in plans:
            for test in plan.tests:  # `plan.holds(job)`, inlined: this is the hot loop
                if not test(job):
                    break
            else:
                excluded = plan.exclude is not None and all(test(job) for test in plan.exclude)
                if not excluded and (match := evaluate(plan.policy, job, self.now)) is not None:
                    matches.append(match)
        return matches

    def may_match(self, job: Job) -> bool:
        """True exactly when `prefilter(policy, job, now)` holds for some policy: could a policy
        match once the job is detailed? For deciding which listed jobs to enrich."""
        plans = self._plans(job, listing=True)
        if plans is None:
            return any(prefilter(policy, job, self.now) for policy in self.policies)
        return any(plan.holds(job) for plan in plans)

    def _plans(self, job: Job, listing: bool) -> tuple[_Plan, ...] | None:
        cache = self._listing if listing else self._full
        key = _key(job)
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:
            return None
        plans = tuple(
            plan for c in self._compiled if (plan := c.plan(job, self.now, listing)) is not None
        )
        cache[key] = plans
        return plans

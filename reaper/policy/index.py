"""The policies of one sweep, indexed for evaluating many jobs at one `now` (docs/policies.md).

    index = PolicyIndex(policies, now)      # once per sweep and backend
    matches = index.evaluate_all(job)       # == [evaluate(p, job, now) for p ...] without Nones
    index.may_match(undetailed_job)         # == any(prefilter(p, job, now) for p ...)

Same answers as `reaper.policy.model.evaluate` / `prefilter`, found faster
(tests/test_policy_index.py checks it against them):
- What a policy's `queues:` and `statuses:`, its `backends:` and the job's phase decide depends
  only on the job's backend, queue, status, phase and detail (its *key*), and a sweep sees few
  distinct keys. For each key seen, the policies still in the running are worked out once, each
  with the predicates left to test (`_Plan`).
- Those predicates (`Selector.compile_test`) answer yes or no without building facts, cheapest
  first: a `max_*` limit is one comparison with a cutoff computed once from `now`.
- When a key's policies test names with globs that have a literal start (`train-*`), only
  the policies whose start the job's name has are tried (`_Bucket`): with many such policies,
  a few dictionary lookups instead of a glob each.
- Only a job that passes is handed to `evaluate`, which builds the `Match` with its facts, so a
  match is exactly what `evaluate` returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from reaper.jobs import Job
from reaper.policy.model import Match, Policy, evaluate, is_considered, prefilter
from reaper.policy.selectors import GlobSelector, Selector, SelectorBlock, Test

__all__ = ["PolicyIndex"]

# What `_key` holds. A selector that reads only these fields is decided once per key.
KEY_FIELDS = frozenset(("backend", "queue", "status", "phase", "detailed", "kind"))

Key = tuple[object, ...]
# A name lookup (one per distinct start length) costs about what testing four plans costs
# (benchmarks/bench_eval.py: with fewer plans per lookup, the realistic workload got slower).
_PLANS_PER_LOOKUP = 4


def _key(job: Job) -> Key:
    return (job.backend, job.queue, job.status, job.phase, job.detailed, job.kind)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A policy that the key's fields let through, and what is left to test on each job:
    `tests` must all hold, and the job is excluded if every one of `exclude` holds (None: the
    exclude block cannot hold for this key, or is not to be tested)."""

    policy: Policy
    tests: tuple[Test, ...]
    exclude: tuple[Test, ...] | None
    name_starts: tuple[str, ...] | None  # the job's name must start with one, if not None


@dataclass(frozen=True, slots=True)
class _Bucket:
    """The plans of one key, in policy order, with the plans that test the name with literal
    starts indexed by start (by length, then by text) when there are enough of them to pay."""

    plans: tuple[_Plan, ...]
    anyname: tuple[int, ...]  # positions of the plans that no name start rules out
    by_start: tuple[tuple[int, Mapping[str, tuple[int, ...]]], ...]

    @classmethod
    def of(cls, plans: tuple[_Plan, ...]) -> _Bucket:
        tables: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        anyname: list[int] = []
        for position, plan in enumerate(plans):
            if plan.name_starts is None:
                anyname.append(position)
            for start in plan.name_starts or ():
                tables[len(start)][start].append(position)
        if len(plans) - len(anyname) < _PLANS_PER_LOOKUP * len(tables):
            return cls(plans, tuple(range(len(plans))), ())
        by_start = tuple(
            (length, {start: tuple(at) for start, at in table.items()})
            for length, table in sorted(tables.items())
        )
        return cls(plans, tuple(anyname), by_start)

    def candidates(self, job: Job) -> Sequence[_Plan]:
        """The plans that `job`'s name does not rule out, in policy order."""
        if not self.by_start:
            return self.plans
        name = str(job.name)  # as GlobSelector reads it
        found = list(self.anyname)
        for length, table in self.by_start:
            found.extend(table.get(name[:length], ()))
        return [self.plans[position] for position in sorted(set(found))]


def _name_starts(block: SelectorBlock) -> tuple[str, ...] | None:
    """The literal starts of the block's name globs, None if there is no name selector or one of
    its globs has no literal start. A name that starts with none of them cannot match."""
    for selector in block.selectors:
        if isinstance(selector, GlobSelector) and selector.attribute == "name":
            starts = tuple(pattern.prefix for pattern in selector.patterns)
            return starts if all(starts) else None
    return None


def _passing(plans: Sequence[_Plan], job: Job) -> Iterator[_Plan]:
    """The plans whose tests all hold on `job` and whose exclude does not: the hot loop."""
    for plan in plans:
        for test in plan.tests:
            if not test(job):
                break
        else:
            if plan.exclude is None or not all(test(job) for test in plan.exclude):
                yield plan


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
    name_starts: tuple[str, ...] | None

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
            name_starts=_name_starts(policy.selectors),
        )

    def plan(self, job: Job, now: datetime, listing: bool) -> _Plan | None:
        """What is left to test on jobs of `job`'s key, or None if the key rules it out."""
        policy = self.policy
        if not is_considered(policy, job):
            return None
        if not listing and policy.needs_detail and not job.detailed:
            return None
        split, exclude = (
            (self.listing, self.listing_exclude) if listing else (self.full, self.full_exclude)
        )
        if not split.keyed_hold(job, now):
            return None
        if exclude is None or not exclude.keyed_hold(job, now):
            return _Plan(policy, split.tests, None, self.name_starts)
        if not exclude.tests:
            return None  # the exclude block holds for every job of this key
        return _Plan(policy, split.tests, exclude.tests, self.name_starts)


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
        self._full: dict[Key, _Bucket] = {}
        self._listing: dict[Key, _Bucket] = {}

    def evaluate_all(self, job: Job) -> list[Match]:
        """The matches of `job`, in policy order: exactly the non-None `evaluate(policy, job,
        now)` of the policies. Never raises for any job `evaluate` accepts."""
        bucket = self._bucket(job, listing=False)
        if bucket is None:  # an unhashable field: no index, the plain way
            return [m for p in self.policies if (m := evaluate(p, job, self.now)) is not None]
        matches = []
        for plan in _passing(bucket.candidates(job), job):
            if (match := evaluate(plan.policy, job, self.now)) is not None:
                matches.append(match)
        return matches

    def may_match(self, job: Job) -> bool:
        """True exactly when `prefilter(policy, job, now)` holds for some policy: could a policy
        match once the job is detailed? For deciding which listed jobs to enrich."""
        bucket = self._bucket(job, listing=True)
        if bucket is None:
            return any(prefilter(policy, job, self.now) for policy in self.policies)
        return next(_passing(bucket.candidates(job), job), None) is not None

    def _bucket(self, job: Job, listing: bool) -> _Bucket | None:
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
        cache[key] = bucket = _Bucket.of(plans)
        return bucket

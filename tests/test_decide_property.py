"""Properties of the decision step over random sweeps (hypothesis)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.engine.decide import (
    Action,
    Candidate,
    Decision,
    Guards,
    JobKey,
    Listing,
    Plan,
    decide,
    decision_order,
)
from reaper.jobs import SkipCause
from tests.test_decide import KEEP, FakeMatch, FakePolicy, cand, job

# Deterministic: the same 300 examples on every run (the brief asks for reproducible tests).
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)


@dataclass(frozen=True)
class Sweep:
    listings: list[Listing[FakeMatch]]
    guards: Guards
    paused: bool
    recent: frozenset[JobKey]

    def run(self) -> Plan[FakeMatch]:
        return decide(
            self.listings, self.guards, paused=self.paused, recently_cancelled=self.recent
        )

    def entries(self) -> list[Candidate[FakeMatch]]:
        return [c for lst in self.listings for c in lst.candidates]


@st.composite
def policies(draw: st.DrawFn) -> list[FakePolicy]:
    n = draw(st.integers(1, 5))
    positions = draw(st.permutations(range(n)))  # name order differs from policy order
    return [
        FakePolicy(
            name=f"p{i}",
            order=(f"policies/{positions[i] // 2}.yaml", positions[i] % 2),
            dry_run=draw(st.booleans()),
            max_cancels=draw(st.none() | st.integers(0, 6)),
        )
        for i in range(n)
    ]


@st.composite
def listings(
    draw: st.DrawFn, backend: str, pols: list[FakePolicy], unique: bool
) -> Listing[FakeMatch]:
    ids = st.sampled_from([f"j{k}" for k in range(8)])  # a small pool: repeats happen
    job_ids = draw(st.lists(ids, max_size=12, unique=unique))
    candidates = []
    for job_id in job_ids:
        tags = draw(st.sampled_from([{}, {}, {}, {}, {"team": "ml"}, {KEEP: ""}, {KEEP: "no"}]))
        matched = draw(st.lists(st.sampled_from(pols), min_size=1, unique_by=lambda p: p.name))
        age = draw(st.integers(0, 5)) * 30  # coarse ages: ties in the job order happen
        candidates.append(cand(job(job_id, backend, age_min=age, tags=tags), *matched))
    distinct = len({c.job.id for c in candidates})
    active = distinct + draw(st.integers(0, 12))
    complete = draw(st.sampled_from([True, True, True, False]))
    return Listing(backend, active, complete, tuple(candidates))


@st.composite
def sweeps(draw: st.DrawFn, unique: bool = False) -> Sweep:
    pols = draw(policies())
    backends = [f"b{i}" for i in range(draw(st.integers(1, 3)))]
    lsts = [draw(listings(b, pols, unique)) for b in backends]
    guards = Guards(
        protect_tag=KEEP,
        max_cancels_per_sweep=draw(st.none() | st.integers(0, 10)),
        max_match_fraction=draw(st.none() | st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0])),
        fraction_guard_floor=draw(st.integers(0, 4)),
        dry_run=draw(st.booleans()),
    )
    keys = sorted({c.key for lst in lsts for c in lst.candidates})
    recent = frozenset(draw(st.lists(st.sampled_from(keys), max_size=3))) if keys else frozenset()
    paused = draw(st.sampled_from([False, False, False, True]))
    return Sweep(lsts, guards, paused, recent)


def merged_policies(sweep: Sweep) -> dict[JobKey, list[FakePolicy]]:
    """Oracle: every policy that matched each distinct job, in policy order."""
    found: dict[JobKey, set[FakePolicy]] = {}
    for c in sweep.entries():
        found.setdefault(c.key, set()).update(m.policy for m in c.matches)
    return {k: sorted(ps, key=lambda p: p.order) for k, ps in found.items()}


def refused_pairs(sweep: Sweep) -> set[tuple[str, str]]:
    """Oracle: the (policy, backend) pairs the fraction guard must refuse."""
    g = sweep.guards
    if g.max_match_fraction is None:
        return set()
    counts = Counter((p.name, key[0]) for key, ps in merged_policies(sweep).items() for p in ps)
    active = {lst.backend: lst.active_count for lst in sweep.listings if lst.complete}
    return {
        (p, b)
        for (p, b), n in counts.items()
        if b in active and n > g.fraction_guard_floor and n > g.max_match_fraction * active[b]
    }


@PROPERTY
@given(sweeps())
def test_every_job_is_decided_exactly_once_by_its_first_policy(sweep: Sweep) -> None:
    plan = sweep.run()
    expected = merged_policies(sweep)
    assert sorted(d.key for d in plan.decisions) == sorted(expected)
    for d in plan.decisions:
        first, *others = expected[d.key]
        assert d.policy == first and d.match.policy == first
        assert d.also_matched == tuple(p.name for p in others)
        assert (d.action is Action.CANCEL) == (d.cause is None)
    assert list(plan.decisions) == sorted(plan.decisions, key=decision_order)


@PROPERTY
@given(sweeps())
def test_no_cancel_breaks_a_guard(sweep: Sweep) -> None:
    plan = sweep.run()
    cancels = plan.cancels()
    incomplete = {lst.backend for lst in sweep.listings if not lst.complete}
    refused = refused_pairs(sweep)
    assert {(r.policy, r.backend) for r in plan.fraction_refusals} == refused
    for d in cancels:
        assert KEEP not in d.job.tags
        assert d.key not in sweep.recent
        assert d.job.backend not in incomplete
        assert (d.policy.name, d.job.backend) not in refused
        assert d.dry_run == (sweep.guards.dry_run or d.policy.dry_run)
    if sweep.paused:
        assert cancels == []


@PROPERTY
@given(sweeps())
def test_limits_hold_and_are_not_cut_early(sweep: Sweep) -> None:
    plan = sweep.run()
    g = sweep.guards
    per_policy = Counter(d.policy.name for d in plan.decisions if _counted(d))
    total = sum(per_policy.values())
    if g.max_cancels_per_sweep is not None:
        assert total <= g.max_cancels_per_sweep
    for d in plan.decisions:
        cap = d.policy.max_cancels
        if cap is not None:
            assert per_policy[d.policy.name] <= cap
        if d.cause is SkipCause.LIMIT:  # skipped only when a limit was really full
            assert per_policy[d.policy.name] == cap or total == g.max_cancels_per_sweep
    limit_skips = len(plan.skips(SkipCause.LIMIT))
    assert sum(h.skipped for h in plan.limit_hits) == limit_skips
    assert plan.refused == bool(limit_skips or plan.fraction_refusals)


def _counted(d: Decision[FakeMatch]) -> bool:
    """A decision that used up a limit slot: a cancel, or a would-be cancel held by the pause."""
    return d.action is Action.CANCEL or d.cause is SkipCause.PAUSED


@PROPERTY
@given(sweeps(unique=True), st.randoms(use_true_random=False))
def test_output_is_deterministic_and_independent_of_input_order(
    sweep: Sweep, rnd: random.Random
) -> None:
    plan = sweep.run()
    assert sweep.run() == plan
    shuffled = [
        Listing(
            lst.backend,
            lst.active_count,
            lst.complete,
            tuple(rnd.sample(lst.candidates, len(lst.candidates))),
        )
        for lst in rnd.sample(sweep.listings, len(sweep.listings))
    ]
    assert (
        decide(shuffled, sweep.guards, paused=sweep.paused, recently_cancelled=sweep.recent) == plan
    )

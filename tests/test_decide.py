"""The decision step, rule by rule and in combination (reaper/decide.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reaper.engine.decide import (
    RECANCEL_WINDOW,
    Action,
    Candidate,
    ClearCause,
    FractionRefusal,
    Guards,
    JobKey,
    Limit,
    LimitHit,
    Listing,
    OpenWarning,
    Plan,
    decide,
    is_too_broad,
    select_recent_cancels,
)
from reaper.jobs import Job, Phase, SkipCause

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEEP = "reaper:keep"
# Guards off, dry run off: each test switches on what it exercises.
OPEN = Guards(protect_tag=KEEP, max_cancels_per_sweep=None, max_match_fraction=None, dry_run=False)


@dataclass(frozen=True)
class FakePolicy:
    name: str
    order: tuple[str, int]
    dry_run: bool = False
    max_cancels: int | None = None
    grace: timedelta | None = None
    require_notice: bool = False
    window: Any = None


@dataclass(frozen=True)
class FakeMatch:
    policy: FakePolicy
    facts: dict[str, str] = field(default_factory=dict, compare=False)


def pol(name: str, position: int, file: str = "policies/a.yaml", **kw: object) -> FakePolicy:
    return FakePolicy(name, (file, position), **kw)  # type: ignore[arg-type]


A, B, C = pol("a", 0), pol("b", 1), pol("c", 0, file="policies/b.yaml")


def job(
    job_id: str, backend: str = "b1", age_min: int = 60, tags: dict[str, str] | None = None
) -> Job:
    created = NOW - timedelta(minutes=age_min)
    return Job(
        backend=backend,
        type="aws_batch",
        id=job_id,
        name=f"name-{job_id}",
        queue="q",
        status="RUNNING",
        phase=Phase.RUNNING,
        created_at=created,
        started_at=created,
        tags=tags or {},
    )


def cand(j: Job, *policies: FakePolicy) -> Candidate[FakeMatch]:
    ordered = sorted(policies, key=lambda p: p.order)
    return Candidate(j, tuple(FakeMatch(p) for p in ordered), reason=f"by {ordered[0].name}")


def listing(
    backend: str, active: int, *cands: Candidate[FakeMatch], complete: bool = True
) -> Listing[FakeMatch]:
    return Listing(backend, active, complete, tuple(cands))


def run(
    *listings: Listing[FakeMatch],
    guards: Guards = OPEN,
    paused: bool = False,
    recent: frozenset[JobKey] = frozenset(),
) -> Plan[FakeMatch]:
    return decide(list(listings), guards, paused=paused, recently_cancelled=recent)


def outcome(plan: Plan[FakeMatch]) -> dict[str, tuple[str, str | None, str]]:
    """job id → (action, cause, deciding policy)."""
    return {d.job.id: (d.action, d.cause, d.policy.name) for d in plan.decisions}


# --- rule 1: protected ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({KEEP: ""}, (Action.SKIP, SkipCause.PROTECTED)),
        ({KEEP: "false"}, (Action.SKIP, SkipCause.PROTECTED)),  # any value: the key protects
        ({KEEP: "yes", "team": "ml"}, (Action.SKIP, SkipCause.PROTECTED)),
        ({"reaper:keeper": ""}, (Action.CANCEL, None)),
        ({"team": "reaper:keep"}, (Action.CANCEL, None)),
        ({}, (Action.CANCEL, None)),
    ],
)
def test_protect_tag_key_present_means_never_cancelled(
    tags: dict[str, str], expected: tuple[Action, SkipCause | None]
) -> None:
    (d,) = run(listing("b1", 10, cand(job("j1", tags=tags), A))).decisions
    assert (d.action, d.cause) == expected


def test_protected_job_matched_by_several_policies_is_one_protected_skip() -> None:
    plan = run(listing("b1", 10, cand(job("j1", tags={KEEP: ""}), A, B, C)))
    (d,) = plan.decisions
    assert (d.action, d.cause, d.policy.name) == (Action.SKIP, SkipCause.PROTECTED, "a")
    assert d.also_matched == ("b", "c")
    assert not plan.refused


# --- rule 2: dedupe -------------------------------------------------------------------------


def test_first_policy_in_file_then_position_order_decides() -> None:
    early = pol("z-early", 7, file="policies/0.yaml")  # name order must not matter
    plan = run(listing("b1", 10, cand(job("j1"), A, C, early)))
    (d,) = plan.decisions
    assert d.policy is early and d.match.policy is early
    assert d.also_matched == ("a", "c")
    assert d.reason == "by z-early"


def test_job_listed_twice_is_decided_once_with_merged_matches() -> None:
    j = job("j1")
    plan = run(listing("b1", 10, cand(j, B), cand(j, A, C), cand(j, B, C)))
    (d,) = plan.decisions
    assert (d.policy.name, d.reason, d.also_matched) == ("a", "by a", ("b", "c"))


def test_same_id_on_two_backends_is_two_jobs() -> None:
    plan = run(listing("b1", 10, cand(job("j1"), A)), listing("b2", 10, cand(job("j1", "b2"), A)))
    assert sorted(d.key for d in plan.cancels()) == [("b1", "j1"), ("b2", "j1")]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Candidate(job("j1"), (), reason="r"),
        lambda: Candidate(job("j1"), (FakeMatch(B), FakeMatch(A)), reason="r"),
        lambda: Candidate(job("j1"), (FakeMatch(A), FakeMatch(A)), reason="r"),
        lambda: Listing("b2", 1, True, (cand(job("j1", "b1"), A),)),
        lambda: Listing("b1", -1, True, ()),
        lambda: run(listing("b1", 1), listing("b1", 1)),
    ],
    ids=["no-match", "unordered", "repeated-policy", "stray-job", "negative", "dup-backend"],
)
def test_malformed_input_is_rejected(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


# --- rule 3: fraction guard -----------------------------------------------------------------

HALF = replace(OPEN, max_match_fraction=0.5, fraction_guard_floor=3)


def test_fraction_guard_refuses_the_whole_policy_but_not_another_on_the_same_backend() -> None:
    broad = [cand(job(f"x{i}", age_min=100 + i), A) for i in range(6)]
    narrow = [cand(job(f"y{i}"), B) for i in range(2)]
    plan = run(listing("b1", 10, *broad, *narrow), guards=HALF)
    got = outcome(plan)
    assert {got[f"x{i}"] for i in range(6)} == {(Action.SKIP, SkipCause.FRACTION_GUARD, "a")}
    assert {got[f"y{i}"] for i in range(2)} == {(Action.CANCEL, None, "b")}
    assert plan.fraction_refusals == (FractionRefusal("a", "b1", 6, 10, 0.5),)
    assert plan.refused


def test_fraction_guard_is_per_backend() -> None:
    on_b1 = [cand(job(f"x{i}"), A) for i in range(6)]
    on_b2 = [cand(job(f"x{i}", "b2"), A) for i in range(6)]
    plan = run(listing("b1", 10, *on_b1), listing("b2", 100, *on_b2), guards=HALF)
    assert {d.key[0] for d in plan.cancels()} == {"b2"} and len(plan.cancels()) == 6
    assert [(r.policy, r.backend) for r in plan.fraction_refusals] == [("a", "b1")]


@pytest.mark.parametrize(
    ("matched", "active", "fraction", "floor", "refused"),
    [
        (2, 2, 0.5, 3, False),  # two runaway jobs on a two-job backend: cancel them
        (1, 1, 0.5, 3, False),
        (3, 3, 0.5, 3, False),  # at the floor
        (4, 4, 0.5, 3, True),
        (5, 10, 0.5, 3, False),  # exactly half is not "more than half"
        (6, 10, 0.5, 3, True),
        (6, 10, 0.5, 6, False),
        (2, 2, 0.5, 0, True),  # floor 0: the pure percentage
        (40, 100, 0.5, 3, False),
        (51, 100, 0.5, 3, True),
        (10, 10, 1.0, 3, False),
        (1000, 10, None, 3, False),  # guard off
    ],
)
def test_fraction_guard_threshold(
    matched: int, active: int, fraction: float | None, floor: int, refused: bool
) -> None:
    guards = replace(OPEN, max_match_fraction=fraction, fraction_guard_floor=floor)
    assert is_too_broad(matched, active, guards) is refused
    plan = run(
        listing("b1", active, *[cand(job(f"j{i}"), A) for i in range(matched)]), guards=guards
    )
    assert bool(plan.fraction_refusals) is refused
    assert len(plan.cancels()) == (0 if refused else matched)


def test_fraction_counts_matches_shadowed_by_an_earlier_policy() -> None:
    both = [cand(job(f"s{i}"), A, B) for i in range(2)]  # decided by a, also matched by b
    only_b = [cand(job(f"b{i}"), B) for i in range(4)]  # b matched 6 of 10
    plan = run(listing("b1", 10, *both, *only_b), guards=HALF)
    got = outcome(plan)
    assert [got[f"s{i}"] for i in range(2)] == [(Action.CANCEL, None, "a")] * 2
    assert {got[f"b{i}"] for i in range(4)} == {(Action.SKIP, SkipCause.FRACTION_GUARD, "b")}
    assert [r.policy for r in plan.fraction_refusals] == ["b"]


def test_fraction_counts_protected_jobs_but_they_stay_protected() -> None:
    kept = [cand(job(f"k{i}", tags={KEEP: ""}), A) for i in range(3)]
    rest = [cand(job(f"r{i}"), A) for i in range(3)]
    plan = run(listing("b1", 10, *kept, *rest), guards=HALF)
    assert len(plan.skips(SkipCause.PROTECTED)) == 3
    assert len(plan.skips(SkipCause.FRACTION_GUARD)) == 3
    assert plan.fraction_refusals[0].matched == 6


def test_refused_policy_does_not_hand_its_jobs_to_a_later_policy() -> None:
    plan = run(listing("b1", 10, *[cand(job(f"j{i}"), A, B) for i in range(6)]), guards=HALF)
    assert {(d.cause, d.policy.name) for d in plan.decisions} == {(SkipCause.FRACTION_GUARD, "a")}
    assert {r.policy for r in plan.fraction_refusals} == {"a", "b"}


# --- incomplete listing ---------------------------------------------------------------------


def test_incomplete_listing_means_no_cancel_on_that_backend_only() -> None:
    partial = listing("b1", 3, *[cand(job(f"j{i}"), A) for i in range(3)], complete=False)
    plan = run(partial, listing("b2", 10, cand(job("j0", "b2"), A)), guards=HALF)
    assert {d.cause for d in plan.decisions if d.key[0] == "b1"} == {SkipCause.LISTING_INCOMPLETE}
    assert [d.key for d in plan.cancels()] == [("b2", "j0")]
    assert plan.fraction_refusals == ()


def test_incomplete_listing_is_not_judged_by_the_fraction_guard_even_when_broad() -> None:
    guards = replace(HALF, fraction_guard_floor=0)
    partial = listing("b1", 2, *[cand(job(f"j{i}"), A) for i in range(2)], complete=False)
    plan = run(partial, guards=guards)
    assert plan.fraction_refusals == () and not plan.refused
    assert len(plan.skips(SkipCause.LISTING_INCOMPLETE)) == 2


def test_protected_job_on_incomplete_listing_is_still_reported_protected() -> None:
    plan = run(listing("b1", 1, cand(job("j1", tags={KEEP: ""}), A), complete=False))
    assert plan.decisions[0].cause is SkipCause.PROTECTED


# --- rule 4: recently cancelled -------------------------------------------------------------


def test_recently_cancelled_job_is_skipped_and_frees_its_limit_slot() -> None:
    guards = replace(OPEN, max_cancels_per_sweep=1)
    jobs = [cand(job("old", age_min=500), A), cand(job("young", age_min=5), A)]
    plan = run(listing("b1", 10, *jobs), guards=guards, recent=frozenset({("b1", "old")}))
    assert outcome(plan) == {
        "old": (Action.SKIP, SkipCause.RECENTLY_CANCELLED, "a"),
        "young": (Action.CANCEL, None, "a"),
    }
    assert not plan.refused


def test_recently_cancelled_is_keyed_by_backend_and_id() -> None:
    plan = run(listing("b2", 10, cand(job("j1", "b2"), A)), recent=frozenset({("b1", "j1")}))
    assert plan.decisions[0].action is Action.CANCEL


def test_select_recent_cancels_keeps_the_ten_minute_window() -> None:
    history = {
        ("b1", "in"): NOW - RECANCEL_WINDOW + timedelta(seconds=1),
        ("b1", "edge"): NOW - RECANCEL_WINDOW,
        ("b1", "out"): NOW - timedelta(hours=1),
    }
    assert timedelta(minutes=10) == RECANCEL_WINDOW
    assert select_recent_cancels(history, NOW) == {("b1", "in")}


# --- rule 5: limits -------------------------------------------------------------------------


def test_policy_max_cancels_keeps_the_oldest() -> None:
    capped = pol("a", 0, max_cancels=2)
    jobs = [cand(job(f"j{age}", age_min=age), capped) for age in (30, 500, 10, 90)]
    plan = run(listing("b1", 100, *jobs))
    assert [d.job.id for d in plan.cancels()] == ["j500", "j90"]
    assert {d.job.id for d in plan.skips(SkipCause.LIMIT)} == {"j30", "j10"}
    assert plan.limit_hits == (LimitHit(Limit.MAX_CANCELS, "a", 2, 2),)
    assert plan.refused


def test_sweep_limit_spans_policies_and_backends_in_policy_order() -> None:
    guards = replace(OPEN, max_cancels_per_sweep=3)
    b1 = listing("b1", 100, cand(job("a1", age_min=10), A), cand(job("b1", age_min=900), B))
    b2 = listing("b2", 100, cand(job("a2", "b2", age_min=20), A), cand(job("b2", "b2"), B))
    plan = run(b1, b2, guards=guards)
    # a's jobs come first (policy order) whatever their age; then b's oldest
    assert [d.job.id for d in plan.cancels()] == ["a2", "a1", "b1"]
    assert [d.job.id for d in plan.skips(SkipCause.LIMIT)] == ["b2"]
    assert plan.limit_hits == (LimitHit(Limit.MAX_CANCELS_PER_SWEEP, None, 3, 1),)


def test_policy_limit_skips_do_not_use_up_the_sweep_limit() -> None:
    guards = replace(OPEN, max_cancels_per_sweep=2)
    capped = pol("a", 0, max_cancels=1)
    jobs = [cand(job(f"a{i}", age_min=100 - i), capped) for i in range(3)]
    jobs += [cand(job(f"b{i}", age_min=100 - i), B) for i in range(2)]
    plan = run(listing("b1", 100, *jobs), guards=guards)
    assert [d.job.id for d in plan.cancels()] == ["a0", "b0"]
    assert set(plan.limit_hits) == {
        LimitHit(Limit.MAX_CANCELS, "a", 1, 2),
        LimitHit(Limit.MAX_CANCELS_PER_SWEEP, None, 2, 1),
    }


def test_protected_jobs_do_not_use_up_limits() -> None:
    capped = pol("a", 0, max_cancels=1)
    jobs = [cand(job("old", age_min=900, tags={KEEP: "1"}), capped), cand(job("new"), capped)]
    plan = run(listing("b1", 100, *jobs))
    assert outcome(plan)["new"] == (Action.CANCEL, None, "a")
    assert not plan.refused


@pytest.mark.parametrize("where", ["global", "policy"])
def test_dry_run_cancels_count_against_limits(where: str) -> None:
    guards = replace(OPEN, dry_run=where == "global")
    capped = pol("a", 0, max_cancels=1, dry_run=where == "policy")
    plan = run(
        listing("b1", 100, cand(job("old", age_min=90), capped), cand(job("new"), capped)),
        guards=guards,
    )
    (d,) = plan.cancels()
    assert (d.job.id, d.dry_run) == ("old", True)
    assert plan.skips(SkipCause.LIMIT)[0].job.id == "new"
    assert plan.refused


def test_zero_limit_refuses_everything() -> None:
    plan = run(
        listing("b1", 100, cand(job("j1"), A)), guards=replace(OPEN, max_cancels_per_sweep=0)
    )
    assert plan.cancels() == [] and plan.limit_hits == (
        LimitHit(Limit.MAX_CANCELS_PER_SWEEP, None, 0, 1),
    )


# --- rule 6: paused -------------------------------------------------------------------------


def test_paused_turns_every_would_be_cancel_into_a_skip_and_keeps_other_causes() -> None:
    guards = replace(OPEN, max_cancels_per_sweep=2, dry_run=True)
    jobs = [cand(job(f"j{i}", age_min=100 - i), A) for i in range(3)]
    jobs.append(cand(job("kept", tags={KEEP: ""}), A))
    plan = run(listing("b1", 100, *jobs), guards=guards, paused=True)
    assert plan.cancels() == []
    got = {k: v[1] for k, v in outcome(plan).items()}
    assert got == {
        "j0": SkipCause.PAUSED,
        "j1": SkipCause.PAUSED,
        "j2": SkipCause.LIMIT,
        "kept": SkipCause.PROTECTED,
    }
    assert plan.refused  # a paused sweep still reports what a real one would refuse


# --- rule 7: dry run ------------------------------------------------------------------------


def test_dry_run_keeps_the_cancel_action_and_flags_it() -> None:
    observe = pol("observe", 5, dry_run=True)
    plan = run(listing("b1", 10, cand(job("j1"), A), cand(job("j2"), observe)))
    flags = {d.job.id: (d.action, d.dry_run) for d in plan.decisions}
    assert flags == {"j1": (Action.CANCEL, False), "j2": (Action.CANCEL, True)}
    everything = run(listing("b1", 10, cand(job("j1"), A)), guards=replace(OPEN, dry_run=True))
    assert [(d.action, d.dry_run) for d in everything.decisions] == [(Action.CANCEL, True)]


def test_default_guards_are_dry_run() -> None:
    plan = decide([listing("b1", 10, cand(job("j1"), A))], Guards())
    assert plan.decisions[0].dry_run


# --- order and shape ------------------------------------------------------------------------


def test_decisions_come_in_policy_order_then_oldest_first() -> None:
    jobs = [
        cand(job("c-new", age_min=1), C),
        cand(job("a-new", age_min=1), A),
        cand(job("b-old", age_min=999), B),
        cand(job("a-old", age_min=50), A),
        cand(job("a-tie", "b0", age_min=50), A),
    ]
    plan = run(listing("b1", 10, *jobs[:4]), listing("b0", 10, jobs[4]))
    assert [d.job.id for d in plan.decisions] == ["a-tie", "a-old", "a-new", "b-old", "c-new"]


def test_every_skip_has_a_cause_and_no_cancel_has_one() -> None:
    guards = replace(HALF, max_cancels_per_sweep=1)
    jobs = [cand(job(f"j{i}", age_min=i), B) for i in range(3)]
    jobs.append(cand(job("k", tags={KEEP: ""}), A))
    plan = run(listing("b1", 100, *jobs), guards=guards)
    assert all((d.action is Action.CANCEL) == (d.cause is None) for d in plan.decisions)


def test_empty_sweep() -> None:
    plan = run(listing("b1", 0), listing("b2", 5, complete=False), guards=HALF)
    assert plan == Plan(decisions=()) and not plan.refused


# -- the ladder (grace, require_notice, windows) ---------------------------------------------------
GRACE = timedelta(hours=2)


@dataclass(frozen=True)
class FakeWindow:
    """Open from `opens` on (a half-line is enough to test the rule)."""

    opens: datetime

    def contains(self, now: datetime) -> bool:
        return now >= self.opens

    def next_opening(self, at: datetime) -> datetime:
        return max(at, self.opens)


def warning(j: Job, policy: FakePolicy, due: datetime, **kw: object) -> OpenWarning:
    return OpenWarning(j.backend, j.id, policy.name, due, **kw)  # type: ignore[arg-type]


def test_a_first_match_under_a_grace_period_is_a_warning_due_after_the_grace() -> None:
    p = pol("p", 0, grace=GRACE)
    plan = decide([listing("b1", 10, cand(job("j1"), p))], OPEN, now=NOW)
    [d] = plan.decisions
    assert (d.action, d.due) == (Action.WARN, NOW + GRACE)
    assert plan.cancels() == []


def test_a_warned_job_is_held_until_due_then_cancelled() -> None:
    p, j = pol("p", 0, grace=GRACE), job("j1")
    warnings = {(j.backend, j.id): warning(j, p, NOW + GRACE)}
    early = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW + GRACE / 2, warnings=warnings)
    assert [(d.action, d.cause) for d in early.decisions] == [(Action.SKIP, SkipCause.GRACE)]
    due = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW + GRACE, warnings=warnings)
    assert [d.action for d in due.decisions] == [Action.CANCEL]


def test_a_dry_run_warning_does_not_allow_a_real_cancel() -> None:
    p, j = pol("p", 0, grace=GRACE), job("j1")
    warnings = {(j.backend, j.id): warning(j, p, NOW, dry_run=True)}
    plan = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW + GRACE, warnings=warnings)
    assert [d.action for d in plan.decisions] == [Action.WARN]


def test_a_warning_by_another_policy_is_given_again_by_the_deciding_one() -> None:
    p, other, j = pol("p", 0, grace=GRACE), pol("q", 1), job("j1")
    warnings = {(j.backend, j.id): warning(j, other, NOW)}
    plan = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW + GRACE, warnings=warnings)
    assert [d.action for d in plan.decisions] == [Action.WARN]


def test_require_notice_holds_a_due_cancel_until_the_notice_was_delivered() -> None:
    p, j = pol("p", 0, require_notice=True), job("j1")
    first = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW)
    assert [(d.action, d.due) for d in first.decisions] == [(Action.WARN, NOW)]
    undelivered = {(j.backend, j.id): warning(j, p, NOW)}
    held = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW, warnings=undelivered)
    assert [d.cause for d in held.decisions] == [SkipCause.NOTICE_PENDING]
    delivered = {(j.backend, j.id): warning(j, p, NOW, delivered=True)}
    done = decide([listing("b1", 10, cand(j, p))], OPEN, now=NOW, warnings=delivered)
    assert [d.action for d in done.decisions] == [Action.CANCEL]


def test_a_closed_window_holds_a_cancel_and_a_due_time_waits_for_the_opening() -> None:
    opens = NOW + timedelta(hours=10)
    p = pol("p", 0, window=FakeWindow(opens))
    plan = decide([listing("b1", 10, cand(job("j1"), p))], OPEN, now=NOW)
    assert [(d.cause, d.due) for d in plan.decisions] == [(SkipCause.OUTSIDE_WINDOW, opens)]
    graced = pol("g", 0, grace=GRACE, window=FakeWindow(opens))
    warned = decide([listing("b1", 10, cand(job("j1"), graced))], OPEN, now=NOW)
    assert [(d.action, d.due) for d in warned.decisions] == [(Action.WARN, opens)]


def test_warnings_count_against_no_limit_and_guards_come_first() -> None:
    p = pol("p", 0, grace=GRACE, max_cancels=1)
    jobs = [job(f"j{i}") for i in range(3)]
    plan = decide([listing("b1", 10, *(cand(j, p) for j in jobs))], OPEN, now=NOW)
    assert [d.action for d in plan.decisions] == [Action.WARN] * 3
    assert not plan.limit_hits
    kept = job("k", tags={KEEP: ""})
    protected = decide([listing("b1", 10, cand(kept, p))], OPEN, now=NOW)
    assert [d.cause for d in protected.decisions] == [SkipCause.PROTECTED]
    paused = decide([listing("b1", 10, cand(jobs[0], p))], OPEN, now=NOW, paused=True)
    assert [d.cause for d in paused.decisions] == [SkipCause.PAUSED]


def test_an_open_warning_is_cleared_when_its_job_no_longer_matches_on_a_complete_listing() -> None:
    p, gone, kept = pol("p", 0, grace=GRACE), job("gone"), job("kept", tags={KEEP: ""})
    warnings = {j.id: warning(j, p, NOW + GRACE) for j in (gone, kept)}
    keyed = {(w.backend, w.job_id): w for w in warnings.values()}
    plan = decide([listing("b1", 10, cand(kept, p))], OPEN, now=NOW, warnings=keyed)
    assert {(c.warning.job_id, c.cause) for c in plan.cleared} == {
        ("gone", ClearCause.NO_LONGER_MATCHES), ("kept", ClearCause.PROTECTED)}  # fmt: skip
    partial = decide([listing("b1", 10, complete=False)], OPEN, now=NOW, warnings=keyed)
    assert partial.cleared == ()


def test_keep_until_protects_while_its_time_is_ahead() -> None:
    later = (NOW + timedelta(hours=1)).isoformat()
    j = job("j1", tags={"reaper:keep-until": later})
    ahead = decide([listing("b1", 10, cand(j, A))], OPEN, now=NOW)
    assert [d.cause for d in ahead.decisions] == [SkipCause.PROTECTED]
    past = decide([listing("b1", 10, cand(j, A))], OPEN, now=NOW + timedelta(hours=2))
    assert [d.action for d in past.decisions] == [Action.CANCEL]

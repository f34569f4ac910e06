"""`reaper.engine.explain.explain_job`, pure: the decision it shows is the sweep's decision step
on that one job, guard by guard, and its guard checks say which guard held the job back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from reaper.engine.decide import Guards, Limit
from reaper.engine.explain import GUARD_CHECKS, JobExplanation, SweepState, explain_job
from reaper.jobs import Job, SkipCause, phase_of
from reaper.policy.model import Policy, PolicySource, compile_policy
from reaper.policy.selectors import Check

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GUARDS = Guards(protect_tag="reaper:keep", max_cancels_per_sweep=100, max_match_fraction=0.5,
                dry_run=False)  # fmt: skip


def job(**tags: str) -> Job:
    return Job("b1", "tapis", "j1", "long-1", "gpu", "RUNNING", phase_of("tapis", "RUNNING"),
               NOW - timedelta(hours=6), started_at=NOW - timedelta(hours=5),
               tags=tags)  # fmt: skip


def policy(position: int, **raw: Any) -> Policy:
    source = PolicySource("policies/p.yaml", "0" * 64, None, position)
    return compile_policy({"name": f"p{position}", **raw}, source, ["tapis"])


CAP = {"names": ["long-*"], "max_runtime": "2h"}


def explain(
    *policies: Policy, subject: Job | None = None, guards: Guards = GUARDS, **state: Any
) -> JobExplanation:
    full = SweepState(guards, state.get("paused", False), state.get("recent", frozenset()),
                      state.get("audit_error"))  # fmt: skip
    return explain_job(subject or job(), policies, full, NOW)


def checks(e: JobExplanation) -> dict[str, Check]:
    return {check.clause: check for check in e.checks}


def test_no_match_no_decision() -> None:
    e = explain(policy(0, names=["other-*"]))
    assert e.decision is None and not e.policies[0].matches


def test_a_match_is_a_cancel_by_the_first_policy_with_its_reason() -> None:
    e = explain(policy(0, **CAP), policy(1, queues=["gpu"]))
    assert e.decision is not None
    assert (e.decision.action, e.decision.policy.name, e.decision.dry_run) == (
        "cancel",
        "p0",
        False,
    )
    assert e.decision.also_matched == ("p1",)
    assert e.decision.reason.startswith("reaper policy p0: runtime 5h00m > max_runtime 2h")
    assert all(check.holds for check in e.checks)


def test_dry_run_from_the_config_or_the_policy_is_a_dry_run_cancel() -> None:
    from dataclasses import replace

    by_config = explain(policy(0, **CAP), guards=replace(GUARDS, dry_run=True))
    by_policy = explain(policy(0, **CAP, dry_run=True))
    for e in (by_config, by_policy):
        assert e.decision is not None and e.decision.action == "cancel" and e.decision.dry_run


def test_the_protect_tag_wins_over_every_other_guard() -> None:
    e = explain(policy(0, **CAP), subject=job(**{"reaper:keep": ""}), paused=True,
                recent={("b1", "j1")})  # fmt: skip
    assert e.decision is not None and e.decision.cause is SkipCause.PROTECTED
    found = checks(e)
    assert not found["protect_tag"].holds and found["protect_tag"].observed == 'reaper:keep=""'
    assert not found["recancel_window"].holds and not found["pause_file"].holds


def test_a_recent_cancel_then_the_pause_file_hold_the_job_back() -> None:
    recent = explain(policy(0, **CAP), recent={("b1", "j1")}, paused=True)
    assert recent.decision is not None and recent.decision.cause is SkipCause.RECENTLY_CANCELLED
    paused = explain(policy(0, **CAP), paused=True)
    assert paused.decision is not None and paused.decision.cause is SkipCause.PAUSED
    assert checks(paused)["pause_file"].observed == "exists"


def test_max_cancels_0_holds_the_job_back_as_a_limit() -> None:
    e = explain(policy(0, **CAP, max_cancels=0))
    assert e.decision is not None and e.decision.cause is SkipCause.LIMIT
    assert [(h.limit, h.policy, h.maximum) for h in e.limit_hits] == [(Limit.MAX_CANCELS, "p0", 0)]


def test_the_fraction_guard_is_not_decided_for_one_job() -> None:
    """Its denominator is a whole listing: a floor of 0 must not refuse one matching job."""
    from dataclasses import replace

    e = explain(policy(0, **CAP), guards=replace(GUARDS, fraction_guard_floor=0))
    assert e.decision is not None and e.decision.action == "cancel"


def test_an_unreadable_audit_log_is_said_and_counts_no_cancel() -> None:
    e = explain(policy(0, **CAP), audit_error="audit.jsonl: Permission denied")
    window = checks(e)["recancel_window"]
    assert window.holds and "cannot read the audit log (audit.jsonl: Permission denied)" in (
        window.observed
    )
    assert e.decision is not None and e.decision.action == "cancel"


def test_a_guard_rule_appended_is_reported() -> None:
    def override(subject: Job, state: SweepState) -> Check:
        return Check("override_tag", "absent", "absent", True)

    full = SweepState(GUARDS, False, frozenset())
    e = explain_job(job(), [policy(0, **CAP)], full, NOW, (*GUARD_CHECKS, override))
    assert [c.clause for c in e.checks] == [
        "listing", "protect_tag", "recancel_window", "pause_file", "override_tag",
    ]  # fmt: skip


def test_a_job_the_listing_never_yields_has_no_decision() -> None:
    full = SweepState(GUARDS, False, frozenset(), unlisted="queue gpu is not in this backend's")
    e = explain_job(job(), [policy(0, **CAP)], full, NOW)
    assert e.policies[0].matches and e.decision is None
    assert not checks(e)["listing"].holds

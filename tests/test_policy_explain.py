"""`explain_policy` and `Selector.checks`: what `reaper explain` shows agrees with `evaluate`,
for random policies and jobs (the generators of tests/test_policy_property.py), and says what
was observed and what was needed."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from hypothesis import given

from reaper.jobs import Job, phase_of
from reaper.policy.explain import CLAUSES, explain_policy
from reaper.policy.model import compile_policy, evaluate
from tests import test_policy_property as gen

NOW, SOURCE, TYPES = gen.NOW, gen.SOURCE, gen.TYPES


@gen.PROPERTY
@given(gen.policies(), gen.jobs())
def test_the_clauses_hold_exactly_when_evaluate_matches(raw: dict[str, Any], job: Job) -> None:
    policy = compile_policy(gen.as_yaml(raw), SOURCE, TYPES)
    for candidate in (job, dataclasses.replace(job, tags={}, raw={}, detailed=False)):
        explanation = explain_policy(policy, candidate, NOW)
        matched = evaluate(policy, candidate, NOW) is not None
        assert explanation.clauses_hold == matched == explanation.matches


@gen.PROPERTY
@given(gen.policies(), gen.jobs())
def test_each_selector_checks_agree_with_its_holds_and_explain(
    raw: dict[str, Any], job: Job
) -> None:
    policy = compile_policy(gen.as_yaml(raw), SOURCE, TYPES)
    blocks = [policy.selectors] + ([policy.exclude] if policy.exclude else [])
    for block in blocks:
        for selector in block.selectors:
            checks = selector.checks(job, NOW)
            assert checks, selector
            held = all(check.holds for check in checks)
            assert held == selector.holds(job, NOW) == (selector.explain(job, NOW) is not None)


def running_job(**changes: Any) -> Job:
    base = Job("b1", "aws_batch", "j1", "long-1", "gpu", "RUNNING",
               phase_of("aws_batch", "RUNNING"), NOW - timedelta(hours=2),
               started_at=NOW - timedelta(hours=1), tags={"team": "ml"},
               raw={"cost": 12})  # fmt: skip
    return dataclasses.replace(base, **changes)


def checks_by_clause(raw: dict[str, Any], job: Job) -> dict[str, tuple[str, str, bool]]:
    explanation = explain_policy(compile_policy(raw, SOURCE, TYPES), job, NOW)
    return {
        f"{clause.name}/{check.clause}": (check.observed, check.needed, check.holds)
        for clause in explanation.clauses
        for check in clause.checks
    }


def test_a_failing_selector_says_what_it_observed_and_needed() -> None:
    raw = {
        "name": "p", "max_runtime": "2h", "names": ["long-*"], "statuses": ["running"],
        "tags": {"team": "ml*", "env": "prod"}, "where": {"cost": {"gt": 50}},
    }  # fmt: skip
    checks = checks_by_clause(raw, running_job())
    assert checks["selectors/max_runtime"] == ("runtime 1h00m", "> 2h", False)
    assert checks["selectors/names"] == ("long-1", "~ long-*", True)
    assert checks["selectors/statuses"] == ("RUNNING (running)", "one of running", True)
    assert checks["selectors/tags.team"] == ("ml", "~ ml*", True)
    assert checks["selectors/tags.env"] == ("missing", "~ prod", False)
    assert checks["selectors/where.cost"] == ("12", "> 50", False)
    assert checks["scope/detail"][2] is True


def test_runtime_of_a_job_that_never_started_is_not_applicable() -> None:
    checks = checks_by_clause(
        {"name": "p", "max_runtime": "2h"},
        running_job(started_at=None, status="RUNNABLE", phase=phase_of("aws_batch", "RUNNABLE")),
    )
    assert checks["selectors/max_runtime"] == (
        "runtime n/a (not started: phase pending)",
        "> 2h",
        False,
    )


def test_an_exclude_block_that_holds_fails_the_exclude_clause() -> None:
    raw = {"name": "p", "names": ["long-*"], "exclude": {"queues": ["gp?"]}}
    explanation = explain_policy(compile_policy(raw, SOURCE, TYPES), running_job(), NOW)
    exclude = next(clause for clause in explanation.clauses if clause.name == "exclude")
    assert not exclude.holds and exclude.summary.startswith("excluded")
    assert [(c.clause, c.observed, c.holds) for c in exclude.checks] == [("queues", "gpu", True)]
    assert not explanation.matches


def test_a_terminal_job_or_another_backend_is_out_of_scope() -> None:
    raw = {"name": "p", "names": ["*"], "backends": ["b2"]}
    policy = compile_policy(raw, SOURCE, TYPES)
    done = running_job(status="SUCCEEDED", phase=phase_of("aws_batch", "SUCCEEDED"))
    scope = explain_policy(policy, done, NOW).clauses[0]
    assert scope.name == "scope" and not scope.holds
    assert [(c.clause, c.holds) for c in scope.checks] == [("backend", False), ("phase", False)]


def test_a_later_rule_appended_to_the_clauses_is_reported() -> None:
    """The rule list is the extension point: a feature appends its clause."""
    from reaper.policy.explain import Clause

    def window(policy: Any, job: Job, now: Any) -> Clause:
        return Clause("window", False, "outside the window", ())

    policy = compile_policy({"name": "p", "names": ["*"]}, SOURCE, TYPES)
    explanation = explain_policy(policy, running_job(), NOW, (*CLAUSES, window))
    assert [clause.name for clause in explanation.clauses] == ["scope", "selectors", "window"]
    assert not explanation.clauses_hold

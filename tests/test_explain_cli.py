"""`reaper explain` and `reaper plan --job/--now` through the CLI against the emulators: one job
explained policy by policy (a match, an exclusion, the protect tag), read-only (no mutating call,
no audit record), `--now`, and the exit codes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reaper.emulators.base import Knobs
from reaper.emulators.world import World
from tests.e2e_support import (
    NAMES,
    TAGGED,
    CliResult,
    edit_config,
    job_id,
    mutating_calls,
    run_cli,
    run_once,
    running,
    standard_jobs,
    standard_world,
)

# A match, an exclusion and a second match (so the protect tag holds back a job two policies
# would cancel): the three of acceptance 3.
POLICIES = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    max_runtime: 2h
  - name: ml-team-cap
    tags: {team: ml}
    exclude:
      names: ["*-kept"]
  - name: gpu-queue-cap
    queues: [gpu]
    max_runtime: 1h
"""
PROTECT = {"reaper:keep": "until friday"}


def seeds(now: float) -> dict[str, list[Any]]:
    """Per backend: a protected ml job both caps match, an ml job, and a young job."""
    return {
        backend: [
            running(backend, "long-kept", 6, now, team="ml", **PROTECT),
            running(backend, "long-1", 5, now, team="ml"),
            running(backend, "long-young", 0.5, now),
        ]
        for backend in NAMES
    }


def explain(world: World, backend: str, name: str, *extra: str) -> CliResult:
    return run_cli("explain", backend, job_id(backend, name), "--config", str(world.config_path),
                   *extra)  # fmt: skip


def explain_json(world: World, backend: str, name: str, *extra: str) -> dict[str, Any]:
    result = explain(world, backend, name, "--json", *extra)
    assert result.code == 0, result.err
    body: dict[str, Any] = json.loads(result.out)
    return body


def section(text: str, header: str) -> str:
    """The lines of `text` from the line starting with `header` to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return "\n".join(lines[start:end])


def check_line(block: str, clause: str) -> str:
    """The one check line of `clause` in `block` (the first, if several)."""
    return next(line for line in block.splitlines() if line.split()[1:2] == [clause])


@pytest.fixture
def world(tmp_path: Path) -> Any:
    with standard_world(tmp_path, seeds=seeds(time.time()), policies_yaml=POLICIES) as w:
        yield w


@pytest.mark.parametrize("backend", TAGGED)
def test_explain_shows_the_match_the_exclusion_and_the_protection(
    world: World, backend: str
) -> None:
    result = explain(world, backend, "long-kept")
    assert result.code == 0, result.err
    out = result.out

    matched = section(out, "policy runtime-cap")
    assert "MATCHES" in matched.splitlines()[0]
    assert check_line(matched, "max_runtime").split()[0] == "holds"
    assert "runtime 6h00m" in check_line(matched, "max_runtime")
    assert "needed > 2h" in check_line(matched, "max_runtime")

    excluded = section(out, "policy ml-team-cap")
    assert "does not match" in excluded.splitlines()[0]
    assert "selectors: every selector holds" in excluded
    assert "exclude: excluded" in excluded
    names = check_line(excluded.split("exclude:")[1], "names")
    assert names.split()[0] == "holds" and "long-kept" in names and "needed ~ *-kept" in names

    third = section(out, "policy gpu-queue-cap")
    assert "MATCHES" in third.splitlines()[0]
    queues = check_line(third, "queues")  # AWS: the queue named as a listing names it
    assert queues.split()[:3] == ["holds", "queues", "gpu"]

    guards = section(out, "guards")
    protect = check_line(guards, "protect_tag")
    assert protect.split()[0] == "FAILS" and "reaper:keep=until friday" in protect
    assert check_line(guards, "recancel_window").split()[0] == "holds"
    assert check_line(guards, "pause_file").split()[0] == "holds"
    assert "max_cancels_per_sweep 100" in guards and "max_match_fraction 0.5" in guards

    decision = out.strip().splitlines()[-1]
    assert decision.startswith("decision: skip (protected): policy runtime-cap")
    assert "also matched: gpu-queue-cap" in decision


@pytest.mark.parametrize("backend", TAGGED)
def test_explain_json_shows_the_same(world: World, backend: str) -> None:
    body = explain_json(world, backend, "long-kept")
    assert body["schema_version"] == 1
    assert body["job"]["job_id"] == job_id(backend, "long-kept")
    assert body["job"]["queue"] == "gpu"
    by_name = {p["policy"]: p for p in body["policies"]}
    assert list(by_name) == ["runtime-cap", "ml-team-cap", "gpu-queue-cap"]
    assert by_name["runtime-cap"]["matches"] is True
    assert "runtime 6h00m > max_runtime 2h" in by_name["runtime-cap"]["facts"]
    assert by_name["gpu-queue-cap"]["matches"] is True

    team = by_name["ml-team-cap"]
    clauses = {c["clause"]: c for c in team["clauses"]}
    assert team["matches"] is False
    assert clauses["selectors"]["holds"] is True
    assert clauses["exclude"]["holds"] is False
    assert clauses["exclude"]["checks"] == [
        {"clause": "names", "observed": "long-kept", "needed": "~ *-kept", "holds": True}
    ]
    assert clauses["selectors"]["checks"][0] == {
        "clause": "tags.team", "observed": "ml", "needed": "~ ml", "holds": True,
    }  # fmt: skip

    guards = {g["clause"]: g for g in body["guards"]}
    assert guards["protect_tag"]["holds"] is False
    assert guards["protect_tag"]["observed"] == "reaper:keep=until friday"
    assert body["per_sweep"]["max_cancels_per_sweep"] == 100
    assert body["decision"] == {
        "action": "skip", "policy": "runtime-cap", "cause": "protected", "dry_run": False,
        "reason": body["decision"]["reason"], "also_matched": ["gpu-queue-cap"], "due": None,
    }  # fmt: skip
    assert body["decision"]["reason"].startswith("reaper policy runtime-cap: runtime 6h00m")


@pytest.mark.parametrize("backend", NAMES)
def test_explain_of_a_job_to_cancel_names_the_policy_and_the_reason(
    world: World, backend: str
) -> None:
    body = explain_json(world, backend, "long-1")
    decision = body["decision"]
    assert (decision["action"], decision["policy"], decision["cause"]) == (
        "cancel", "runtime-cap", None,
    )  # fmt: skip
    assert decision["reason"].startswith("reaper policy runtime-cap: runtime 5h00m > ")
    # Sutro jobs carry no tags and no queue: neither of the other caps can match there.
    assert decision["also_matched"] == (
        ["ml-team-cap", "gpu-queue-cap"] if backend in TAGGED else []
    )


def test_explain_makes_no_mutating_call_and_writes_no_audit_record(tmp_path: Path) -> None:
    """A real sweep first (so there is an audit log and a cancel still landing), then explain
    every job of every backend, text and JSON: not one mutating request, not one byte written.
    The job cancelled a moment ago is still running (AWS terminates after a delay): explain
    reads the audit tail and says a sweep would hold it back."""
    knobs = {name: Knobs(cancel_delay_s=3600) for name in NAMES}
    with standard_world(tmp_path, seeds=seeds(time.time()), policies_yaml=POLICIES,
                        knobs=knobs) as world:  # fmt: skip
        assert run_once(world).code == 0
        before_calls, before_log = mutating_calls(world), world.audit_path.read_bytes()
        assert before_calls["batch"] > 0
        for backend in NAMES:
            for name in ("long-kept", "long-1", "long-young"):
                assert explain(world, backend, name).code == 0
                assert explain(world, backend, name, "--json").code == 0
        assert mutating_calls(world) == before_calls
        assert world.audit_path.read_bytes() == before_log

        body = explain_json(world, "batch", "long-1")
        assert body["job"]["status"] == "RUNNING"
        guards = {g["clause"]: g for g in body["guards"]}
        assert guards["recancel_window"]["holds"] is False
        assert body["decision"]["cause"] == "recently_cancelled"


def test_explain_agrees_with_plan_on_every_job(tmp_path: Path) -> None:
    """The standard mix (matches, exclusions, protected, terminal, untouched): at one `--now`,
    explain's decision for each job is the plan's, reason included."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    with standard_world(tmp_path) as world:
        config = ("--config", str(world.config_path), "--now", at)
        plan = run_cli("plan", "--json", *config)
        assert plan.code == 0, plan.err
        planned = {
            (d["backend"], d["job_id"]): [d["action"], d["policy"], d["cause"], d["reason"],
                                          d["also_matched"]]
            for d in json.loads(plan.out)["decisions"]
        }  # fmt: skip
        assert len(planned) == 3 * 3 + 2  # TO_CANCEL on every backend, PROTECTED on two
        for backend in NAMES:
            for spec in standard_jobs(backend, 0):
                key = (backend, job_id(backend, spec.name))
                body = explain_json(world, backend, spec.name, "--now", at)
                d = body["decision"]
                shown = [d["action"], d["policy"], d["cause"], d["reason"], d["also_matched"]]
                assert shown == planned.get(key, ["none", None, None, None, []]), key


def test_now_evaluates_as_if_at_that_time(world: World) -> None:
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat(timespec="seconds")
    assert explain_json(world, "hpc", "long-young")["decision"]["action"] == "none"
    body = explain_json(world, "hpc", "long-young", "--now", later)
    assert body["now"] == later
    assert body["decision"]["action"] == "cancel"
    assert body["decision"]["policy"] == "runtime-cap"

    config = ("--config", str(world.config_path))
    young = job_id("hpc", "long-young")
    now_plan = run_cli("plan", "--job", young, *config)
    assert now_plan.code == 0, now_plan.err
    assert f"job {young}: no policy matches it" in now_plan.out
    later_plan = run_cli("plan", "--job", young, "--now", later, "--json", *config)
    decisions = json.loads(later_plan.out)["decisions"]
    assert [(d["job_id"], d["policy"], d["action"]) for d in decisions] == [
        (young, "runtime-cap", "cancel")
    ]


def test_plan_job_filters_the_plan_to_that_job(world: World) -> None:
    target = job_id("batch", "long-1")
    result = run_cli("plan", "--job", target, "--config", str(world.config_path))
    assert result.code == 0, result.err
    prefixes = tuple(f"{name} " for name in NAMES)
    rows = [line for line in result.out.splitlines() if line.startswith(prefixes)]
    assert [row.split()[1] for row in rows] == [target]
    assert "runtime-cap" in rows[0] and "cancel" in rows[0]


@pytest.mark.parametrize(
    ("now", "message"),
    [
        ("2026-12-01T12:00:00", "has no time zone"),
        ("2026-12-01", "has no time zone"),
        ("yesterday", "not an ISO 8601 time"),
        ("2026-13-01T12:00:00Z", "not an ISO 8601 time"),
    ],
)
@pytest.mark.parametrize("command", ["explain", "plan"])
def test_a_naive_or_malformed_now_is_a_usage_error(
    world: World, command: str, now: str, message: str
) -> None:
    where = ["batch", job_id("batch", "long-1")] if command == "explain" else []
    result = run_cli(command, *where, "--now", now, "--config", str(world.config_path))
    assert result.code == 2
    assert message in result.err


def test_a_job_that_cannot_be_read_exits_1_and_says_so(world: World) -> None:
    for backend in NAMES:
        result = run_cli("explain", backend, "no-such-job", "--config", str(world.config_path))
        assert result.code == 1
        assert f"job 'no-such-job' not found on backend {backend}" in result.err
        assert result.out == ""


def test_an_unknown_backend_is_a_usage_error_and_a_bad_config_exits_78(
    world: World, tmp_path: Path
) -> None:
    result = run_cli("explain", "nope", "x", "--config", str(world.config_path))
    assert result.code == 2 and "unknown backend 'nope'" in result.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: policies/\nbackends: 3\n", encoding="utf-8")
    assert run_cli("explain", "batch", "x", "--config", str(bad)).code == 78
    assert run_cli("explain", "batch").code == 2  # JOB_ID missing


def test_a_backend_that_cannot_be_built_exits_1_and_says_so(world: World) -> None:
    def unset_token(data: dict[str, Any]) -> None:
        data["backends"]["hpc"]["token_env"] = "REAPER_TEST_NO_SUCH_TOKEN"

    edit_config(world, unset_token)
    result = explain(world, "hpc", "long-1")
    assert result.code == 1
    assert "backend hpc not reachable" in result.err and result.out == ""


def test_an_aws_job_outside_the_configured_queues_is_never_listed(world: World) -> None:
    def only_cpu(data: dict[str, Any]) -> None:
        data["backends"]["batch"]["queues"] = ["cpu"]

    edit_config(world, only_cpu)
    body = explain_json(world, "batch", "long-1")
    assert body["policies"][0]["matches"] is True
    assert body["decision"]["action"] == "none"
    assert body["unlisted"] == "queue gpu is not in this backend's queues (cpu)"
    listing = next(g for g in body["guards"] if g["clause"] == "listing")
    assert listing["holds"] is False
    assert "a sweep never lists this job" in explain(world, "batch", "long-1").out


def test_an_aws_queue_configured_by_arn_is_named_as_the_listing_names_it(world: World) -> None:
    emulator_arn = world.emulators["batch"]._queue_arn("gpu")  # type: ignore[attr-defined]

    def by_arn(data: dict[str, Any]) -> None:
        data["backends"]["batch"]["queues"] = [emulator_arn]

    edit_config(world, by_arn)
    body = explain_json(world, "batch", "long-1")
    assert body["job"]["queue"] == emulator_arn
    assert body["unlisted"] is None
    plan = json.loads(run_cli("plan", "--json", "--config", str(world.config_path)).out)
    planned = {d["job_id"]: d["queue"] for d in plan["decisions"] if d["backend"] == "batch"}
    assert planned[job_id("batch", "long-1")] == emulator_arn
    assert body["decision"]["action"] == "cancel"

"""End to end: `reaper run --once` and `reaper plan` through the CLI, the real clients and the
three emulators. What is checked is what an operator would check afterwards: the emulators' job
table (and the reason the API recorded), the mutating calls they received, and the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reaper.emulators.world import World
from reaper.errors import ExitCode
from tests.e2e_support import (
    CANCELLED,
    NAMES,
    POLICIES,
    PROTECTED,
    TAGGED,
    TO_CANCEL,
    UNTOUCHED,
    audit_records,
    edit_config,
    expected_cancels,
    expected_protected,
    job_id,
    job_keys,
    last_sweep,
    mutating_calls,
    run_cli,
    run_once,
    run_subprocess,
    same_knobs,
    seeded_statuses,
    standard_seeds,
    standard_world,
    status_of,
)


def assert_standard_sweep_acted(world: World, records: list[dict[str, Any]]) -> None:
    """The standard mix after one real sweep: exactly TO_CANCEL cancelled, with their reasons;
    PROTECTED skipped; UNTOUCHED neither touched nor named in the audit."""
    sweep = last_sweep(records)
    assert job_keys(sweep, "intent") == expected_cancels()
    assert job_keys(sweep, "result", outcome="cancelled") == expected_cancels()
    assert job_keys(sweep, "result") == expected_cancels()
    assert job_keys(sweep, "skipped", cause="protected") == expected_protected()
    named = {r.get("job_id") for r in sweep}
    for backend in NAMES:
        for name in TO_CANCEL:
            assert status_of(world, backend, name) == CANCELLED[backend], (backend, name)
        for name in UNTOUCHED:
            assert job_id(backend, name) not in named
    for backend in TAGGED:
        assert status_of(world, backend, "long-kept") == "RUNNING"


def test_run_once_cancels_exactly_the_matching_jobs_with_their_reasons(tmp_path: Path) -> None:
    seeds = standard_seeds()
    with standard_world(tmp_path, seeds=seeds) as world:
        before = seeded_statuses(world, seeds)
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        records = audit_records(world)
        assert_standard_sweep_acted(world, records)
        after = seeded_statuses(world, seeds)
        changed = {jid for jid in before if before[jid] != after[jid]}
        assert changed == {jid for _, jid in expected_cancels()}
        results = {r["job_id"]: r for r in records if r["event"] == "result"}
        for backend in ("batch", "hpc"):  # the APIs that record a reason on the job
            for name in TO_CANCEL:
                jid = job_id(backend, name)
                assert world.emulators[backend].reason_of(jid) == results[jid]["reason"]
        long_1 = results[job_id("batch", "long-1")]
        assert long_1["policy"] == "runtime-cap"
        assert long_1["reason"].startswith("runtime-cap: long-1 ran 5h")
        assert long_1["reason"].endswith("on batch, the cap is 2h")
        assert results[job_id("hpc", "stale-1")]["policy"] == "stale-queue"
    # Listed as active: everything seeded but the finished job.
    assert "batch: 9 active; cancelled 3; skipped: protected 1" in result.out
    assert "hpc: 9 active; cancelled 3; skipped: protected 1" in result.out
    assert "inference: 8 active; cancelled 3" in result.out


def test_run_once_in_a_subprocess_with_the_worlds_credentials(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        result = run_subprocess(world, "run", "--once", "--config", str(world.config_path))
        assert result.code == ExitCode.OK, result.out + result.err
        assert_standard_sweep_acted(world, audit_records(world))
        for secret in world.environ.values():
            if secret and len(secret) > 12:
                assert secret not in result.out + result.err


def _drop_dry_run(data: dict[str, Any]) -> None:
    del data["dry_run"]


@pytest.mark.parametrize("how", ["flag", "config-default", "per-policy"])
def test_dry_run_makes_no_mutating_call_and_audits_intent_and_result(
    tmp_path: Path, how: str
) -> None:
    policies = POLICIES.replace("    max_pending: 2d\n", "    max_pending: 2d\n    dry_run: true\n")
    policies = policies.replace("max_runtime: 2h\n", "max_runtime: 2h\n    dry_run: true\n")
    with standard_world(tmp_path, policies_yaml=policies if how == "per-policy" else POLICIES) as w:
        if how == "config-default":
            edit_config(w, _drop_dry_run)
        result = run_once(w, "--dry-run") if how == "flag" else run_once(w)
        assert result.code == ExitCode.OK, result.out + result.err
        assert mutating_calls(w) == dict.fromkeys(NAMES, 0)
        sweep = last_sweep(audit_records(w))
        assert job_keys(sweep, "intent", dry_run=True) == expected_cancels()
        assert job_keys(sweep, "result", outcome="dry_run", dry_run=True) == expected_cancels()
        assert job_keys(sweep, "result") == expected_cancels()
        assert job_keys(sweep, "skipped", cause="protected") == expected_protected()
        for backend in NAMES:
            for name in TO_CANCEL:
                assert status_of(w, backend, name) != CANCELLED[backend]
        assert sweep[0]["event"] == "sweep_start"
        assert sweep[0]["dry_run"] is (how != "per-policy")
    # Dry run is loud: the operator is told why nothing was cancelled.
    notice = {"flag": "DRY RUN (--dry-run)", "config-default": "absent means true"}
    if how in notice:
        assert result.out.startswith("DRY RUN") and notice[how] in result.out, result.out
    else:
        assert "DRY RUN" not in result.out and "dry_run 3" in result.out


def test_second_run_holds_jobs_still_winding_down(tmp_path: Path) -> None:
    """Cancelled jobs that take a minute to stop are still listed as active by the next sweep:
    the re-cancel window holds them, and nothing new is cancelled."""
    with standard_world(tmp_path, knobs=same_knobs(cancel_delay_s=600)) as world:
        first = run_once(world)
        assert first.code == ExitCode.OK, first.out + first.err
        calls = mutating_calls(world)
        assert status_of(world, "batch", "long-1") == "RUNNING"  # terminating, not stopped yet
        second = run_once(world)
        assert second.code == ExitCode.OK, second.out + second.err
        assert mutating_calls(world) == calls
        sweep = last_sweep(audit_records(world))
        assert job_keys(sweep, "intent") == set()
        assert job_keys(sweep, "result") == set()
        # Sutro shows CANCELLING (terminal) at once and AWS fails a pending job at once: only the
        # jobs that are still listed as active need the window.
        still_listed = {("batch", job_id("batch", "long-1")), ("batch", job_id("batch", "long-2"))}
        still_listed |= {("hpc", job_id("hpc", name)) for name in TO_CANCEL}
        assert job_keys(sweep, "skipped", cause="recently_cancelled") == still_listed


def test_plan_makes_no_mutating_call_and_writes_no_audit(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        config = str(world.config_path)
        human = run_cli("plan", "--config", config)
        assert human.code == ExitCode.OK, human.out + human.err
        machine = run_cli("plan", "--config", config, "--json")
        assert machine.code == ExitCode.OK, machine.err
        assert mutating_calls(world) == dict.fromkeys(NAMES, 0)
        assert not world.audit_path.exists()
    assert "long-1" in human.out and "runtime-cap" in human.out
    document = json.loads(machine.out)
    assert document["schema_version"] == 1
    decisions = document["decisions"]
    assert {(d["backend"], d["job_id"]) for d in decisions if d["action"] == "cancel"} == (
        expected_cancels()
    )
    skips = {(d["backend"], d["job_id"]): d["cause"] for d in document["decisions"]}
    for key in expected_protected():
        assert skips[key] == "protected"
    assert {d["job_name"] for d in document["decisions"]} == {*TO_CANCEL, *PROTECTED}


def test_plan_filters_by_backend_and_policy(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        config = str(world.config_path)
        result = run_cli("plan", "--config", config, "--json", "--backend", "hpc",
                         "--policy", "stale-queue")  # fmt: skip
        assert result.code == ExitCode.OK, result.err
        assert mutating_calls(world) == dict.fromkeys(NAMES, 0)
    document = json.loads(result.out)
    assert list(document["backends"]) == ["hpc"]
    assert [d["job_id"] for d in document["decisions"]] == [job_id("hpc", "stale-1")]


def test_run_once_for_one_backend_and_a_misspelt_backend(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        typo = run_once(world, "--backend", "hcp")
        assert typo.code == ExitCode.USAGE, typo.out + typo.err
        assert "hcp" in typo.err
        assert not world.audit_path.exists()  # refused before the sweep started
        only = run_once(world, "--backend", "hpc")
        assert only.code == ExitCode.OK, only.out + only.err
        assert mutating_calls(world) == {"batch": 0, "hpc": 6, "inference": 0}
        assert job_keys(audit_records(world), "result") == expected_cancels(["hpc"])


def test_plan_works_when_the_audit_log_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`reaper plan` is how an operator previews a policy change; it only reads the audit log
    for the re-cancel window, so an unreadable log (a service-owned file mode 0600) is a warning,
    not a crash. A directory stands in for the unreadable file: tests may run as root."""
    (tmp_path / "audit.d").mkdir()
    with standard_world(tmp_path, config={"audit_log": "audit.d"}) as world:
        result = run_cli("plan", "--config", str(world.config_path), "--json")
        assert mutating_calls(world) == dict.fromkeys(NAMES, 0)
    assert result.code == ExitCode.OK, result.err
    assert "audit.d" in caplog.text and "re-cancel window" in caplog.text
    decisions = json.loads(result.out)["decisions"]
    assert {(d["backend"], d["job_id"]) for d in decisions if d["action"] == "cancel"} == (
        expected_cancels()
    )


def test_a_backend_that_cannot_be_built_is_audited_and_fails_the_run(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        edit_config(world, lambda c: c["backends"]["inference"].update(api_key_env="UNSET_KEY"))
        result = run_once(world)
        assert result.code == ExitCode.FAILED, result.out + result.err
        sweep = last_sweep(audit_records(world))
        assert "UNSET_KEY" in sweep[0]["unreachable"]["inference"]
        assert "not reachable" in sweep[-1]["backends"]["inference"]["error"]
        healthy = [n for n in NAMES if n != "inference"]
        assert job_keys(sweep, "result", outcome="cancelled") == expected_cancels(healthy)
        assert "inference: 0 active" in result.out and "ERROR: not reachable" in result.out

"""`reaper test --record` against the emulators, through the CLI: the file it writes holds real
records with today's decisions and passes `reaper test` unchanged; only reads are made; what
is not needed to decide (secrets, owners, other tags) is left out unless --keep-owners."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reaper.emulators.base import JobSpec
from tests.e2e_support import (
    NAMES,
    POLICIES,
    PROTECTED,
    TAGGED,
    TO_CANCEL,
    UNTOUCHED,
    job_id,
    mutating_calls,
    run_cli,
    running,
    standard_seeds,
    standard_world,
)

MODEL_POLICY = """
  - name: pricey-llama
    backends: [inference]
    max_age: 1h
    where:
      model: {glob: "llama-*-70b"}
"""


def seeds_with_extras(now: float) -> dict[str, list[JobSpec]]:
    """The standard mix, plus jobs carrying an owner tag, a secret and a `where` field."""
    seeds = standard_seeds(now)
    seeds["batch"].append(running("batch", "long-3", 4, now, owner="alice", team="ml"))
    seeds["hpc"].append(running("hpc", "long-3", 4, now, owner="alice"))
    spec = running("inference", "llama-1", 4, now)
    seeds["inference"].append(
        JobSpec(
            spec.name,
            spec.status,
            spec.created_at,
            spec.started_at,
            id=spec.id,
            extra={"model": "llama-3.1-70b", "job_cost": 9.0, "webhook_secret": "s3cr3t-value-123"},
        )
    )
    return seeds


def cases_by_id(path: Path) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return {str(case["name"]).rsplit("(", 1)[-1].rstrip(")"): case for case in data["cases"]}


@pytest.fixture
def world(tmp_path: Path) -> Any:
    with standard_world(
        tmp_path, seeds=seeds_with_extras(time.time()), policies_yaml=POLICIES + MODEL_POLICY
    ) as world:
        yield world


@pytest.mark.parametrize("backend", NAMES)
def test_a_recorded_file_passes_unchanged(world: Any, tmp_path: Path, backend: str) -> None:
    out = tmp_path / f"{backend}.test.yaml"
    config = str(world.config_path)
    recorded = run_cli("test", "--config", config, "--record", backend, "--out", str(out))
    assert recorded.code == 0, recorded.err
    assert "warning" not in recorded.err  # the whole listing was recorded
    cases = cases_by_id(out)
    expected = {job_id(backend, n): "cancel" for n in TO_CANCEL}
    expected |= {job_id(backend, n): "skip" for n in PROTECTED if backend in TAGGED}
    expected |= {job_id(backend, n): "none" for n in UNTOUCHED if n != "long-done"}
    assert {k: cases[k]["expect"]["action"] for k in expected} == expected
    assert job_id(backend, "long-done") not in cases  # terminal: not an active job
    check = run_cli("test", "--config", config, str(out))
    assert check.code == 0, check.out
    assert check.out.splitlines()[-1] == f"{len(cases)} passed, 0 failed"
    assert mutating_calls(world) == {name: 0 for name in NAMES}


def test_recorded_expectations_name_the_policy_and_the_cause(world: Any, tmp_path: Path) -> None:
    out = tmp_path / "batch.test.yaml"
    assert run_cli("test", "--config", str(world.config_path), "--record", "batch",
                   "--out", str(out)).code == 0  # fmt: skip
    cases = cases_by_id(out)
    assert cases[job_id("batch", "long-1")]["expect"] == {"action": "cancel",
                                                           "policy": "runtime-cap"}  # fmt: skip
    assert cases[job_id("batch", "long-kept")]["expect"] == {
        "action": "skip", "policy": "runtime-cap", "cause": "protected"}  # fmt: skip
    assert cases[job_id("batch", "long-1")]["queue"] == "gpu"


def test_records_keep_what_decides_and_drop_the_rest(world: Any, tmp_path: Path) -> None:
    config = str(world.config_path)
    paths = {}
    for backend in ("batch", "hpc", "inference"):
        paths[backend] = tmp_path / f"{backend}.test.yaml"
        assert run_cli("test", "--config", config, "--record", backend, "--out",
                       str(paths[backend])).code == 0  # fmt: skip
    aws = cases_by_id(paths["batch"])[job_id("batch", "long-3")]["record"]
    assert aws["tags"] == {}  # owner and team: no policy reads them
    assert "jobArn" not in aws and "jobDefinition" not in aws  # account ids, not needed
    assert cases_by_id(paths["batch"])[job_id("batch", "long-kept")]["record"]["tags"] == {
        "reaper:keep": "until friday"}  # fmt: skip
    tapis = cases_by_id(paths["hpc"])[job_id("hpc", "long-3")]["record"]
    assert "owner" not in tapis and "createdby" not in tapis
    assert tapis["tags"] == []
    sutro = cases_by_id(paths["inference"])[job_id("inference", "llama-1")]
    assert sutro["record"]["model"] == "llama-3.1-70b"  # read by pricey-llama's `where`
    assert "webhook_secret" not in sutro["record"] and "job_cost" not in sutro["record"]
    assert sutro["expect"] == {"action": "cancel", "policy": "pricey-llama"}
    assert "s3cr3t" not in paths["inference"].read_text()


def test_keep_owners_keeps_owner_fields_and_every_tag(world: Any, tmp_path: Path) -> None:
    config = str(world.config_path)
    out = tmp_path / "hpc.test.yaml"
    assert run_cli("test", "--config", config, "--record", "hpc", "--out", str(out),
                   "--keep-owners").code == 0  # fmt: skip
    tapis = cases_by_id(out)[job_id("hpc", "long-3")]["record"]
    assert tapis["owner"] and tapis["tags"] == ["owner=alice"]
    assert run_cli("test", "--config", config, str(out)).code == 0


def test_policy_and_limit_choose_the_cases(world: Any, tmp_path: Path) -> None:
    config = str(world.config_path)
    out = tmp_path / "stale.test.yaml"
    result = run_cli("test", "--config", config, "--record", "batch", "--policy", "stale-queue",
                     "--out", str(out))  # fmt: skip
    assert result.code == 0, result.err
    assert set(cases_by_id(out)) == {job_id("batch", "stale-1")}
    out = tmp_path / "two.test.yaml"
    assert run_cli("test", "--config", config, "--record", "batch", "--limit", "2", "--out",
                   str(out)).code == 0  # fmt: skip
    cases = cases_by_id(out)
    assert len(cases) == 2
    assert all(case["expect"]["action"] != "none" for case in cases.values())  # decided first
    assert run_cli("test", "--config", config, str(out)).code == 0


def test_record_usage_errors(world: Any, tmp_path: Path) -> None:
    config = str(world.config_path)
    out = str(tmp_path / "x.test.yaml")
    assert run_cli("test", "--config", config, "--record", "nope", "--out", out).code == 2
    assert run_cli("test", "--config", config, "--record", "batch").code == 2
    assert run_cli("test", "--config", config, "--record", "batch", "--policy", "nope",
                   "--out", out).code == 2  # fmt: skip
    assert not Path(out).exists()


def test_a_cut_that_changes_a_guard_outcome_is_warned_about(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from reaper.backends.memory import MemoryBackend
    from reaper.backends.records import parse_record
    from reaper.engine.decide import Guards
    from reaper.engine.record import RecordOptions, record
    from reaper.policy.config import load_policies

    (tmp_path / "p.yaml").write_text("policies:\n  - name: cap\n    max_runtime: 2h\n")
    policies = load_policies([tmp_path / "p.yaml"])
    records = [
        {"job_id": f"j{i}", "status": "RUNNING", "datetime_created": "2026-12-01T00:00:00Z",
         "datetime_started": "2026-12-01T01:00:00Z" if i < 6 else "2026-12-01T11:30:00Z"}
        for i in range(7)
    ]  # fmt: skip
    backend = MemoryBackend("s", "sutro", [parse_record("sutro", "s", r) for r in records])
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    whole = record(backend, policies, Guards(), now)
    assert {c["expect"].get("cause") for c in whole.document["cases"][:6]} == {"fraction_guard"}
    assert whole.warnings == []
    cut = record(backend, policies, Guards(), now, RecordOptions(limit=2))
    assert [c["expect"] for c in cut.document["cases"]] == [
        {"action": "cancel", "policy": "cap"}
    ] * 2
    assert len(cut.warnings) == 2
    assert "live skip by cap (fraction_guard), recorded cancel by cap" in cut.warnings[0]

"""End to end: every audit record of a cancel explains itself — which policy, from which file,
of which bytes (sha256), at which git commit, against which job, for what reason — and the
`reaper audit` queries and `reaper audit verify` work on what a real sweep wrote."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reaper.emulators.world import BACKENDS, World
from reaper.errors import ExitCode
from tests.e2e_support import (
    DAY,
    HOUR,
    PENDING,
    POLICIES,
    RUNNING,
    audit_records,
    expected_cancels,
    job_id,
    mutating_calls,
    run_cli,
    run_once,
    standard_world,
)

RUNTIME_CAP, STALE_QUEUE = POLICIES.split("\n\n")
QUEUES = {"batch": {"long-1": "gpu", "long-2": "gpu", "stale-1": "cpu"}}
QUEUES["hpc"] = QUEUES["batch"]
QUEUES["inference"] = dict.fromkeys(QUEUES["batch"], "")  # Sutro has no queues


def git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Reaper Test", "-c", "user.email=test@example.invalid",
               "-c", "commit.gpgsign=false", *args]  # fmt: skip
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def split_policy_files(world: World) -> dict[str, Path]:
    """Two policy files, so that each record must name its own: policy name → file."""
    first = world.folder / "policies" / "policies.yaml"
    first.write_text(RUNTIME_CAP + "\n", encoding="utf-8")
    second = world.folder / "policies" / "stale.yaml"
    second.write_text("policies:\n" + STALE_QUEUE, encoding="utf-8")
    return {"runtime-cap": first, "stale-queue": second}


def cancel_records(world: World) -> list[dict[str, Any]]:
    return [r for r in audit_records(world) if r["event"] in ("intent", "result")]


def assert_numbers(record: dict[str, Any], backend: str, name: str) -> None:
    """The status and durations the decision rested on (a few seconds of test run allowed)."""
    if name.startswith("stale"):
        assert record["status"] == PENDING[backend] and record["runtime_s"] is None
        assert 3 * DAY <= record["pending_s"] < 3 * DAY + 120
    else:
        hours = {"long-1": 5, "long-2": 3}[name]
        assert record["status"] == RUNNING[backend] and record["pending_s"] is None
        assert hours * HOUR <= record["runtime_s"] < hours * HOUR + 120


def assert_records_explain_cancels(
    records: list[dict[str, Any]], files: dict[str, Path], commits: dict[str, str | None]
) -> None:
    assert {(r["backend"], r["job_id"]) for r in records} == expected_cancels()
    assert len(records) == 2 * len(expected_cancels())  # an intent and a result each
    for record in records:
        policy = record["policy"]
        path = files[policy]
        assert Path(record["policy_file"]).resolve() == path.resolve()
        assert record["policy_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["policy_commit"] == commits[policy]
        backend, name = record["backend"], record["job_name"]
        assert record["job_id"] == job_id(backend, name)
        assert record["type"] == BACKENDS[backend]
        assert record["queue"] == QUEUES[backend][name]
        assert policy == ("stale-queue" if name.startswith("stale") else "runtime-cap")
        assert record["reason"] and record["dry_run"] is False
        assert_numbers(record, backend, name)
        if policy == "runtime-cap":
            assert record["reason"].startswith(f"runtime-cap: {name} ran ")
        else:
            assert record["reason"].startswith("reaper policy stale-queue: pending 3d")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_records_name_policy_file_sha256_and_git_commit(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        files = split_policy_files(world)
        git(tmp_path, "init", "--quiet")
        git(tmp_path, "add", "policies/policies.yaml")
        git(tmp_path, "commit", "--quiet", "-m", "runtime cap")
        first = git(tmp_path, "rev-parse", "HEAD")
        git(tmp_path, "add", "policies/stale.yaml")
        git(tmp_path, "commit", "--quiet", "-m", "stale queue")
        head = git(tmp_path, "rev-parse", "HEAD")
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        records = cancel_records(world)
    # Each file's commit is the last one that changed it (reaper/gitinfo.py).
    assert_records_explain_cancels(records, files, {"runtime-cap": first, "stale-queue": head})


def test_policy_commit_is_null_outside_a_git_work_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repo above
    with standard_world(tmp_path / "w") as world:
        files = split_policy_files(world)
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        records = cancel_records(world)
    assert_records_explain_cancels(records, files, dict.fromkeys(files))


def query(world: World, *filters: str) -> list[dict[str, Any]]:
    result = run_cli("audit", "--config", str(world.config_path), "--json", *filters)
    assert result.code == ExitCode.OK, result.err
    document = json.loads(result.out)
    assert document["schema_version"] == 1
    records: list[dict[str, Any]] = document["records"]
    return records


def flip_one_byte(path: Path, line_number: int, needle: bytes) -> None:
    """Flip the lowest bit of the first byte of `needle` on 1-based `line_number`."""
    lines = path.read_bytes().split(b"\n")
    line = bytearray(lines[line_number - 1])
    line[line.index(needle)] ^= 1
    lines[line_number - 1] = bytes(line)
    path.write_bytes(b"\n".join(lines))


def test_audit_queries_find_the_records_and_verify_names_an_altered_line(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        assert run_once(world).code == ExitCode.OK
        by_policy = query(world, "--policy", "stale-queue")
        target = job_id("hpc", "long-2")
        by_job = query(world, "--job", target)
        config = str(world.config_path)
        intact = run_cli("audit", "verify", "--config", config)
        lines = world.audit_path.read_bytes().splitlines()
        number = next(i for i, line in enumerate(lines, 1) if target.encode() in line)
        flip_one_byte(world.audit_path, number, b"long-2")
        broken = run_cli("audit", "verify", "--config", config)
    stale = {("batch", "batch-stale-1"), ("hpc", "hpc-stale-1"), ("inference", "inference-stale-1")}
    assert {(r["backend"], r["job_id"]) for r in by_policy} == stale
    assert {r["event"] for r in by_policy} == {"intent", "result"}
    assert [r["event"] for r in by_job] == ["intent", "result"]
    assert by_job[1]["outcome"] == "cancelled"
    assert by_job[1]["reason"] == by_job[0]["reason"]
    assert intact.code == ExitCode.OK, intact.out + intact.err
    assert broken.code == ExitCode.FAILED
    assert broken.out.startswith(f"{world.audit_path}:{number}:"), broken.out


def test_an_interrupted_cancel_is_reconciled_at_the_next_start(tmp_path: Path) -> None:
    """A crash between an `intent` and its `result` (here: the log cut after the first intent)
    is reconciled by the next `run --once`: each open intent gets an `unconfirmed→…` result from
    the job's state, nothing is cancelled twice, and the chain still verifies."""
    with standard_world(tmp_path) as world:
        assert run_once(world).code == ExitCode.OK
        lines = world.audit_path.read_bytes().splitlines(keepends=True)
        cut = next(i for i, line in enumerate(lines) if b'"event":"intent"' in line) + 1
        world.audit_path.write_bytes(b"".join(lines[:cut]))
        kept = audit_records(world)
        open_intents = {r["job_id"] for r in kept if r["event"] == "intent"} - {
            r["job_id"] for r in kept if r["event"] == "result"
        }
        calls = mutating_calls(world)
        second = run_once(world)
        assert second.code == ExitCode.OK, second.out + second.err
        assert mutating_calls(world) == calls
        added = audit_records(world)[len(kept) :]
        verified = run_cli("audit", "verify", "--config", str(world.config_path))
    reconciled = {r["job_id"]: r for r in added if r["event"] == "result"}
    assert open_intents and set(reconciled) == open_intents
    for record in reconciled.values():
        assert record["outcome"] == "unconfirmed→cancelled"
        assert record["policy_sha256"] and record["reason"]
    assert added[len(reconciled)]["event"] == "sweep_start"  # reconciled before the sweep
    assert verified.code == ExitCode.OK, verified.out


def test_an_open_intent_in_the_rotated_file_is_reconciled(tmp_path: Path) -> None:
    """A crash after an `intent`, then logrotate moves the log to PATH.1 before the restart:
    the next `run --once` still finds the open intent there and writes its result."""
    with standard_world(tmp_path) as world:
        assert run_once(world).code == ExitCode.OK
        lines = world.audit_path.read_bytes().splitlines(keepends=True)
        cut = next(i for i, line in enumerate(lines) if b'"event":"intent"' in line) + 1
        rotated = world.audit_path.with_name(world.audit_path.name + ".1")
        rotated.write_bytes(b"".join(lines[:cut]))
        world.audit_path.unlink()
        (intent,) = [json.loads(line) for line in lines[:cut] if b'"event":"intent"' in line]
        calls = mutating_calls(world)
        second = run_once(world)
        assert second.code == ExitCode.OK, second.out + second.err
        assert mutating_calls(world) == calls
        added = audit_records(world)
    results = [r for r in added if r["event"] == "result" and r["job_id"] == intent["job_id"]]
    assert [r["outcome"] for r in results] == ["unconfirmed→cancelled"]
    assert results[0]["sweep_id"] == intent["sweep_id"]

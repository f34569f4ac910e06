"""Static shards (docs/scale.md): `--shard i/n` over n instances sweeps every backend exactly
once, with a hash of the backend name that is the same in every process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reaper.emulators.base import JobSpec
from reaper.emulators.sutro import SutroEmulator
from reaper.emulators.world import patched_environ
from reaper.errors import ExitCode
from reaper.policy.config import load_config
from reaper.policy.shard import Shard, parse_shard, shard_of
from tests.e2e_support import run_cli

KEY_ENV = "REAPER_TEST_SUTRO_KEY"
API_KEY = "sk_emu_shard_test"
BACKENDS = [f"sutro-{n}" for n in range(9)]
POLICY = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    statuses: [running]
    max_runtime: 2h
"""


@contextmanager
def sharded_world(folder: Path, shard: dict[str, int] | None = None) -> Iterator[
    dict[str, SutroEmulator]
]:  # fmt: skip
    """Nine Sutro emulators, one long-running job each, and a reaper.yaml naming all nine."""
    with ExitStack() as stack:
        emulators = {}
        for name in BACKENDS:
            emulator = SutroEmulator(api_key=API_KEY).start()
            stack.callback(emulator.stop)
            started = time.time() - 5 * 3600
            emulator.add_job(JobSpec("long-1", "RUNNING", started - 60, started, id=f"{name}-1"))
            emulators[name] = emulator
        (folder / "policies.yaml").write_text(POLICY)
        config = {
            "policies": "policies.yaml",
            "audit_log": "audit.jsonl",
            "dry_run": False,
            "backends": {
                name: {"type": "sutro", "api_url": e.url, "api_key_env": KEY_ENV}
                for name, e in emulators.items()
            },
        }
        if shard is not None:
            config["shard"] = shard
        (folder / "reaper.yaml").write_text(yaml.safe_dump(config))
        stack.enter_context(patched_environ({KEY_ENV: API_KEY}))
        yield emulators


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_n_shards_cancel_on_every_backend_exactly_once(tmp_path, count):
    with sharded_world(tmp_path) as emulators:
        config = str(tmp_path / "reaper.yaml")
        for index in range(count):
            assert (
                run_cli("run", "--once", "--config", config, "--shard", f"{index}/{count}").code
                == 0
            )
        swept = [
            sorted(r["backends"]) for r in audit_records_at(tmp_path) if r["event"] == "sweep_end"
        ]
        cancels = {name: e.calls["CancelJob"] for name, e in emulators.items()}
    assert len(swept) == count
    flat = [name for names in swept for name in names]
    assert sorted(flat) == sorted(BACKENDS)  # every backend once, none twice
    assert cancels == dict.fromkeys(BACKENDS, 1)


def audit_records_at(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_config_shard_is_used_and_the_flag_overrides_it(tmp_path):
    with sharded_world(tmp_path, shard={"index": 1, "count": 3}) as emulators:
        config = str(tmp_path / "reaper.yaml")
        assert run_cli("run", "--once", "--config", config).code == 0
        from_config = {n for n, e in emulators.items() if e.calls["CancelJob"]}
        assert run_cli("run", "--once", "--config", config, "--shard", "0/3").code == 0
        from_flag = {n for n, e in emulators.items() if e.calls["CancelJob"]} - from_config
    assert from_config == set(Shard(1, 3).select(BACKENDS))
    assert from_flag == set(Shard(0, 3).select(BACKENDS))


def test_plan_shows_only_the_shards_backends(tmp_path):
    with sharded_world(tmp_path):
        config = str(tmp_path / "reaper.yaml")
        result = run_cli("plan", "--json", "--config", config, "--shard", "2/3")
    assert result.code == 0, result.err
    assert sorted(json.loads(result.out)["backends"]) == sorted(Shard(2, 3).select(BACKENDS))


def test_a_backend_outside_the_shard_is_refused_by_name(tmp_path):
    outside = next(n for n in BACKENDS if not Shard(0, 3).owns(n))
    with sharded_world(tmp_path) as emulators:
        config = str(tmp_path / "reaper.yaml")
        result = run_cli(
            "run", "--once", "--config", config, "--shard", "0/3", "--backend", outside
        )
        calls = sum(sum(e.calls.values()) for e in emulators.values())
    assert result.code == ExitCode.USAGE
    assert "not in shard 0/3" in result.err
    assert calls == 0


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_a_malformed_shard_flag_is_a_usage_error(tmp_path, text, capsys):
    with sharded_world(tmp_path):
        code = run_cli(
            "run", "--once", "--config", str(tmp_path / "reaper.yaml"), f"--shard={text}"
        ).code
    assert code == ExitCode.USAGE


def test_a_shard_index_past_the_count_in_the_config_is_a_config_error(tmp_path):
    with sharded_world(tmp_path, shard={"index": 3, "count": 3}):
        result = run_cli("validate", "--config", str(tmp_path / "reaper.yaml"))
    assert result.code == 78
    assert "index must be below count" in result.out + result.err


@given(st.lists(st.text(min_size=1), min_size=1, max_size=30, unique=True), st.integers(1, 12))
def test_every_name_belongs_to_exactly_one_shard(names, count):
    owners = [[i for i in range(count) if Shard(i, count).owns(n)] for n in names]
    assert all(len(o) == 1 for o in owners)


def test_the_hash_does_not_depend_on_the_process(tmp_path):
    """Python's hash() of a str changes with PYTHONHASHSEED; the shard must not."""
    code = (
        "from reaper.policy.shard import shard_of; print([shard_of(f'b{i}', 7) for i in range(50)])"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
        ).stdout
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert seen == {str([shard_of(f"b{i}", 7) for i in range(50)]) + "\n"}
    assert len(set(json.loads(seen.pop()))) > 1  # the names spread over several shards


def test_shard_of_is_sha256_of_the_name():
    # Computed here from the hex digest, independently of shard_of's byte slicing.
    expected = int(hashlib.sha256(b"batch").hexdigest()[:16], 16) % 5
    assert shard_of("batch", 5) == expected


@pytest.mark.parametrize("text, shard", [("0/3", Shard(0, 3)), (" 2/5 ", Shard(2, 5))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard


def test_a_config_without_shard_sweeps_every_backend(tmp_path):
    with sharded_world(tmp_path):
        config = load_config(tmp_path / "reaper.yaml")
    assert config.shard is None
    assert list(config.swept_backends) == list(config.backends)

"""Config loading, policy loading and the semantic checks (reaper/config.py)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Collection, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper.errors import ConfigError
from reaper.jobs import BACKEND_TYPES
from reaper.policy import config as config_module
from reaper.policy.config import (
    BackendConfig,
    Config,
    Schedule,
    find_config_path,
    load_all,
    load_config,
    load_policies,
)

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = "policies: policies/\naudit_log: audit.jsonl\n"
GPU_POLICY = "policies:\n  - name: gpu-cap\n    max_runtime: 12h\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def messages(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(d) for d in exc.value.diagnostics]


# ------------------------------------------------------------------------- finding the config


def test_config_path_precedence(tmp_path: Path) -> None:
    env = {"REAPER_CONFIG": "/from/env.yaml"}
    assert find_config_path("given.yaml", env, cwd=tmp_path) == Path("given.yaml")
    assert find_config_path(None, env, cwd=tmp_path) == Path("/from/env.yaml")
    assert find_config_path(None, {}, cwd=tmp_path) == Path("/etc/reaper/reaper.yaml")
    write(tmp_path / "reaper.yaml", MINIMAL)
    assert find_config_path(None, {}, cwd=tmp_path) == tmp_path / "reaper.yaml"
    assert find_config_path(None, {"REAPER_CONFIG": ""}, cwd=tmp_path) == tmp_path / "reaper.yaml"


# --------------------------------------------------------------------------------- the config


def test_example_config_loads_with_every_backend() -> None:
    config = load_config(ROOT / "examples" / "reaper.yaml")
    assert config.policies_path == ROOT / "examples" / "../policies/"
    assert config.audit_log == Path("/var/log/reaper/audit.jsonl")
    assert config.schedule == Schedule(every=timedelta(minutes=5), jitter=timedelta(seconds=20))
    assert config.dry_run is True
    assert {b.type for b in config.backends.values()} == set(BACKEND_TYPES)
    batch = config.backends["batch-prod"]
    assert batch.options["queues"] == ("gpu-a", "gpu-b", "gpu-eval", "cpu")
    assert batch.section == {
        "type": "aws_batch",
        "region": "us-east-1",
        "queues": batch.options["queues"],
    }


def test_defaults_of_a_minimal_config(tmp_path: Path) -> None:
    path = write(tmp_path / "reaper.yaml", MINIMAL)
    assert load_config(path) == Config(
        path=path, policies_path=tmp_path / "policies", audit_log=tmp_path / "audit.jsonl"
    )
    config = load_config(path)
    assert (config.dry_run, config.max_cancels_per_sweep, config.max_match_fraction) == (
        True,
        100,
        0.5,
    )
    assert (config.protect_tag, config.metrics_listen) == ("reaper:keep", "127.0.0.1:9464")
    assert config.schedule == Schedule(every=timedelta(minutes=5), cron=None, jitter=timedelta(0))
    assert dict(config.backends) == {}


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    text = MINIMAL + (
        "pause_file: PAUSE\nmetrics: {textfile: /abs/reaper.prom}\ndry_run: false\n"
        "backends:\n  t: {type: tapis, base_url: 'https://t.example', token_file: creds/token}\n"
    )
    config = load_config(write(tmp_path / "etc" / "reaper.yaml", text))
    assert config.pause_file == tmp_path / "etc" / "PAUSE"
    assert config.metrics_textfile == Path("/abs/reaper.prom")
    assert config.dry_run is False
    assert config.backends["t"] == BackendConfig(
        "t",
        "tapis",
        {"base_url": "https://t.example", "token_file": str(tmp_path / "etc/creds/token")},
    )


def test_cron_schedule_and_zero_jitter(tmp_path: Path) -> None:
    text = MINIMAL + 'schedule: {cron: "*/10 * * * *", jitter: "0"}\n'
    config = load_config(write(tmp_path / "reaper.yaml", text))
    assert config.schedule == Schedule(every=None, cron="*/10 * * * *", jitter=timedelta(0))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('schedule:\n  cron: "61 * * * *"\n', "4:9: invalid cron expression '61 * * * *'"),
        (
            'schedule:\n  cron: "* * *"\n',
            "4:9: invalid cron expression '* * *': Wrong number of fields",
        ),
        (
            'schedule:\n  every: 5m\n  cron: "* * * * *"\n',
            "5:3: give either 'every' or 'cron', not both",
        ),
        ("schedule:\n  every: 0s\n", "4:10: invalid duration '0s': must be longer than zero"),
        ("schedule:\n  every: 5\n", "4:10: 'every' must be a duration with a unit"),
        ("metrics:\n  listen: 127.0.0.1:99999\n", "4:11: port out of range in '127.0.0.1:99999'"),
        (
            "limits:\n  max_match_fraction: 1.5\n",
            "4:23: 'max_match_fraction' must be at most 1; got 1.5",
        ),
        (
            "dry_run: yes please\n",
            "3:10: 'dry_run' must be true or false, not the text 'yes please'",
        ),
        (
            "backends:\n  b: {type: aws_batch, regoin: x}\n",
            "4:24: unknown key 'regoin'; did you mean 'region'?",
        ),
        (
            "backends:\n  b: {type: aws-batch}\n",
            "4:13: 'type' must be one of aws_batch, tapis, sutro",
        ),
        (
            "backends:\n  b: {type: tapis}\n",
            "4:6: tapis backend is missing the required key 'base_url'",
        ),
        (
            "backends:\n  b: {type: tapis, base_url: 'https://x', username_env: U}\n",
            "4:43: username_env needs password_env as well",
        ),
        (
            "backends:\n  b: {type: tapis, base_url: 'https://x', token_env: T, token_file: f}\n",
            "4:6: give one credential source",
        ),
        (
            "backends:\n  b: {type: sutro, api_key_env: K, api_key_file: f, api_url: https://s.example}\n",
            "4:36: give api_key_env or api_key_file, not both",
        ),
        (
            "backends:\n  b: {type: sutro, api_key: sk-123, api_url: https://s.example}\n",
            "4:20: unknown key 'api_key'; secrets never go in YAML",
        ),
        (
            "backends:\n  b: {type: aws_batch, job_kinds: [container, servce]}\n",
            "4:47: job kind must be one of container, service; got 'servce'; did you mean",
        ),
        (
            "backends:\n  b: {type: aws_batch, job_kinds: [service, service]}\n",
            "4:35: 'job_kinds' names 'service' more than once",
        ),
        (
            "backends:\n  b: {type: aws_batch, job_kinds: []}\n",
            "4:35: 'job_kinds' must not be empty",
        ),
        (
            "backends:\n  b: {type: tapis, base_url: 'https://x', username_env: U,"
            " password_env: P, client_id: c}\n",
            "4:77: client_id needs client_key_env or client_key_file",
        ),
        (
            "backends:\n  b: {type: tapis, base_url: 'https://x', token_env: T,"
            " client_id: c, client_key_env: K}\n",
            "4:57: client_id needs username_env and password_env",
        ),
        (
            "backends:\n  b: {type: tapis, base_url: 'https://x', username_env: U,"
            " password_env: P, client_key_file: k}\n",
            "4:77: client_key_file needs client_id as well",
        ),
        (
            "backends:\n  b: {type: tapis, base_url: 'https://x', client_key: abc123}\n",
            "4:43: unknown key 'client_key'; secrets never go in YAML",
        ),
    ],
)
def test_config_problems_are_located(tmp_path: Path, extra: str, expected: str) -> None:
    path = write(tmp_path / "reaper.yaml", MINIMAL + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.diagnostics) == 1, messages(caught)
    assert str(caught.value.diagnostics[0]).startswith(f"{path}:{expected}")


def test_a_secret_value_is_never_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "reaper.yaml", MINIMAL + "backends:\n  b: {type: sutro, api_key: sk-live-123}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "sk-live-123" not in str(caught.value)


def test_missing_required_keys_point_at_the_top(tmp_path: Path) -> None:
    path = write(tmp_path / "reaper.yaml", "dry_run: true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert sorted(messages(caught)) == [
        f"{path}:1:1: reaper deployment config is missing the required key 'audit_log'",
        f"{path}:1:1: reaper deployment config is missing the required key 'policies'",
    ]


# ------------------------------------------------------------------------------- the policies


def test_folder_gives_its_yaml_files_sorted(tmp_path: Path) -> None:
    write(tmp_path / "b.yml", "policies:\n  - name: b\n    max_age: 1d\n")
    write(
        tmp_path / "a.yaml",
        "policies:\n  - name: a\n    max_age: 1d\n  - name: a2\n    max_age: 1d\n",
    )
    write(tmp_path / ".hidden.yaml", "not: [valid")
    write(tmp_path / "README.md", "ignored")
    policy_set = load_policies([tmp_path])
    assert [p.name for p in policy_set.policies] == ["a", "a2", "b"]
    first = policy_set.policies[0].source
    assert (first.file, first.position) == (str(tmp_path / "a.yaml"), 0)
    assert len(first.sha256) == 64


def test_empty_folder_and_missing_path_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_policies([tmp_path / "empty", tmp_path / "absent.yaml"])
    assert messages(caught) == [
        f"{tmp_path}/absent.yaml:1:1: no such policy file or folder",
        f"{tmp_path}/empty:1:1: no policy files (*.yaml, *.yml) in this folder",
    ]


def test_an_empty_policy_list_is_valid(tmp_path: Path) -> None:
    assert load_policies([write(tmp_path / "p.yaml", "policies: []\n")]).policies == ()


def test_duplicate_names_in_one_file_and_across_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", GPU_POLICY + "  - name: gpu-cap\n    max_age: 1d\n")
    write(tmp_path / "b.yaml", GPU_POLICY)
    with pytest.raises(ConfigError) as caught:
        load_policies([tmp_path])
    assert messages(caught) == [
        f"{tmp_path}/a.yaml:4:11: policy name 'gpu-cap' is already used at {tmp_path}/a.yaml:2:11",
        f"{tmp_path}/b.yaml:2:11: policy name 'gpu-cap' is already used at {tmp_path}/a.yaml:2:11",
    ]


def test_one_bad_file_invalidates_the_set_and_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "policies:\n  - name: a\n    max_runtime: 12\n")
    write(tmp_path / "b.yaml", "policies:\n  - name: b\n    max_runtime: 1h\n")
    write(tmp_path / "c.yaml", "policies: [\n")
    with pytest.raises(ConfigError) as caught:
        load_policies([tmp_path])
    files = [Path(d.file).name for d in caught.value.diagnostics]
    assert files == ["a.yaml", "c.yaml"]


def test_backend_references_are_checked_only_with_a_config(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "policies:\n  - name: a\n    backends: [prod, sutro]\n    max_age: 1d\n",
    )
    assert len(load_policies([path]).policies) == 1
    backends = {"prod": BackendConfig("prod", "aws_batch")}
    with pytest.raises(ConfigError) as caught:
        load_policies([path], backends)
    assert messages(caught) == [f"{path}:3:22: unknown backend 'sutro': the config defines prod"]


class RecordingCompiler:
    """Wraps the real compile_policy and records the target types it was given."""

    def __init__(self) -> None:
        self.real = config_module.compile_policy
        self.seen: dict[str, list[str]] = {}

    def __call__(self, raw: Mapping[str, Any], source: Any, target_types: Collection[str]) -> Any:
        self.seen[raw["name"]] = sorted(target_types)
        return self.real(raw, source, target_types)


def test_target_types_come_from_the_backends_a_policy_can_meet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingCompiler()
    monkeypatch.setattr(config_module, "compile_policy", recorder)
    text = "policies:\n  - {name: all, max_age: 1d}\n  - {name: one, backends: [s], max_age: 1d}\n"
    path = write(tmp_path / "p.yaml", text)
    load_policies([path])
    assert recorder.seen == {"all": sorted(BACKEND_TYPES), "one": sorted(BACKEND_TYPES)}
    backends = {"s": BackendConfig("s", "sutro"), "b": BackendConfig("b", "aws_batch")}
    load_policies([path], backends)
    assert recorder.seen == {"all": ["aws_batch", "sutro"], "one": ["sutro"]}


def test_schema_and_compile_problems_are_reported_together_without_repeats(
    tmp_path: Path,
) -> None:
    text = (
        "policies:\n"
        "  - name: bad\n"
        "    max_age: 12\n"
        '    reason: "{user}"\n'
        "  - name: good\n"
        '    names: ["x"]\n'
        '    reason: "{job.__class__}"\n'
    )
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_policies([path])
    located = [(d.line, d.column, d.message.split(":")[0]) for d in caught.value.diagnostics]
    assert located == [
        (
            3,
            14,
            "'max_age' must be a duration with a unit, e.g. 90s, 15m, 12h, 1h30m, 2d; a bare "
            "number such as 12 is ambiguous",
        ),
        (4, 13, "unknown placeholder {user}"),
        (7, 13, "unknown placeholder {job.__class__}"),
    ]


# ----------------------------------------------------------------------------- config + policies


def test_load_all_reads_the_policies_the_config_points_to(tmp_path: Path) -> None:
    write(tmp_path / "policies" / "gpu.yaml", GPU_POLICY)
    config, policy_set = load_all(write(tmp_path / "reaper.yaml", MINIMAL))
    assert config.policies_path == tmp_path / "policies"
    assert [p.name for p in policy_set.policies] == ["gpu-cap"]


def test_load_all_reports_policy_errors_even_when_the_config_is_invalid(tmp_path: Path) -> None:
    write(tmp_path / "policies" / "gpu.yaml", "policies:\n  - name: x\n    max_age: 5\n")
    path = write(tmp_path / "reaper.yaml", MINIMAL + "dry_rn: false\n")
    with pytest.raises(ConfigError) as caught:
        load_all(path)
    assert [Path(d.file).name for d in caught.value.diagnostics] == ["gpu.yaml", "reaper.yaml"]


# ---------------------------------------------------------------------------------- git commit


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_policy_source_carries_the_git_commit_of_its_file(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    git("init", "-q")
    write(tmp_path / "tracked.yaml", GPU_POLICY)
    git("add", "tracked.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "policy")
    write(tmp_path / "untracked.yaml", "policies:\n  - name: other\n    max_age: 1d\n")
    policies = {p.name: p.source for p in load_policies([tmp_path]).policies}
    assert policies["gpu-cap"].commit == git("rev-parse", "HEAD")
    assert policies["other"].commit is None


def test_policy_source_commit_is_none_outside_a_work_tree(tmp_path: Path) -> None:
    ceiling = {"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ceiling.items():
            patch.setenv(key, value)
        source = load_policies([write(tmp_path / "p.yaml", GPU_POLICY)]).policies[0].source
    assert source.commit is None


# ------------------------------------------------------------------------------------- fuzzing

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8)
)
KEYS = st.sampled_from(
    ["name", "queues", "tags", "where", "exclude", "max_runtime", "type", "every", "cron",
     "backends", "schedule", "metrics", "listen", "limits", "x", "regex", "gt", "in"]
)  # fmt: skip
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSONISH, max_size=4))
def test_any_config_data_gives_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    text = yaml.safe_dump({"policies": "p", "audit_log": "a", **data})
    try:
        load_config_text(text)
    except ConfigError as exc:
        assert all(d.line >= 1 for d in exc.diagnostics)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(KEYS, JSONISH, max_size=5), max_size=3))
def test_any_policy_data_gives_a_set_or_a_config_error(policies: list[Any]) -> None:
    text = yaml.safe_dump({"policies": policies})
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "p.yaml", text)
        try:
            load_policies([path], {"b": BackendConfig("b", "aws_batch")})
        except ConfigError as exc:
            assert all(d.file == str(path) and d.line >= 1 for d in exc.diagnostics)


def load_config_text(text: str) -> Config:
    with tempfile.TemporaryDirectory() as folder:
        return load_config(write(Path(folder) / "reaper.yaml", text))


def test_a_file_named_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", GPU_POLICY)
    assert len(load_policies([tmp_path, path]).policies) == 1


def test_a_missing_policies_path_is_reported_at_the_config_line(tmp_path: Path) -> None:
    path = write(tmp_path / "reaper.yaml", "audit_log: a.jsonl\npolicies: nowhere/\n")
    with pytest.raises(ConfigError) as caught:
        load_all(path)
    assert messages(caught) == [f"{path}:2:11: no such policy file or folder: {tmp_path}/nowhere"]

"""`reaper validate` and `reaper test` must stay light: no SDK, scheduler, metrics or HTTP
client import (docs/commands.md: "no network, no credentials, no SDK imports")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = (
    "boto3", "botocore", "tapipy", "apscheduler", "prometheus_client", "requests", "apprise",
)  # fmt: skip


def imported_modules(*args: str) -> set[str]:
    """Top-level names of every module imported by `python -X importtime -m reaper ARGS`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REAPER_CONFIG", None)
    command = [sys.executable, "-X", "importtime", "-m", "reaper", *args]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    names = {line.rsplit("|", 1)[-1].strip() for line in lines[1:]}  # [0] is the header
    assert "reaper.policy.config" in names  # the trace is real
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "policies/"],
        ["validate", "policies/gpu-runtime-cap.yaml"],
        ["validate", "--config", "examples/reaper.yaml"],
        ["test", "--config", "examples/reaper.yaml"],
        ["test", "--config", "examples/reaper.yaml", "--json", "policies/tests/"],
    ],
)
def test_validate_and_test_import_no_sdk(args: list[str]) -> None:
    assert imported_modules(*args) & set(FORBIDDEN) == set()


def test_the_trace_does_see_a_lazy_import(tmp_path: Path) -> None:
    # A cron schedule is checked with APScheduler, imported only then: proof the check can fail.
    (tmp_path / "p.yaml").write_text("policies: []\n")
    config = tmp_path / "reaper.yaml"
    config.write_text('policies: p.yaml\naudit_log: a.jsonl\nschedule: {cron: "* * * * *"}\n')
    assert "apscheduler" in imported_modules("validate", "--config", str(config))


def test_validate_imports_apprise_only_to_check_a_notifier_url_it_knows(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("policies: []\n")
    config = tmp_path / "reaper.yaml"
    base = "policies: p.yaml\naudit_log: a.jsonl\nnotifiers:\n"
    config.write_text(base + "  hook: {url_env: REAPER_TEST_UNSET_URL}\n")
    assert "apprise" not in imported_modules("validate", "--config", str(config))
    config.write_text(base + "  hook: {url: 'json://127.0.0.1:9/x'}\n")
    assert "apprise" in imported_modules("validate", "--config", str(config))

"""No secrets at rest by accident (docs/systemd.md, "Core dumps"): the commands that load
credentials forbid core dumps (RLIMIT_CORE 0, PR_SET_DUMPABLE 0), and the redaction that guards
the logs also guards audit records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reaper.audit.writer import AuditLog
from tests.daemon_support import ROOT, daemon_process, events, free_port, wait_for
from tests.e2e_support import standard_world

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")

PLAN_THEN_REPORT = """
import sys
from reaper.cli import main
from reaper.redact import is_dumpable
print("before", is_dumpable(), flush=True)
code = main(["plan", "--config", sys.argv[1]])
print("after", is_dumpable(), flush=True)
"""


def core_limits(pid: int) -> list[str]:
    """The soft and hard `Max core file size` of a process, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core file size in /proc/PID/limits")


@linux_only
def test_a_running_daemon_has_a_core_file_size_of_zero(tmp_path: Path) -> None:
    config = {"schedule": {"every": "1h"}, "metrics": {"listen": f"127.0.0.1:{free_port()}"}}
    with (
        standard_world(tmp_path, config=config) as world,
        daemon_process(world, tmp_path / "daemon.log") as daemon,
    ):
        wait_for(lambda: events(world.audit_path, "sweep_end"), 30, "the first sweep")
        assert core_limits(daemon.pid) == ["0", "0"]
        daemon.terminate()
        assert daemon.wait(60) == 0


@linux_only
def test_a_command_that_loads_credentials_makes_the_process_non_dumpable(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", PLAN_THEN_REPORT, str(world.config_path)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith(("before", "after"))]
    assert lines == ["before True", "after False"], done.stdout + done.stderr


def test_audit_records_are_redacted_as_log_lines_are(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    echoed = (
        "InvalidSignature: the request signed with aws_secret_access_key=wJalrXUtnFEMI/K7MDENG"
        " by AKIAIOSFODNN7EXAMPLE was refused"
    )
    with AuditLog(path, host="h") as log:
        record = log.append("result", error=echoed, facts=["Authorization: Bearer abc.def.ghi-jkl"])
    text = path.read_text()
    for secret in ("wJalrXUtnFEMI/K7MDENG", "AKIAIOSFODNN7EXAMPLE", "abc.def.ghi-jkl"):
        assert secret not in text and secret not in str(record)
    assert "[REDACTED]" in record["error"] and "InvalidSignature" in record["error"]


def test_command_output_is_redacted_as_log_lines_are(tmp_path: Path) -> None:
    """A credential that reached a job's name (or an error) is masked on stdout too."""
    import time

    from reaper.emulators.base import JobSpec
    from tests.e2e_support import run_cli, standard_seeds

    seeds = standard_seeds()
    now = time.time()
    leaked = "long-AKIAIOSFODNN7EXAMPLE"
    seeds["batch"].append(JobSpec(leaked, "RUNNING", now - 7 * 3600, now - 6 * 3600,
                                  queue="gpu", id="batch-leaky"))  # fmt: skip
    with standard_world(tmp_path, seeds=seeds) as world:
        shown = run_cli("plan", "--json", "--config", str(world.config_path)).out
        assert '"job_name": "long-[REDACTED]"' in shown
        for argv in (["plan"], ["run", "--once"]):
            result = run_cli(*argv, "--config", str(world.config_path))
            assert "AKIAIOSFODNN7EXAMPLE" not in result.out + result.err, argv
        assert "AKIAIOSFODNN7EXAMPLE" not in world.audit_path.read_text()

"""The systemd units pass `systemd-analyze verify` and rate ≤ 1.5 in `security --offline`.

`verify` also checks that every Exec*= binary exists and is executable. /usr/local/bin/reaper
is where the package's console script lands in production, not on a test machine, so the
verify test copies the units into a temp dir and points ExecStart= at a stand-in executable
there; everything else in the files is checked unchanged. A second test runs verify on the
untouched unit and accepts only the one complaint about that missing binary, so the
substitution cannot hide any other problem."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
SERVICES = ("reaper.service", "reaper-once.service")
TEMPLATE = "reaper@.service"  # one shard per instance (docs/scale.md)
UNITS = (*SERVICES, TEMPLATE, "reaper.timer")
INSTALLED_BINARY = "/usr/local/bin/reaper"
MAX_EXPOSURE = 1.5
# [Service] keys that differ between the daemon and the one-shot unit on purpose.
NOT_HARDENING = frozenset(
    {"Type", "NotifyAccess", "ExecStart", "ExecReload", "WatchdogSec", "Restart", "RestartSec",
     "RestartPreventExitStatus", "TimeoutStartSec", "TimeoutStopSec"}
)  # fmt: skip
# ... and between the daemon and its sharded template: each instance has its own state.
PER_INSTANCE = frozenset({"ExecStart", "StateDirectory", "LogsDirectory"})
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def run_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def read_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section → key → every value it is given, in order (systemd.syntax(7);
    our files use no line continuations)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD_DIR / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{name}: continuation lines are not parsed here"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def single_values(section: dict[str, list[str]]) -> dict[str, str]:
    """Keys given once, as plain strings; a key given twice fails the test."""
    repeated = {key for key, values in section.items() if len(values) > 1}
    allowed = {"LoadCredential", "SystemCallFilter"}
    assert repeated <= allowed, repeated
    return {key: values[-1] for key, values in section.items() if key not in repeated}


def copy_with_standin_binary(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart= runs an executable stand-in in tmp_path."""
    standin = tmp_path / "bin" / "reaper"
    standin.parent.mkdir()
    standin.write_text("#!/bin/sh\nexit 0\n")
    standin.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text()
        (units / name).write_text(text.replace(INSTALLED_BINARY, str(standin)))
    return units


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_verify_reports_nothing(tmp_path, unit):
    units = copy_with_standin_binary(tmp_path)
    result = run_analyze("verify", f"./{unit}", cwd=units)
    # verify exits 0 even for warnings such as "Unknown key name": the output must be empty.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
@pytest.mark.parametrize("unit", [*SERVICES, TEMPLATE])
def test_verify_of_the_shipped_file_only_misses_the_installed_binary(unit):
    result = run_analyze("verify", f"./{unit}", cwd=SYSTEMD_DIR)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line]
    assert all(INSTALLED_BINARY in line for line in complaints), complaints


@needs_analyze
@pytest.mark.parametrize("unit", [*SERVICES, TEMPLATE])
def test_security_exposure_is_at_most_1_5(unit):
    result = run_analyze("security", "--offline=true", "--no-pager", f"./{unit}", cwd=SYSTEMD_DIR)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE


def test_daemon_unit_speaks_notify_and_does_not_restart_on_bad_config():
    service = single_values(read_unit("reaper.service")["Service"])
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"].startswith(f"{INSTALLED_BINARY} daemon")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "78"
    for key in ("WatchdogSec", "TimeoutStopSec"):
        assert service[key]


@pytest.mark.parametrize("unit", SERVICES)
def test_services_load_both_credentials_and_keep_state_in_managed_directories(unit):
    sections = read_unit(unit)["Service"]
    credentials = sections["LoadCredential"]
    service = single_values(sections)
    assert "tapis-token:/etc/reaper/credentials/tapis-token" in credentials
    assert "sutro-api-key:/etc/reaper/credentials/sutro-api-key" in credentials
    assert service["DynamicUser"] == "yes"
    assert (service["StateDirectory"], service["LogsDirectory"]) == ("reaper", "reaper")
    assert service["ConfigurationDirectory"] == "reaper"


@pytest.mark.parametrize("unit", [*SERVICES, TEMPLATE])
def test_services_write_no_core_files(unit):
    """A core dump of reaper would hold its credentials (docs/systemd.md)."""
    assert single_values(read_unit(unit)["Service"])["LimitCORE"] == "0"


def test_both_services_share_the_same_hardening():
    def hardening(unit: str) -> dict[str, list[str]]:
        service = read_unit(unit)["Service"]
        return {key: value for key, value in service.items() if key not in NOT_HARDENING}

    assert hardening("reaper.service") == hardening("reaper-once.service")


def test_oneshot_unit_runs_one_sweep_with_a_start_timeout():
    service = single_values(read_unit("reaper-once.service")["Service"])
    assert service["Type"] == "oneshot"
    assert " run --once" in service["ExecStart"]
    assert service["TimeoutStartSec"]


def test_timer_starts_the_oneshot_unit_with_jitter_and_catch_up():
    timer = single_values(read_unit("reaper.timer")["Timer"])
    assert timer["Unit"] == "reaper-once.service"
    assert timer["OnCalendar"] == "*:0/5"
    assert timer["RandomizedDelaySec"]
    assert timer["Persistent"] == "true"


def test_the_template_runs_its_instance_as_a_shard_with_its_own_config_and_state():
    sections = read_unit(TEMPLATE)
    service = single_values(sections["Service"])
    assert service["ExecStart"] == (
        f"{INSTALLED_BINARY} daemon --config /etc/reaper/reaper@%i.yaml --shard %I"
    )
    # reaper@0-3: %i is "0-3", %I its unescaped form "0/3" (systemd.unit(5), "Specifiers").
    assert (service["StateDirectory"], service["LogsDirectory"]) == ("reaper/%i", "reaper/%i")
    conflicts = single_values(sections["Unit"])["Conflicts"].split()
    assert {"reaper.service", "reaper.timer", "reaper-once.service"} <= set(conflicts)


def test_the_template_keeps_every_other_setting_of_the_daemon_unit():
    def service(unit: str) -> dict[str, list[str]]:
        found = read_unit(unit)["Service"]
        return {key: value for key, value in found.items() if key not in PER_INSTANCE}

    assert service(TEMPLATE) == service("reaper.service")


@needs_analyze
def test_an_instance_of_the_template_verifies(tmp_path):
    units = copy_with_standin_binary(tmp_path)
    (units / "reaper@0-3.service").write_text((units / TEMPLATE).read_text())
    result = run_analyze("verify", "./reaper@0-3.service", cwd=units)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

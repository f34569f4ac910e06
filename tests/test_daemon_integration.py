"""`reaper daemon` as systemd runs it: a subprocess with $NOTIFY_SOCKET and $WATCHDOG_USEC,
sweeping the three emulators on a 1 s schedule, reloaded with SIGHUP (a broken policy file,
then a good one) and stopped with SIGTERM while a cancel is in flight; and the watchdog going
quiet while a backend hangs.

Every wait is bounded (`wait_for` with a deadline); nothing asserts how long anything took."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reaper.emulators.base import JobSpec
from reaper.emulators.world import World, emulated_world
from tests.daemon_support import NotifyListener, daemon_process, events, free_port, wait_for

HOUR = 3600.0
NOW = time.time()
SEEDS = {
    "batch": [
        JobSpec("train-old-1", "RUNNING", NOW - 14 * HOUR, NOW - 13 * HOUR, queue="gpu-a"),
        JobSpec("train-ok-1", "RUNNING", NOW - 2 * HOUR, NOW - HOUR, queue="gpu-a"),
        JobSpec("train-ok-2", "RUNNING", NOW - 2 * HOUR, NOW - HOUR, queue="gpu-a"),
    ],
    "hpc": [
        JobSpec("sim-target", "RUNNING", NOW - 21 * HOUR, NOW - 20 * HOUR, queue="normal"),
        JobSpec("sim-ok-1", "RUNNING", NOW - 2 * HOUR, NOW - HOUR, queue="normal"),
        JobSpec("sim-ok-2", "RUNNING", NOW - 2 * HOUR, NOW - HOUR, queue="normal"),
    ],
    "inference": [
        JobSpec("slow-target", "RUNNING", NOW - 9 * HOUR, NOW - 8 * HOUR),
        JobSpec("eval-1", "RUNNING", NOW - HOUR, NOW - HOUR / 2),
        JobSpec("eval-2", "RUNNING", NOW - HOUR, NOW - HOUR / 2),
    ],
}
TRAIN_CAP = """\
  - name: train-cap
    backends: [batch]
    names: ["train-*"]
    max_runtime: 12h
"""
SIM_CAP_BROKEN = """\
  - name: sim-cap
    backends: [hpc]
    names: [sim-target]
    max_runtime: twelve hours
"""
SIM_CAP = SIM_CAP_BROKEN.replace("twelve hours", "12h")
INFERENCE_CAP = """\
  - name: inference-cap
    backends: [inference]
    names: [slow-target]
    max_age: 6h
"""
NOTHING = """\
policies:
  - name: nothing-matches
    names: [no-such-job]
    max_runtime: 1h
"""
WATCHDOG_USEC = "1000000"  # 1 s: the daemon pings every 0.25 s while healthy


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


def daemon_env(notify: NotifyListener) -> dict[str, str]:
    return {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": WATCHDOG_USEC}


def world_config() -> dict[str, object]:
    return {"schedule": {"every": "1s"}, "metrics": {"listen": f"127.0.0.1:{free_port()}"}}


def policies(*rules: str) -> str:
    return "policies:\n" + "".join(rules)


def write_policies(world: World, *rules: str) -> Path:
    path = world.folder / "policies" / "policies.yaml"
    path.write_text(policies(*rules), encoding="utf-8")
    return path


def result_of(world: World, job_name: str) -> dict[str, object] | None:
    return next(iter(events(world.audit_path, "result", job_name=job_name)), None)


def test_daemon_sweeps_reloads_and_stops_cleanly(tmp_path: Path, notify: NotifyListener) -> None:
    with (
        emulated_world(tmp_path, seeds=SEEDS, policies_yaml=policies(TRAIN_CAP),
                       config=world_config()) as world,
        daemon_process(world, tmp_path / "daemon.log", env=daemon_env(notify)) as daemon,
    ):  # fmt: skip
        notify.wait_for("READY=1", 20)
        wait_for(lambda: len(events(world.audit_path, "sweep_end")) >= 6, 20, "six sweeps")
        assert wait_for(lambda: result_of(world, "train-old-1"), 10, "train-old-1 cancelled")

        # A broken policy file: refused, the old set keeps acting.
        policy_file = write_policies(world, TRAIN_CAP, SIM_CAP_BROKEN)
        daemon.send_signal(signal.SIGHUP)
        (failed,) = wait_for(lambda: events(world.audit_path, "reload_failed"), 10,
                             "reload_failed")  # fmt: skip
        (diagnostic,) = failed["diagnostics"]
        assert re.match(rf"{re.escape(str(policy_file))}:9:18: ", diagnostic), diagnostic
        notify.wait_for("READY=1", 10)
        world.emulators["batch"].add_job(
            JobSpec("train-old-2", "RUNNING", NOW - 14 * HOUR, NOW - 13 * HOUR, queue="gpu-a")
        )
        old_set = wait_for(lambda: result_of(world, "train-old-2"), 10, "old set acting")
        assert old_set["policy"] == "train-cap"
        assert result_of(world, "sim-target") is None

        # Fixed: the new policy cancels its job.
        write_policies(world, TRAIN_CAP, SIM_CAP)
        daemon.send_signal(signal.SIGHUP)
        (reload,) = wait_for(lambda: events(world.audit_path, "reload"), 10, "reload")
        assert reload["policy_names"] == ["train-cap", "sim-cap"]
        new_set = wait_for(lambda: result_of(world, "sim-target"), 10, "sim-cap acting")
        assert (new_set["policy"], new_set["outcome"]) == ("sim-cap", "cancelled")
        assert world.emulators["hpc"].status_of(str(new_set["job_id"])) == "CANCELLED"

        # SIGTERM while a slow cancel is in flight: its result is written, exit 0.
        world.emulators["inference"].knobs.latency_s = 2.0
        write_policies(world, TRAIN_CAP, SIM_CAP, INFERENCE_CAP)
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: events(world.audit_path, "intent", job_name="slow-target"), 30,
                 "the slow cancel to start")  # fmt: skip
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        notify.poll()
        assert any("STOPPING=1" in message for message in notify.messages)
        slow = result_of(world, "slow-target")
        assert slow is not None and slow["outcome"] == "cancelled"


def test_watchdog_pings_stop_while_a_backend_hangs(tmp_path: Path, notify: NotifyListener) -> None:
    log_path = tmp_path / "daemon.log"
    max_sweep = ["--max-sweep", "1s"]  # a sweep in flight for longer than 1 s holds the pings
    with (
        emulated_world(tmp_path, seeds=SEEDS, policies_yaml=NOTHING,
                       config=world_config()) as world,
        daemon_process(world, log_path, max_sweep, env=daemon_env(notify)) as daemon,
    ):  # fmt: skip
        notify.wait_for("READY=1", 20)
        for _ in range(3):
            notify.wait_for("WATCHDOG=1", 5)
        world.emulators["inference"].knobs.hang = True  # accepts, never answers
        wait_for(lambda: quiet_for(notify, "WATCHDOG=1", seconds=2.0), 20,
                 "2 s without WATCHDOG=1 (pings come every 0.25 s while healthy)")  # fmt: skip
        assert "watchdog pings held" in log_path.read_text(encoding="utf-8")
        world.emulators["inference"].stop()  # the hung call fails; the sweep ends
        notify.wait_for("WATCHDOG=1", 20)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0


def quiet_for(notify: NotifyListener, line: str, seconds: float) -> bool:
    """True if no message holding `line` arrives for `seconds`."""
    return not any(line in message for message in notify.poll(seconds))

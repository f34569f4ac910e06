"""Issue 10, case 9, through `reaper daemon` on the emulators: with the wall clock stepped back
an hour (NTP correcting a fast clock) the daemon keeps sweeping every period and keeps its
watchdog pings, and a job that comes due after the step is still cancelled. The child's wall
clock is stepped through tests/clock_step_support.py (the monotonic clock runs on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reaper.emulators.world import child_environ, emulated_world
from tests.daemon_support import ROOT, NotifyListener, events, free_port, wait_for
from tests.e2e_support import running

POLICIES = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    max_runtime: 2h
"""


def sweeps(audit: Path) -> int:
    return len(events(audit, "sweep_end"))


def pings(notify: NotifyListener) -> int:
    return sum(1 for message in notify.poll() if "WATCHDOG=1" in message)


def test_case9_a_clock_stepped_back_does_not_silence_the_daemon(tmp_path: Path) -> None:
    now = time.time()
    seeds = {"batch": [running("batch", f"other-{i}", 1, now) for i in range(4)]}
    config = {"schedule": {"every": "1s"}, "metrics": {"listen": f"127.0.0.1:{free_port()}"}}
    offset = tmp_path / "offset"
    offset.write_text("0", encoding="utf-8")
    notify = NotifyListener()
    with emulated_world(tmp_path, seeds=seeds, policies_yaml=POLICIES, config=config) as world:
        env = child_environ(world) | {"PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": notify.address,
                                      "WATCHDOG_USEC": "1000000"}  # fmt: skip
        command = [sys.executable, "-m", "tests.clock_step_support", str(offset),
                   "daemon", "--config", str(world.config_path)]  # fmt: skip
        with (tmp_path / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)
        try:
            notify.wait_for("READY=1", 20)
            wait_for(lambda: sweeps(world.audit_path) >= 6, 30, "six sweeps before the step")
            offset.write_text("-3600", encoding="utf-8")  # the wall clock goes back an hour
            time.sleep(0.5)  # the child reads the file every 50 ms
            stepped = sweeps(world.audit_path)
            notify.poll()  # forget the pings so far
            wait_for(lambda: sweeps(world.audit_path) >= stepped + 9, 30,
                     "sweeps going on after the step")  # fmt: skip
            # A job that comes due after the step is still found and cancelled.
            world.emulators["batch"].add_job(running("batch", "long-1", 5, time.time()))
            wait_for(lambda: events(world.audit_path, "result", job_name="long-1"), 30,
                     "long-1 cancelled after the step")  # fmt: skip
            assert pings(notify) > 0  # the watchdog was fed while sweeps went on
            assert "stepped back" in (tmp_path / "daemon.log").read_text(encoding="utf-8")
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(30)
                except subprocess.TimeoutExpired:
                    os.kill(daemon.pid, signal.SIGKILL)
                    daemon.wait(10)
            notify.close()

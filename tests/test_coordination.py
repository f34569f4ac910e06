"""Coordination through tooz on a real Redis (docs/scale.md): members split the backends with
tooz's partitioner and sweep each under a tooz lock. The tests start a local `redis-server` on a
loopback port (.ci/run installs it; without it they are skipped, except in CI where
REAPER_CI_TOOLS=1 makes its absence a failure).

The three-daemon test is the acceptance test: three `reaper daemon` processes against six Sutro
emulators that record which daemon made each call (one API key per daemon): every backend is
swept, no backend is swept by two daemons at once, the backends of a SIGKILLed daemon are taken
over within two schedule periods, and no job gets two cancel calls."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from reaper.emulators.base import JobSpec
from reaper.emulators.sutro import SutroEmulator
from reaper.policy.config import Coordination
from reaper.service.coordination import (
    CoordinationError,
    Coordinator,
    lease_for,
    resolve_url,
    with_lease,
)
from tests.daemon_support import free_port, read_records, wait_for
from tests.e2e_support import run_cli

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("REAPER_CI_TOOLS"),
    reason="redis-server is not installed",
)
PERIOD_S = 6  # schedule.every of the daemons; the takeover must come within two of these
BACKENDS = [f"sutro-{n}" for n in range(6)]
DAEMONS = ("d0", "d1", "d2")
KEY_ENV = "REAPER_TEST_SUTRO_KEY"
POLICY = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    statuses: [running]
    max_runtime: 2h
"""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a loopback port, no persistence."""
    assert REDIS_SERVER is not None, "redis-server is not installed (Debian package redis-server)"
    import redis

    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(folder)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 30, "redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def fresh_group() -> str:
    return f"test-{time.monotonic_ns()}"


# -- the pieces ---------------------------------------------------------------------------------
def test_lease_is_a_quarter_period_within_bounds():
    assert lease_for(timedelta(minutes=5)) == 30
    assert lease_for(timedelta(seconds=6)) == 2
    assert lease_for(timedelta(seconds=1)) == 1
    assert lease_for(timedelta(hours=1)) == 30


def test_with_lease_sets_the_tooz_timeouts_unless_the_url_has_them():
    url = with_lease("redis://h:6379?db=2", 5)
    assert url == "redis://h:6379?db=2&timeout=5&lock_timeout=5&membership_timeout=5"
    assert with_lease("redis://h:6379?timeout=9", 5) == "redis://h:6379?timeout=9"


def test_the_url_comes_from_a_variable_or_a_file_and_is_never_in_an_error(tmp_path):
    secret = "redis://:s3cret-pass@h:6379"
    assert resolve_url(Coordination(url_env="COORD"), {"COORD": secret}) == secret
    (tmp_path / "url").write_text(secret + "\n")
    assert resolve_url(Coordination(url_file=tmp_path / "url"), {}) == secret
    with pytest.raises(CoordinationError, match="COORD is unset"):
        resolve_url(Coordination(url_env="COORD"), {})
    with pytest.raises(CoordinationError, match="is empty"):
        (tmp_path / "empty").write_text("")
        resolve_url(Coordination(url_file=tmp_path / "empty"), {})


def test_the_config_takes_exactly_one_url_source(tmp_path):
    (tmp_path / "p.yaml").write_text(POLICY)
    base = {"policies": "p.yaml", "audit_log": "a.jsonl"}
    cases = {
        "two": {"url": "redis://h", "url_env": "X"},
        "none": {"member": "a"},
        "ok": {"url": "redis://h", "member": "host-a"},
    }
    codes = {}
    for name, section in cases.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**base, "coordination": section}))
        codes[name] = run_cli("validate", "--config", str(tmp_path / f"{name}.yaml")).code
    assert codes == {"two": 78, "none": 78, "ok": 0}


@contextmanager
def two_members(redis_url: str, lease_s: int) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Members a and b of a fresh group, both started; stopped on the way out."""
    group, url = fresh_group(), with_lease(redis_url, lease_s)
    a, b = Coordinator(url, "a", group), Coordinator(url, "b", group)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


@needs_redis
def test_members_split_the_backends_and_a_silent_member_loses_its_share(redis_url):
    names = [f"backend-{n}" for n in range(20)]
    with two_members(redis_url, 1) as (a, b):
        wait_for(lambda: all(a.owns(n) != b.owns(n) for n in names), 15, "a and b to agree")
        assert 0 < sum(a.owns(n) for n in names) < len(names)
        b._stopping.set()  # b stops heartbeating without leaving: as if it had died
        wait_for(lambda: all(a.owns(n) for n in names), 15, "a to own every backend")


@needs_redis
def test_a_backend_lock_is_held_by_one_member_at_a_time(redis_url):
    with two_members(redis_url, 2) as (a, b):
        with a.holding("batch") as taken_by_a:
            with b.holding("batch") as taken_by_b:
                assert (taken_by_a, taken_by_b) == (True, False)
            time.sleep(2.5)  # past the lease: a's heartbeat keeps the lock
            with b.holding("batch") as taken_by_b:
                assert taken_by_b is False
        with b.holding("batch") as taken_by_b:
            assert taken_by_b is True  # released on the way out


# -- three daemons ------------------------------------------------------------------------------
@dataclass
class Instance:
    name: str
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def audit(self) -> Path:
        return self.folder / "audit.jsonl"


@dataclass(frozen=True)
class Sweep:
    daemon: str
    backend: str
    start: float
    end: float | None  # None: never ended (the daemon was killed)


def epoch(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def sweeps_of(instance: Instance) -> list[Sweep]:
    records = read_records(instance.audit)
    ends = {r["sweep_id"]: epoch(r["ts"]) for r in records if r["event"] == "sweep_end"}
    return [
        Sweep(instance.name, backend, epoch(r["ts"]), ends.get(r["sweep_id"]))
        for r in records
        if r["event"] == "sweep_start"
        for backend in r["backends"]
    ]


def seeded_emulators(stack: ExitStack) -> dict[str, SutroEmulator]:
    """Six Sutro emulators, each with two jobs to cancel and one to leave alone, accepting one
    API key per daemon and recording which key made each call."""
    emulators = {}
    started = time.time() - 5 * 3600
    for name in BACKENDS:
        emulator = SutroEmulator(api_key="sk_emu_unused")
        for daemon in DAEMONS:
            emulator.add_caller(daemon, f"sk_emu_{daemon}_key")
        for job in ("long-1", "long-2", "short-1"):
            begun = started if job.startswith("long") else time.time() - 60
            emulator.add_job(JobSpec(job, "RUNNING", begun - 60, begun, id=f"{name}-{job}"))
        emulator.record_calls()
        emulators[name] = emulator.start()
        stack.callback(emulator.stop)
    return emulators


def write_daemon_config(folder: Path, daemon: str, emulators: dict[str, SutroEmulator],
                        url: str, group: str) -> Path:  # fmt: skip
    folder.mkdir()
    (folder / "policies.yaml").write_text(POLICY)
    config = {
        "policies": "policies.yaml",
        "audit_log": "audit.jsonl",
        "dry_run": False,
        "schedule": {"every": f"{PERIOD_S}s"},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "coordination": {"url": url, "member": daemon, "group": group},
        "backends": {
            name: {"type": "sutro", "api_url": e.url, "api_key_env": KEY_ENV}
            for name, e in emulators.items()
        },
    }
    path = folder / "reaper.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


Running = tuple[list[Instance], dict[str, SutroEmulator]]


@contextmanager
def three_daemons(tmp_path: Path, redis_url: str) -> Iterator[Running]:
    group = fresh_group()
    with ExitStack() as stack:
        emulators = seeded_emulators(stack)
        instances = []
        for daemon in DAEMONS:
            config = write_daemon_config(tmp_path / daemon, daemon, emulators, redis_url, group)
            env = {**os.environ, KEY_ENV: f"sk_emu_{daemon}_key", "PYTHONPATH": str(ROOT)}
            log = (tmp_path / daemon / "daemon.log").open("wb")
            stack.callback(log.close)
            command = [sys.executable, "-m", "reaper", "daemon", "--config", str(config)]
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)
            stack.callback(stop_process, process)
            instances.append(Instance(daemon, tmp_path / daemon, process))
        yield instances, emulators


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def all_sweeps(instances: list[Instance]) -> list[Sweep]:
    return [sweep for instance in instances for sweep in sweeps_of(instance)]


def assert_no_backend_swept_twice_at_once(sweeps: list[Sweep], killed_at: float) -> None:
    for backend in BACKENDS:
        ordered = sorted((s for s in sweeps if s.backend == backend), key=lambda s: s.start)
        for earlier, later in itertools.pairwise(ordered):
            end = earlier.end if earlier.end is not None else killed_at
            assert later.start >= end, f"{backend}: {earlier} overlaps {later}"


def assert_every_call_inside_its_callers_sweep(
    emulators: dict[str, SutroEmulator], sweeps: list[Sweep], killed_at: float
) -> None:
    """The emulators' view agrees: each call was made by the daemon whose sweep of that backend
    was running (audit times are rounded to the millisecond)."""
    slack = 0.002
    for backend, emulator in emulators.items():
        assert emulator.call_log is not None
        for call in emulator.call_log:
            assert call.caller in DAEMONS, call
            mine = [s for s in sweeps if s.backend == backend and s.daemon == call.caller]
            assert any(
                s.start - slack <= call.started and call.ended <= (s.end or killed_at) + slack
                for s in mine
            ), f"{backend}: {call} outside every sweep of {call.caller}"


@needs_redis
def test_three_daemons_share_the_backends_and_take_over_from_a_killed_one(tmp_path, redis_url):
    with three_daemons(tmp_path, redis_url) as (instances, emulators):

        def swept_backends() -> set[str]:
            return {s.backend for s in all_sweeps(instances) if s.end is not None}

        wait_for(lambda: swept_backends() == set(BACKENDS), 90, "every backend to be swept")
        # Let the membership settle (all three joined), then two more periods of sweeps.
        time.sleep(3 * PERIOD_S)
        holders = latest_holders(all_sweeps(instances))
        victim = Counter(holders.values()).most_common(1)[0][0]
        orphans = {b for b, d in holders.items() if d == victim}
        process = next(i.process for i in instances if i.name == victim)
        process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        process.wait(10)

        def taken_over() -> dict[str, float] | None:
            after = [s for s in all_sweeps(instances) if s.start > killed_at]
            firsts = {b: min(s.start for s in after if s.backend == b) for b in orphans
                      if any(s.backend == b for s in after)}  # fmt: skip
            return firsts if set(firsts) == orphans else None

        takeover = wait_for(taken_over, 60, f"the backends of {victim} to be taken over")
        time.sleep(PERIOD_S)  # one more round of the survivors
        for instance in instances:
            if instance.name != victim:
                instance.process.send_signal(signal.SIGTERM)
        for instance in instances:
            instance.process.wait(60)
        sweeps = all_sweeps(instances)

    assert {s.backend for s in sweeps} == set(BACKENDS)
    assert {s.daemon for s in sweeps} - {victim}, "only the victim ever swept"
    delays = {b: round(t - killed_at, 1) for b, t in takeover.items()}
    assert all(d <= 2 * PERIOD_S for d in delays.values()), delays
    assert {s.daemon for s in sweeps if s.start > killed_at} <= set(DAEMONS) - {victim}
    assert_no_backend_swept_twice_at_once(sweeps, killed_at)
    assert_every_call_inside_its_callers_sweep(emulators, sweeps, killed_at)
    for backend, emulator in emulators.items():
        cancels = Counter(c.path for c in emulator.call_log or () if c.operation == "CancelJob")
        assert set(cancels.values()) == {1}, (backend, cancels)  # each job at most once
        assert {p.rsplit("/", 1)[1] for p in cancels} == {f"{backend}-long-1", f"{backend}-long-2"}
        assert emulator.status_of(f"{backend}-short-1") == "RUNNING"


def latest_holders(sweeps: list[Sweep]) -> dict[str, str]:
    """Backend → the daemon that swept it last."""
    latest: dict[str, Sweep] = {}
    for sweep in sorted(sweeps, key=lambda s: s.start):
        latest[sweep.backend] = sweep
    return {backend: sweep.daemon for backend, sweep in latest.items()}


def dump_logs(tmp_path: Path) -> str:  # for a failing run: what each daemon said
    return "\n".join(
        f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*/daemon.log"))
    )

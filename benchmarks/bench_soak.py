"""Soak: `reaper daemon` sweeping every second for `--minutes` over a changing job table, and
whether it stays flat: RSS, open file descriptors and threads at the start (after warm-up) and
at the end, CPU per minute at the start and the end, and the daemon's CPU between sweeps.

    python benchmarks/bench_soak.py                  # 10 minutes (plus the warm-up)
    python benchmarks/bench_soak.py --minutes 2 --no-write

The emulated world (benchmarks/common.py) holds `--jobs` active jobs. Every `--churn-every`
seconds each backend gets a few new jobs, some of them over a policy's limit (the daemon cancels
those), and as many healthy jobs end on their own, so the table keeps its size while its
content turns over. This process samples the daemon's /proc entries every 50 ms; the sweeps'
times come from the audit log afterwards. "Idle" is every moment no sweep of any backend runs,
less a margin at each end (the scheduler's and the logger's work around a sweep)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import common
from common import BACKENDS, Scenario

from reaper.emulators.world import World

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_S = 0.05
IDLE_MARGIN_S = 0.1  # trimmed off each end of an idle stretch
WINDOW_S = 60.0  # the start (after warm-up) and the end are the medians of this long
ENDED = {"batch": "SUCCEEDED", "hpc": "FINISHED", "inference": "SUCCEEDED"}
TARGET_DRIFT = 0.05
TARGET_IDLE_CPU = 0.01


@dataclass(frozen=True)
class Sample:
    wall: float  # time.time(), comparable with the audit log's `ts`
    cpu_s: float  # user + system CPU of the daemon so far
    rss_kb: int
    threads: int
    fds: int


def read_sample(pid: int) -> Sample | None:
    """The daemon's figures now, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime, threads = int(fields[11]), int(fields[12]), int(fields[17])
    return Sample(time.time(), (utime + stime) / TICKS, int(statm[1]) * PAGE_KB, threads, fds)


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, list[Sample](), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            sample = read_sample(self.pid)
            if sample is None:
                return
            self.samples.append(sample)


class Churn(threading.Thread):
    """Every `every` seconds, per backend: `add` new jobs (a fifth of them over a limit) and as
    many of the oldest healthy jobs end on their own."""

    def __init__(self, world: World, scenario: Scenario, every: float, add: int) -> None:
        super().__init__(daemon=True)
        self.world, self.every, self.add = world, every, add
        self.stop = threading.Event()
        self.rounds = self.added = self.ended = 0
        self.healthy = {
            b: [s.id for s in common.seed_specs(b, scenario.jobs[b], scenario.over[b], time.time())
                if s.id and "-ok-" in s.id]
            for b in BACKENDS
        }  # fmt: skip

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.rounds += 1
            for backend in BACKENDS:
                self.turn_over(backend)

    def turn_over(self, backend: str) -> None:
        emulator = self.world.emulators[backend]
        over = max(1, self.add // 5)
        for spec in common.seed_specs(backend, self.add, over, time.time()):
            job_id = emulator.add_job(replace(spec, id=f"{spec.id}-r{self.rounds}"))
            self.added += 1
            if "-ok-" in job_id:
                self.healthy[backend].append(job_id)
        for job_id in self.healthy[backend][: self.add - over]:
            emulator.set_status(job_id, ENDED[backend])
            self.ended += 1
        del self.healthy[backend][: self.add - over]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sweep_intervals(world: World) -> list[tuple[float, float]]:
    """(start, end) wall times of every finished sweep, from the audit log."""
    starts: dict[str, float] = {}
    spans = []
    for record in common.read_audit_records(world.audit_path):
        moment = common.parse_ts(record["ts"]).timestamp()
        if record["event"] == "sweep_start":
            starts[str(record["sweep_id"])] = moment
        elif record["event"] == "sweep_end" and str(record["sweep_id"]) in starts:
            spans.append((starts.pop(str(record["sweep_id"])), moment))
    # A sweep still open at the end runs until the end.
    spans += [(start, float("inf")) for start in starts.values()]
    return sorted(spans)


def idle_stretches(
    spans: Sequence[tuple[float, float]], begin: float, end: float
) -> list[tuple[float, float]]:
    """The moments in [begin, end] when no sweep ran, each trimmed by IDLE_MARGIN_S."""
    stretches, cursor = [], begin
    for start, stop in spans:
        if start > cursor:
            stretches.append((cursor + IDLE_MARGIN_S, min(start, end) - IDLE_MARGIN_S))
        cursor = max(cursor, stop)
        if cursor >= end:
            break
    if cursor < end:
        stretches.append((cursor + IDLE_MARGIN_S, end - IDLE_MARGIN_S))
    return [(a, b) for a, b in stretches if b > a]


def idle_cpu(samples: Sequence[Sample], stretches: Sequence[tuple[float, float]]) -> float:
    """CPU seconds per second over the idle stretches (between the samples inside each)."""
    cpu = wall = 0.0
    index = 0
    for a, b in stretches:
        inside = []
        while index < len(samples) and samples[index].wall <= b:
            if samples[index].wall >= a:
                inside.append(samples[index])
            index += 1
        if len(inside) >= 2:
            cpu += inside[-1].cpu_s - inside[0].cpu_s
            wall += inside[-1].wall - inside[0].wall
    return cpu / wall if wall else float("nan")


def is_idle(moment: float, stretches: Sequence[tuple[float, float]]) -> bool:
    return any(a <= moment <= b for a, b in stretches)


@dataclass(frozen=True)
class Window:
    rss_kb: float
    threads: float
    fds: float
    cpu_per_s: float  # CPU seconds per second, sweeps included
    idle_cpu: float
    samples: int


def window(
    samples: Sequence[Sample], stretches: Sequence[tuple[float, float]], a: float, b: float
) -> Window:
    """Medians of the idle samples in [a, b] (so that a sweep's worker threads and sockets do
    not count), and the CPU over the whole window."""
    inside = [s for s in samples if a <= s.wall <= b]
    idle = [s for s in inside if is_idle(s.wall, stretches)] or inside
    cpu = (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].wall - inside[0].wall)
    own = [(x, y) for x, y in stretches if x >= a and y <= b]
    return Window(
        statistics.median(s.rss_kb for s in idle), statistics.median(s.threads for s in idle),
        statistics.median(s.fds for s in idle), cpu, idle_cpu(samples, own), len(idle),
    )  # fmt: skip


@dataclass(frozen=True)
class Soak:
    """What one soak measured."""

    first: Window
    last: Window
    idle_cpu: float  # over every idle stretch after the warm-up
    idle_s: float
    sweeps: int  # backend sweeps after the warm-up
    cancelled: int
    records: int
    added: int
    ended: int
    loads: tuple[str, str]


def soak(args: argparse.Namespace, scenario: Scenario) -> Soak:
    config = common.bench_config(scenario) | {
        "schedule": {"every": "1s"},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    load_before = common.load_average()
    with tempfile.TemporaryDirectory(prefix="reaper-soak-") as tmp:
        folder = Path(tmp) / "world"
        folder.mkdir()
        with common.bench_world(folder, scenario, config=config) as world:
            churn = Churn(world, scenario, args.churn_every, args.add)
            samples, began = run_daemon(world, churn, args.warmup_s + args.minutes * 60)
            spans = sweep_intervals(world)
            records = common.read_audit_records(world.audit_path)
    start_at, end_at = began + args.warmup_s, samples[-1].wall
    stretches = idle_stretches(spans, start_at, end_at)
    span = window_s(args)
    return Soak(
        window(samples, stretches, start_at, start_at + span),
        window(samples, stretches, end_at - span, end_at),
        idle_cpu(samples, stretches), sum(b - a for a, b in stretches),
        sum(1 for start, _ in spans if start >= start_at),
        sum(1 for r in records if r.get("outcome") == "cancelled"), len(records),
        churn.added, churn.ended, (load_before, common.load_average()),
    )  # fmt: skip


def window_s(args: argparse.Namespace) -> float:
    """How long the start and the end are: a minute, or a quarter of a short soak."""
    return min(WINDOW_S, args.minutes * 60 / 4)


def run_daemon(world: World, churn: Churn, seconds: float) -> tuple[list[Sample], float]:
    """Run `reaper daemon` for `seconds` while `churn` changes the table; its samples and the
    wall time it started at. Exits if the daemon fails."""
    command = common.reaper_command("daemon", "--config", str(world.config_path))
    # The daemon logs every cancel: its stderr goes to a file (a pipe nobody reads would fill
    # and block the daemon's logging, and with it the sweep).
    log_path = world.folder / "daemon.log"
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(
            command, env=common.child_env(world), cwd=common.ROOT,
            stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
        samples, began = watch_daemon(daemon, churn, seconds)
    if daemon.returncode not in (0, 3) or time.time() - began < seconds:
        tail = log_path.read_text(errors="replace")[-3000:]
        sys.exit(f"reaper daemon exited {daemon.returncode}:\n{tail}")
    return samples, began


def watch_daemon(
    daemon: subprocess.Popen[bytes], churn: Churn, seconds: float
) -> tuple[list[Sample], float]:
    """Sample the daemon for `seconds` while `churn` runs; then SIGTERM it and wait."""
    sampler = Sampler(daemon.pid)
    began = time.time()
    sampler.start()
    churn.start()
    try:
        while time.time() - began < seconds and daemon.poll() is None:
            time.sleep(1.0)
    finally:
        churn.stop.set()
        sampler.stop.set()
        sampler.join()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    return sampler.samples, began


def drift(a: float, b: float) -> str:
    change = (b - a) / a if a else 0.0
    ok = "yes" if abs(change) <= TARGET_DRIFT else "**no**"
    return f"{change * 100:+.1f} % ({ok})"


def report(args: argparse.Namespace, scenario: Scenario, result: Soak) -> str:
    first, last = result.first, result.last
    rows = [
        ["RSS MiB", f"{first.rss_kb / 1024:.1f}", f"{last.rss_kb / 1024:.1f}",
         drift(first.rss_kb, last.rss_kb)],
        ["open fds", f"{first.fds:g}", f"{last.fds:g}", drift(first.fds, last.fds)],
        ["threads", f"{first.threads:g}", f"{last.threads:g}", drift(first.threads, last.threads)],
        ["CPU, sweeps included (CPU s per s)", f"{first.cpu_per_s:.3f}", f"{last.cpu_per_s:.3f}",
         f"{(last.cpu_per_s - first.cpu_per_s) / first.cpu_per_s * 100:+.1f} %"],
        ["CPU between sweeps (CPU s per s)", f"{first.idle_cpu:.4f}", f"{last.idle_cpu:.4f}", ""],
    ]  # fmt: skip
    over = max(1, args.add // 5)
    idle_ok = "met" if result.idle_cpu < TARGET_IDLE_CPU else "**not met**"
    span = window_s(args)
    header = ("", f"start (first {span:g} s)", f"end (last {span:g} s)",
              "change (target ±5 %)")  # fmt: skip
    lines = [
        f"`reaper daemon` with `every: 1s` for {args.minutes:g} min after {args.warmup_s:g} s "
        f"of warm-up; {scenario.total:,} active jobs ({common.split_text(scenario.jobs)}), "
        f"{scenario.latency_s * 1000:g} ms latency per call. Every {args.churn_every:g} s each "
        f"backend got {args.add} new jobs ({over} over a limit) and {args.add - over} healthy "
        f"jobs ended: {result.added:,} added, {result.ended:,} ended, {result.cancelled:,} "
        f"cancelled by the daemon, {result.sweeps:,} backend sweeps after the warm-up, "
        f"{result.records:,} audit records.",
        "",
        common.markdown_table(header, rows),
        "",
        f"RSS, fds and threads are medians of the samples (every {SAMPLE_S * 1000:g} ms) taken "
        f"while no sweep ran. CPU between sweeps over the whole soak: "
        f"**{result.idle_cpu * 100:.2f} %** of one CPU over {result.idle_s:.0f} s of idle time "
        f"(target < 1 %: {idle_ok}). Load average (1 min) before and after: "
        f"{result.loads[0]}, {result.loads[1]}.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=1_500)
    parser.add_argument("--over", type=int, default=30, help="over their limits at the start")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--churn-every", type=float, default=5.0, metavar="S")
    parser.add_argument("--add", type=int, default=10, help="jobs added per backend per churn")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.md")
    common.add_priority_option(parser)
    args = parser.parse_args(argv)
    common.apply_priority(args.nice)
    scenario = common.make_scenario(args.jobs, args.over, "weighted", args.latency_ms / 1000)
    text = report(args, scenario, soak(args, scenario))
    print(text)
    if not args.no_write:
        common.update_results("soak", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

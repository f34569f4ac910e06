"""Shared pieces of the benchmarks: the machine, the results file, the workload (seeded jobs and
policies), the emulated world, and child processes measured for wall time and peak RSS.

The benchmarks are plain scripts, never part of the test run. Run them from the repository root
with the project's Python, e.g. `python benchmarks/bench_sweep.py`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python benchmarks/x.py`: make `reaper` importable

from reaper.emulators.base import JobSpec, Knobs  # noqa: E402
from reaper.emulators.world import World, child_environ, emulated_world  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results.md"
BACKENDS = ("batch", "hpc", "inference")  # the emulated world's names: AWS Batch, Tapis, Sutro
HOUR = 3600.0
DAY = 24 * HOUR

# AWS Batch: the queues of the world, and how the healthy (under-limit) jobs spread over statuses.
AWS_QUEUES = ("gpu-a", "gpu-b", "cpu")
AWS_HEALTHY_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
TAPIS_HEALTHY_STATUSES = ("PENDING", "QUEUED", "RUNNING")
SUTRO_HEALTHY_STATUSES = ("QUEUED", "RUNNING")

# The policies of the sweep benchmark: the three of the demo, acting, with `max_cancels` lifted.
# The AWS reasons name no per-job value, so jobs of one policy share a reason and reaper may
# terminate up to 50 of them per TerminateJobs call (the per-job numbers are in the audit log).
POLICIES_YAML = """\
policies:
  - name: gpu-runtime-cap
    description: GPU training may not run longer than 12 hours
    backends: [batch, hpc]
    queues: ["gpu-*"]
    statuses: [running]
    names: ["train-*"]
    max_runtime: 12h
    reason: "GPU jobs are capped at {max_runtime} (policy {policy})"
  - name: dev-queue-expiry
    description: dev jobs may not wait in a queue for more than 2 days
    max_pending: 2d
    tags: {env: dev}
    exclude:
      names: ["*-nightly"]
    reason: "dev jobs may wait at most {max_pending} in a queue (policy {policy})"
  - name: sutro-budget
    description: expensive llama batches may not take longer than 6 hours
    backends: [inference]
    max_age: 6h
    where:
      job_cost: {gt: 50}
      model: {glob: "llama-*"}
"""


# -- the machine and the results file ---------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine a figure was measured on."""
    return (
        f"{cpu_model()}, {os.cpu_count()} CPUs (nproc), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def command_line() -> str:
    """The command that produced the figures, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join(["python", script_text, *sys.argv[1:]])


def update_results(section: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the block between `<!-- section:NAME -->` markers in results.md,
    stamped with the date, the machine and the command."""
    begin, end = f"<!-- section:{section} -->", f"<!-- /section:{section} -->"
    stamp = (
        f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}._  \n"
        f"_Command: `{command_line()}`_\n"
    )
    block = f"{begin}\n{stamp}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header)), *[list(map(str, row)) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )


# -- the workload -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """`jobs[b]` active jobs on backend b, `over[b]` of them over a policy's limit."""

    jobs: Mapping[str, int]
    over: Mapping[str, int]
    latency_s: float = 0.020

    @property
    def total(self) -> int:
        return sum(self.jobs.values())

    @property
    def total_over(self) -> int:
        return sum(self.over.values())


SPLITS = {
    # AWS Batch carries most of the work, as on a typical site: Tapis and Sutro are smaller.
    "weighted": {"batch": 0.6, "hpc": 0.2, "inference": 0.2},
    "even": {"batch": 1 / 3, "hpc": 1 / 3, "inference": 1 / 3},
}


def split_text(counts: Mapping[str, int]) -> str:
    """`AWS Batch 6,000, Tapis 2,000, Sutro 2,000`."""
    names = {"batch": "AWS Batch", "hpc": "Tapis", "inference": "Sutro"}
    return ", ".join(f"{names[b]} {counts[b]:,}" for b in BACKENDS)


def make_scenario(
    total: int, over: int, split: str = "weighted", latency_s: float = 0.02
) -> Scenario:
    shares = SPLITS[split]
    jobs = _apportion(total, shares)
    overs = _apportion(over, shares)
    return Scenario(jobs, overs, latency_s)


def _apportion(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    counts = {name: int(total * share) for name, share in shares.items()}
    counts[BACKENDS[0]] += total - sum(counts.values())
    return counts


def seed_specs(backend: str, jobs: int, over: int, now: float) -> Iterator[JobSpec]:
    """The jobs of one backend: `over` of them past a limit of POLICIES_YAML (half GPU runaways,
    half stale dev jobs on AWS and Tapis; expensive old llama batches on Sutro), the rest healthy
    and matched by no policy. Deterministic: the same arguments give the same jobs and ids."""
    makers = {"batch": _aws_specs, "hpc": _tapis_specs, "inference": _sutro_specs}
    return makers[backend](jobs, over, now)


def _runaway(i: int, now: float) -> tuple[float, float]:
    """(created, started) of a GPU job that started 13h to 23h ago."""
    started = now - 13 * HOUR - (i % 600) * 60
    return started - 600, started


def _healthy(i: int, now: float, running: bool) -> tuple[float, float | None]:
    """(created, started) of a job submitted 1h to 7h ago; running ones started a minute later."""
    created = now - HOUR - (i % 360) * 60
    return created, created + 60 if running else None


def _aws_specs(jobs: int, over: int, now: float) -> Iterator[JobSpec]:
    gpu = over // 2
    for i in range(gpu):
        created, started = _runaway(i, now)
        queue = AWS_QUEUES[i % 2]
        yield JobSpec(f"train-llm-{i}", "RUNNING", created, started, queue, {"team": "ml"},
                      id=f"aws-over-gpu-{i:06d}")  # fmt: skip
    for i in range(over - gpu):
        yield JobSpec(f"etl-dev-{i}", "RUNNABLE", now - 3 * DAY - i, None, "cpu", {"env": "dev"},
                      id=f"aws-over-dev-{i:06d}")  # fmt: skip
    for i in range(jobs - over):
        status = AWS_HEALTHY_STATUSES[i % len(AWS_HEALTHY_STATUSES)]
        running = status in ("STARTING", "RUNNING")
        name = f"train-ok-{i}" if running else f"etl-prod-{i}"
        created, started = _healthy(i, now, running)
        yield JobSpec(name, status, created, started, AWS_QUEUES[i % 3],
                      {"team": "ml", "env": "prod"}, id=f"aws-ok-{i:06d}")  # fmt: skip


def _tapis_specs(jobs: int, over: int, now: float) -> Iterator[JobSpec]:
    gpu = over // 2
    for i in range(gpu):
        created, started = _runaway(i, now)
        yield JobSpec(f"train-cfd-{i}", "RUNNING", created, started, "gpu-a100", {"team": "ml"},
                      id=f"tapis-over-gpu-{i:06d}-007")  # fmt: skip
    for i in range(over - gpu):
        yield JobSpec(f"dev-notebook-{i}", "QUEUED", now - 3 * DAY - i, None, "development",
                      {"env": "dev"}, id=f"tapis-over-dev-{i:06d}-007")  # fmt: skip
    for i in range(jobs - over):
        status = TAPIS_HEALTHY_STATUSES[i % len(TAPIS_HEALTHY_STATUSES)]
        created, started = _healthy(i, now, status == "RUNNING")
        yield JobSpec(f"md-run-{i}", status, created, started, "normal", {"team": "chem"},
                      id=f"tapis-ok-{i:06d}-007")  # fmt: skip


def _sutro_specs(jobs: int, over: int, now: float) -> Iterator[JobSpec]:
    expensive = {"model": "llama-3.1-70b", "job_cost": 120.0}
    for i in range(over):
        status = "RUNNING" if i % 2 else "QUEUED"
        created = now - 7 * HOUR - i
        started = created + 600 if status == "RUNNING" else None
        yield JobSpec(f"summaries-{i}", status, created, started, id=f"sutro-over-{i:06d}",
                      extra=expensive)  # fmt: skip
    cheap = {"model": "llama-3.1-8b", "job_cost": 3.0}
    for i in range(jobs - over):
        status = SUTRO_HEALTHY_STATUSES[i % len(SUTRO_HEALTHY_STATUSES)]
        created, started = _healthy(i, now, status == "RUNNING")
        yield JobSpec(f"eval-{i}", status, created, started, id=f"sutro-ok-{i:06d}", extra=cheap)


def bench_config(scenario: Scenario) -> dict[str, object]:
    """reaper.yaml overrides: the guards let every over-limit job be cancelled in one sweep."""
    return {"limits": {"max_cancels_per_sweep": scenario.total_over + 1, "max_match_fraction": 0.5}}


@contextmanager
def bench_world(
    folder: Path, scenario: Scenario, config: Mapping[str, object] | None = None
) -> Iterator[World]:
    """The three emulators with `scenario`'s latency, seeded, with reaper.yaml in `folder`
    (`config`: its top-level keys, default `bench_config(scenario)`)."""
    now = time.time()
    seeds = {b: seed_specs(b, scenario.jobs[b], scenario.over[b], now) for b in BACKENDS}
    knobs = {b: _knobs(b, scenario.latency_s) for b in BACKENDS}
    with emulated_world(
        folder, seeds=seeds, policies_yaml=POLICIES_YAML,
        config=bench_config(scenario) if config is None else config, knobs=knobs,
        apply_env=False,
    ) as world:  # fmt: skip
        yield world


def _knobs(backend: str, latency_s: float) -> Knobs:
    # The AWS emulator serves ListJobs pages of up to 1000 (the API maximum), the others 100.
    return Knobs(latency_s=latency_s, page_size=1000 if backend == "batch" else 100)


def reset_calls(world: World) -> None:
    for emulator in world.emulators.values():
        with emulator.lock:
            emulator.calls.clear()


def calls_by_backend(world: World) -> dict[str, dict[str, int]]:
    return {name: dict(e.calls) for name, e in world.emulators.items()}


# -- child processes --------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildRun:
    returncode: int
    wall_s: float
    max_rss_kb: int  # peak resident set of the child (getrusage ru_maxrss, KiB on Linux)
    cpu_s: float  # user + system CPU time of the child
    stdout: str
    stderr: str


def reaper_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reaper", *args]


def child_env(world: World | None = None) -> dict[str, str]:
    """The environment of a measured child: the world's credentials, the repository on the
    path, and bytecode caching on (an installed reaper has its .pyc files; with
    PYTHONDONTWRITEBYTECODE=1 every start would compile every module of reaper again)."""
    env = child_environ(world) if world is not None else dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


TIME = Path("/usr/bin/time")  # GNU time: the child's own peak RSS and CPU time


def run_child(command: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT) -> ChildRun:
    """Run `command` to completion: its wall time, peak RSS and CPU time. The peak RSS comes from
    GNU time, which forks the command from its own small process: a child forked from this
    process would count this process's resident set as its own (Linux keeps the high-water mark
    of the address space a child starts from across exec), and the benchmark process holds every
    emulated job. Without /usr/bin/time, os.wait4's figures are used, with that caveat."""
    with tempfile.TemporaryDirectory(prefix="reaper-child-") as tmp:
        report = Path(tmp) / "time"
        wrapped = (
            [str(TIME), "-f", "%M %U %S", "-o", str(report), *command]
            if TIME.exists()
            else list(command)
        )
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            started = time.perf_counter()
            process = subprocess.Popen(
                wrapped, env=dict(env), cwd=cwd, stdout=stdout, stderr=stderr
            )
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        rss, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        if TIME.exists():
            fields = report.read_text().split()[-3:]
            rss, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
        return ChildRun(process.returncode, wall, rss, cpu, out.read_text(), err.read_text())


# -- audit-derived figures --------------------------------------------------------------------
def read_audit_records(path: Path) -> list[dict[str, object]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def parse_ts(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def measure_fsync(folder: Path, records: int = 200, size: int = 700) -> float:
    """Median seconds of one `write` + `fsync` of a `size`-byte line appended to a file in
    `folder`, as the audit log does for every record."""
    path = folder / "fsync-probe.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    line = b"x" * (size - 1) + b"\n"
    times = []
    try:
        for _ in range(records):
            started = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def add_priority_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nice", type=int, default=0, metavar="N",
        help="run the benchmark and its children at this niceness (e.g. -10, as root) to shield "
        "the figures from other work on a shared machine",
    )  # fmt: skip


def apply_priority(nice: int) -> None:
    """Set this process's niceness (children inherit it). Exits if not permitted."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except PermissionError:
            sys.exit(f"--nice {nice}: not permitted (a negative niceness needs root)")


@contextmanager
def competing(active: bool) -> Iterator[None]:
    """With `active`, one CPU-bound process (a busy loop) runs until the block ends: the
    machine as it is when another job shares it."""
    if not active:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def load_average() -> str:
    """The 1-minute load average: other work on the machine slows every figure but the bound."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"

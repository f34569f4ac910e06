"""Where a sweep's CPU goes: `reaper run --once` on the sweep benchmark's world, profiled.

    python benchmarks/profile_sweep.py                      # 10,000 jobs, cProfile
    python benchmarks/profile_sweep.py --jobs 100000 --tool py-spy
    python benchmarks/profile_sweep.py --tool calls         # thread CPU of a few functions

`--tool cprofile` (default) profiles every thread of the child (a profiler per thread, merged at
exit: plain `python -m cProfile` sees the main thread only, and the sweep runs in worker
threads), timed by each thread's CPU clock (`time.thread_time`: waiting for a lock or a socket
costs nothing), and prints the functions by their own CPU time (`--sort cumulative`: with what
they call), with call counts. cProfile's overhead inflates functions that make many small
calls; `--tool calls` has no profiler: it wraps a fixed list of functions (`ACCOUNTED`: the
audit writer, each backend's HTTP call, the scan, the act phase) and sums the thread CPU time
spent inside each, with its call count (nested rows overlap: `cancel_batch` holds the audit
writes and the cancel calls); `--tool py-spy` samples the child from outside (`pip install
py-spy`, or PY_SPY=path; not a project dependency) while it holds the GIL, and prints the same
table from the samples.
Prints only; nothing is written to results.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import common

# Run in the child before reaper: one cProfile.Profile per thread, merged and saved at exit.
BOOTSTRAP = """
import atexit, cProfile, pstats, runpy, sys, threading, time
out = sys.argv.pop(1)
profiles = [cProfile.Profile(time.thread_time)]
run = threading.Thread.run
def profiled(self):
    profile = cProfile.Profile(time.thread_time)
    profiles.append(profile)
    profile.enable()
    try:
        run(self)
    finally:
        profile.disable()
threading.Thread.run = profiled
def save():
    profiles[0].disable()
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        try:
            stats.add(profile)
        except TypeError:  # a thread that never ran
            pass
    stats.dump_stats(out)
atexit.register(save)
sys.argv[0] = "reaper"
profiles[0].enable()
runpy.run_module("reaper", run_name="__main__", alter_sys=True)
"""


# (module, attribute path, label) of the functions `--tool calls` accounts for.
ACCOUNTED = (
    ("reaper.engine.sweep", "scan_backend", "scan_backend: listing, parsing, evaluation"),
    ("reaper.engine.sweep", "_Actor.act_unit", "_Actor.act_unit: re-check and cancel, all"),
    ("reaper.engine.sweep", "_Actor.recheck", "_Actor.recheck"),
    ("reaper.engine.sweep", "_Actor.cancel_batch", "_Actor.cancel_batch: audit and cancel"),
    ("reaper.audit.writer", "AuditLog.append_many", "AuditLog.append_many: every record"),
    ("reaper.backends.sutro", "SutroBackend._send", "SutroBackend._send: one HTTP call"),
    ("reaper.backends.tapis", "TapisBackend._attempt", "TapisBackend._attempt: one tapipy call"),
    ("reaper.backends.aws_batch", "AwsBatchBackend._call", "AwsBatchBackend._call: boto3 call"),
    ("reaper.backends.http", "HttpClient.request", "HttpClient.request: urllib3 (Sutro, Tapis)"),
    ("logging", "Logger.handle", "logging: every record emitted"),
    ("reaper.engine.sweep", "_decide", "_decide"),
)

# Run in the child before reaper: wrap ACCOUNTED, sum thread CPU per label, save at exit.
ACCOUNTING = """
import atexit, importlib, json, runpy, sys, threading, time
out, targets = sys.argv.pop(1), json.loads(sys.argv.pop(1))
totals, lock = {}, threading.Lock()
def wrap(owner, name, label):
    original = getattr(owner, name)
    def accounted(*args, **kwargs):
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent = time.thread_time() - started
            with lock:
                seconds, calls = totals.get(label, (0.0, 0))
                totals[label] = (seconds + spent, calls + 1)
    setattr(owner, name, accounted)
for module, path, label in targets:
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    wrap(owner, name, label)
def save():
    with open(out, "w") as file:
        json.dump(totals, file)
atexit.register(save)
sys.argv[0] = "reaper"
runpy.run_module("reaper", run_name="__main__", alter_sys=True)
"""


def profile_calls(command: list[str], env: dict[str, str], folder: Path) -> str:
    out = folder / "calls.json"
    targets = json.dumps(ACCOUNTED)
    child = common.run_child(
        [sys.executable, "-c", ACCOUNTING, str(out), targets, *command[3:]], env
    )
    if child.returncode not in (0, 3):
        sys.exit(f"reaper exited {child.returncode}:\n{child.stderr[-3000:]}")
    totals = json.loads(out.read_text())
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])
    rows = [[f"{seconds:.3f}", f"{calls:,}", f"{seconds / max(calls, 1) * 1e6:,.0f}", label]
            for label, (seconds, calls) in ranked]  # fmt: skip
    header = ("thread CPU s", "calls", "µs per call", "inside")
    return (
        f"Thread CPU inside each function, summed over threads (nested rows overlap); the "
        f"process used {child.cpu_s:.2f} s CPU ({child.wall_s:.2f} s wall).\n\n"
        + common.text_table(header, rows)
    )


def profile_cprofile(
    command: list[str], env: dict[str, str], folder: Path, top: int, sort: str = "own"
) -> str:
    import pstats

    out = folder / "sweep.prof"
    child = common.run_child([sys.executable, "-c", BOOTSTRAP, str(out), *command[3:]], env)
    if child.returncode not in (0, 3):
        sys.exit(f"reaper exited {child.returncode}:\n{child.stderr[-3000:]}")
    stats = pstats.Stats(str(out))
    rows = []
    entries = stats.stats  # type: ignore[attr-defined]
    for (file, line, name), (_, calls, own, cumulative, _) in entries.items():
        rows.append((own, cumulative, calls, f"{name} ({_short(file)}:{line})"))
    rows.sort(reverse=True)
    total = sum(row[0] for row in rows)
    if sort == "cumulative":
        rows.sort(key=lambda row: row[1], reverse=True)
    table = [[f"{own:.3f}", f"{own / total * 100:.1f}", f"{cum:.3f}", f"{calls:,}", where]
             for own, cum, calls, where in rows[:top]]  # fmt: skip
    header = ("own s", "own %", "cumulative s", "calls", "function")
    return (
        f"cProfile, all threads: {total:.2f} s of thread CPU time; the process used "
        f"{child.cpu_s:.2f} s CPU ({child.wall_s:.2f} s wall) with the profiler's overhead.\n\n"
        + common.text_table(header, table)
    )


def profile_pyspy(command: list[str], env: dict[str, str], folder: Path, top: int) -> str:
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
    if shutil.which(spy) is None:
        sys.exit("py-spy not found: pip install py-spy (or set PY_SPY to its path)")
    out = folder / "sweep.txt"
    wrapped = [spy, "record", "--gil", "--format", "raw", "--rate", "500", "--output", str(out),
               "--", *command]  # fmt: skip
    child = common.run_child(wrapped, env)
    if child.returncode not in (0, 3):
        sys.exit(f"py-spy/reaper exited {child.returncode}:\n{child.stderr[-3000:]}")
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    table = [[f"{n / samples * 100:.1f}", f"{inclusive[f] / samples * 100:.1f}", f]
             for f, n in own.most_common(top)]  # fmt: skip
    return (
        f"py-spy --gil, {samples:,} samples of the thread holding the GIL at 500 Hz; the process "
        f"used {child.cpu_s:.2f} s CPU under py-spy ({child.wall_s:.2f} s wall).\n\n"
        + common.text_table(("own %", "inclusive %", "function"), table)
    )


def _function(frame: str) -> str:
    """`name (path:line)` → `name (short path)`: one row per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({_short(path)})"


def _short(path: str) -> str:
    for marker in ("site-packages/", "/reaper/", "/lib/python"):
        if marker in path:
            return path[path.index(marker) :].lstrip("/")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--over", type=int, default=1_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--tool", choices=("cprofile", "py-spy", "calls"), default="cprofile")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", choices=("own", "cumulative"), default="own", help="cprofile")
    args = parser.parse_args(argv)
    scenario = common.make_scenario(args.jobs, args.over, "weighted", args.latency_ms / 1000)
    with tempfile.TemporaryDirectory(prefix="reaper-profile-") as tmp:
        folder = Path(tmp)
        (folder / "world").mkdir()
        with common.bench_world(folder / "world", scenario) as world:
            command = common.reaper_command("run", "--once", "--config", str(world.config_path))
            env = common.child_env(world)
            if args.tool == "cprofile":
                text = profile_cprofile(command, env, folder, args.top, args.sort)
            elif args.tool == "calls":
                text = profile_calls(command, env, folder)
            else:
                text = profile_pyspy(command, env, folder, args.top)
            jobs = common.split_text(scenario.jobs)
            print(f"{scenario.total:,} jobs, {scenario.total_over:,} over their limits ({jobs}); "
                  f"load average {common.load_average()}")  # fmt: skip
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

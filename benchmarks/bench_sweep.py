"""Sweep at scale: `reaper run --once` (a) against the serial script a user would otherwise write
(b) and against the lower bound (c), on the three emulators with injected latency.

    python benchmarks/bench_sweep.py                        # 10,000 jobs, 1,000 over, 20 ms
    python benchmarks/bench_sweep.py --jobs 100000 --skip-serial
    python benchmarks/bench_sweep.py --split even --runs 3 --no-write

Each run gets a fresh, identically seeded world (benchmarks/common.py). The lower bound is
derived in benchmarks/results.md ("How the lower bound is computed"): listing chains in
parallel across backends, then the fewest cancel calls with 8 in flight per backend, and never
less than one fsync per audit record, measured here on the audit log's file system."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import common
from common import BACKENDS, Scenario

CONCURRENCY = 8  # reaper.engine.sweep.DEFAULT_CONCURRENCY: cancel calls in flight per backend
AWS_LIST_PAGE, AWS_DESCRIBE, AWS_TERMINATE = 1000, 100, 50
TAPIS_PAGE, SUTRO_PAGE = 100, 100
AWS_ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
TAPIS_ACTIVE = frozenset({"PENDING", "QUEUED", "RUNNING"})  # the statuses the seeds use
# Re-check reads overlap the cancels, except the first: no cancel may start before a re-check.
FIRST_RECHECK = 1


@dataclass
class Run:
    """One measured run of (a) or (b)."""

    wall_s: float
    sweep_s: float  # (a): sweep_start → sweep_end in the audit log; (b): after imports and clients
    cpu_s: float
    rss_kb: int
    calls: dict[str, Counter[str]]
    cancelled: int
    records: int = 0  # audit records written (a)
    listing_s: float = 0.0  # (a): sweep_start → first intent (listing, enrichment, decide)

    @property
    def total_calls(self) -> int:
        return sum(sum(c.values()) for c in self.calls.values())


@dataclass
class BackendBound:
    list_calls: int
    list_rounds: int  # sequential rounds the listing takes at best
    enrich_calls: int
    cancel_calls: int
    cancel_rounds: int  # sequential rounds of `CONCURRENCY` calls in flight, plus one re-check
    recheck_reads: int  # not in the bound: reads that reaper overlaps with the cancels
    latency_s: float

    @property
    def listing_s(self) -> float:
        return (self.list_rounds + _rounds(self.enrich_calls)) * self.latency_s

    @property
    def act_s(self) -> float:
        return self.cancel_rounds * self.latency_s

    @property
    def calls(self) -> int:
        return self.list_calls + self.enrich_calls + self.cancel_calls


@dataclass
class Bound:
    backends: dict[str, BackendBound]
    fsync_s: float  # one write + fsync of an audit record, measured
    records: int
    notes: list[str] = field(default_factory=list)

    @property
    def listing_s(self) -> float:
        return max(b.listing_s for b in self.backends.values())

    @property
    def audit_s(self) -> float:
        return self.records * self.fsync_s

    @property
    def act_s(self) -> float:
        return max(*(b.act_s for b in self.backends.values()), self.audit_s)

    @property
    def total_s(self) -> float:
        return self.listing_s + self.act_s

    @property
    def calls(self) -> int:
        return sum(b.calls for b in self.backends.values())


def _rounds(calls: int) -> int:
    return -(-calls // CONCURRENCY)


def _pages(items: int, size: int) -> int:
    """Calls to read `items` through a cursor or token: at least one."""
    return max(1, -(-items // size))


# -- (c) the lower bound ----------------------------------------------------------------------
def lower_bound(scenario: Scenario, fsync_s: float, records: int) -> Bound:
    now = time.time()
    specs = {
        b: list(common.seed_specs(b, scenario.jobs[b], scenario.over[b], now)) for b in BACKENDS
    }
    lat = scenario.latency_s
    return Bound(
        {
            "batch": _aws_bound(specs["batch"], scenario.over["batch"], lat),
            "hpc": _tapis_bound(specs["hpc"], scenario.over["hpc"], lat),
            "inference": _sutro_bound(specs["inference"], scenario.over["inference"], lat),
        },
        fsync_s,
        records,
    )


def _aws_bound(specs: Sequence[common.JobSpec], over: int, lat: float) -> BackendBound:
    counts = Counter((spec.queue, spec.status) for spec in specs)
    queues = {spec.queue for spec in specs}
    # One DescribeJobQueues (reaper.yaml names no queues), then one nextToken chain per queue and
    # active status, an empty chain one call too. The chains are independent of each other: 8 at
    # a time, the listing takes as many rounds as the longest chain or the calls over 8.
    chains = [_pages(counts[(q, s)], AWS_LIST_PAGE) for q in queues for s in AWS_ACTIVE]
    listing_rounds = 1 + max(*chains, _rounds(sum(chains)))
    # The two policies' reasons name no per-job value: up to 50 jobs per TerminateJobs call.
    gpu = over // 2
    cancels = -(-gpu // AWS_TERMINATE) + -(-(over - gpu) // AWS_TERMINATE)
    enrich = _pages(over, AWS_DESCRIBE) if over else 0  # tags, for the protect tag and `env: dev`
    return BackendBound(1 + sum(chains), listing_rounds, enrich, cancels,
                        FIRST_RECHECK + _rounds(cancels), enrich, lat)  # fmt: skip


def _tapis_bound(specs: Sequence[common.JobSpec], over: int, lat: float) -> BackendBound:
    active = sum(1 for spec in specs if spec.status in TAPIS_ACTIVE)
    # Offset paging ends at the first short (or empty) page. Offsets are known in advance, so the
    # pages could be fetched 8 at a time.
    listing = active // TAPIS_PAGE + 1
    # sendEvent then cancel: two calls in sequence per job, jobs 8 at a time. The re-check is a
    # search per 50 uuids (reaper.backends.tapis.RECHECK_CHUNK).
    rounds = FIRST_RECHECK + 2 * _rounds(over)
    return BackendBound(listing, _rounds(listing), 0, 2 * over, rounds, _pages(over, 50), lat)


def _sutro_bound(specs: Sequence[common.JobSpec], over: int, lat: float) -> BackendBound:
    listing = _pages(len(specs), SUTRO_PAGE)  # list-jobs pages through every job, any status
    return BackendBound(listing, listing, 0, over, FIRST_RECHECK + _rounds(over), over, lat)


# -- (a) and (b) ------------------------------------------------------------------------------
def run_reaper(scenario: Scenario, folder: Path) -> Run:
    folder.mkdir()
    with common.bench_world(folder, scenario) as world:
        common.reset_calls(world)
        command = common.reaper_command("run", "--once", "--config", str(world.config_path))
        child = common.run_child(command, common.child_env(world))
        if child.returncode != 0:
            sys.exit(f"reaper run --once exited {child.returncode}:\n{child.stdout}{child.stderr}")
        calls = {b: Counter(c) for b, c in common.calls_by_backend(world).items()}
        records = common.read_audit_records(world.audit_path)
    times = {r["event"]: common.parse_ts(r["ts"]) for r in records if r["event"] != "intent"}
    first_intent = min(common.parse_ts(r["ts"]) for r in records if r["event"] == "intent")
    cancelled = sum(1 for r in records if r.get("outcome") == "cancelled")
    sweep = (times["sweep_end"] - times["sweep_start"]).total_seconds()
    listing = (first_intent - times["sweep_start"]).total_seconds()
    return Run(child.wall_s, sweep, child.cpu_s, child.max_rss_kb, calls, cancelled,
               len(records), listing)  # fmt: skip


def run_serial(scenario: Scenario, folder: Path) -> Run:
    folder.mkdir()
    with common.bench_world(folder, scenario) as world:
        common.reset_calls(world)
        urls = {name: emulator.url for name, emulator in world.emulators.items()}
        command = [
            sys.executable, str(Path(__file__).with_name("serial_script.py")),
            "--aws-url", urls["batch"], "--tapis-url", urls["hpc"],
            "--sutro-url", urls["inference"],
        ]  # fmt: skip
        child = common.run_child(command, common.child_env(world))
        if child.returncode != 0:
            sys.exit(f"serial script exited {child.returncode}:\n{child.stderr}")
        calls = {b: Counter(c) for b, c in common.calls_by_backend(world).items()}
    summary = json.loads(child.stdout)
    cancelled = sum(summary["cancelled"].values())
    return Run(child.wall_s, summary["sweep_s"], child.cpu_s, child.max_rss_kb, calls, cancelled)


# -- reporting --------------------------------------------------------------------------------
def report(scenario: Scenario, runs: list[Run], serial: Run | None, bound: Bound) -> str:
    a = median_run(runs)
    rows = [_row("(a) reaper run --once", a), _bound_row(bound)]
    if serial is not None:
        rows.insert(1, _row("(b) serial script", serial))
    header = ("", "wall s", "sweep s", "API calls", "cancelled", "peak RSS MB", "CPU s")
    lines = [
        f"**{scenario.total:,} active jobs** ({common.split_text(scenario.jobs)}), "
        f"**{scenario.total_over:,} over their limits** ({common.split_text(scenario.over)}), "
        f"{scenario.latency_s * 1000:g} ms latency per call, {CONCURRENCY} calls in flight "
        f"per backend.",
        "",
        common.markdown_table(header, rows),
        "",
        *_ratios(a, serial, bound, scenario.total),
        "",
        _breakdown(a, bound),
        "",
        f"(a) is the median of {len(runs)} run(s) by sweep time; sweep times of all runs: "
        + ", ".join(f"{r.sweep_s:.2f}" for r in runs)
        + f" s. Listing, enrichment and decide took {a.listing_s:.2f} s of (a)'s sweep "
        f"(bound: {bound.listing_s:.2f} s). (a) wrote {a.records:,} audit records; one "
        f"write + fsync took {bound.fsync_s * 1000:.2f} ms here (fastest probe), "
        f"{bound.audit_s:.2f} s in all.",
    ]
    return "\n".join(lines)


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median sweep time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r.sweep_s)[(len(runs) - 1) // 2]


def _row(label: str, run: Run) -> list[object]:
    return [label, f"{run.wall_s:.2f}", f"{run.sweep_s:.2f}", f"{run.total_calls:,}",
            f"{run.cancelled:,}", f"{run.rss_kb / 1024:.0f}", f"{run.cpu_s:.2f}"]  # fmt: skip


def _bound_row(bound: Bound) -> list[object]:
    return ["(c) lower bound", "", f"{bound.total_s:.2f}", f"{bound.calls:,}", "", "", ""]


def _ratios(a: Run, serial: Run | None, bound: Bound, jobs: int) -> list[str]:
    # The targets: ≤ 1.25x at 10,000 jobs, ≤ 1.4x at 100,000.
    target = "at 10,000 jobs: ≤ 1.25x" if jobs <= 10_000 else "at 100,000 jobs: ≤ 1.4x"
    lines = [f"- (a)/(c), sweep: **{a.sweep_s / bound.total_s:.2f}x** (target {target})"]
    if serial is not None:
        lines += [
            f"- (b)/(a), sweep: **{serial.sweep_s / a.sweep_s:.1f}x** faster than the serial "
            f"script (target at 10,000 jobs: ≥ 12x); whole processes, interpreter start and "
            f"SDK imports included: {serial.wall_s / a.wall_s:.1f}x",
        ]
    return lines


def _breakdown(a: Run, bound: Bound) -> str:
    header = ("backend", "list calls", "list rounds", "enrich calls", "cancel calls (min)",
              "cancel rounds", "re-check reads", "listing s", "act s",
              "(a) calls by operation")  # fmt: skip
    rows = []
    for name, b in bound.backends.items():
        made = ", ".join(f"{op} {n}" for op, n in sorted(a.calls[name].items()))
        rows.append([name, b.list_calls, b.list_rounds, b.enrich_calls, b.cancel_calls,
                     b.cancel_rounds, b.recheck_reads, f"{b.listing_s:.2f}", f"{b.act_s:.2f}",
                     made])  # fmt: skip
    rows.append(["audit", "", "", "", "", "", "", "", f"{bound.audit_s:.2f}",
                 f"{bound.records:,} records x {bound.fsync_s * 1000:.2f} ms"])  # fmt: skip
    return common.markdown_table(header, rows)


STARTUP_JOBS, STARTUP_OVER = 30, 3  # a sweep this small costs about what start-up costs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--over", type=int, default=1_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--split", choices=sorted(common.SPLITS), default="weighted")
    parser.add_argument("--runs", type=int, default=3, help="runs of (a); the median is reported")
    parser.add_argument("--skip-serial", action="store_true", help="do not run (b)")
    parser.add_argument(
        "--compete", action="store_true", help="one CPU-bound busy loop runs beside the runs"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.md")
    common.add_priority_option(parser)
    args = parser.parse_args(argv)
    common.apply_priority(args.nice)
    scenario = common.make_scenario(args.jobs, args.over, args.split, args.latency_ms / 1000)
    small = common.make_scenario(STARTUP_JOBS, STARTUP_OVER, args.split, args.latency_ms / 1000)
    loads = [common.load_average()]
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as tmp, common.competing(args.compete):
        folder = Path(tmp)
        fsyncs = [common.measure_fsync(folder)]
        startup = run_reaper(small, folder / "startup")
        runs = []
        for i in range(args.runs):
            runs.append(run_reaper(scenario, folder / f"a{i}"))
            fsyncs.append(common.measure_fsync(folder))
        serial = None if args.skip_serial else run_serial(scenario, folder / "b")
    loads.append(common.load_average())
    # fsync time swings with the machine's other I/O: the bound takes the fastest probe.
    bound = lower_bound(scenario, min(fsyncs), median_run(runs).records)
    text = report(scenario, runs, serial, bound)
    text += "\n\n" + cpu_note(runs, startup, args.compete)
    text += (
        "\n\nMedian write + fsync per probe (before and after each run of (a)): "
        + ", ".join(f"{f * 1000:.2f}" for f in fsyncs)
        + f" ms. Load average (1 min) before and after: {loads[0]}, {loads[1]}."
    )
    print(text)
    if not args.no_write:
        suffix = "-compete" if args.compete else ""
        common.update_results(f"sweep-{args.jobs}-{args.split}{suffix}", text)
    return 0


def cpu_note(runs: Sequence[Run], startup: Run, compete: bool) -> str:
    """The CPU figures: the one to watch on a shared machine (wall times move with the load)."""
    cpus = sorted(run.cpu_s for run in runs)
    median = cpus[(len(cpus) - 1) // 2]
    note = (
        f"CPU of (a), whole process (user + system): **{median:.2f} s** median; all runs: "
        + ", ".join(f"{c:.2f}" for c in (run.cpu_s for run in runs))
        + f" s. Start-up alone (interpreter, imports, clients, config; measured as a sweep of "
        f"{STARTUP_JOBS} jobs): {startup.cpu_s:.2f} s, so the sweep itself took about "
        f"{max(0.0, median - startup.cpu_s):.2f} s of CPU."
    )
    if compete:
        note += " One CPU-bound busy loop ran beside every run (`--compete`)."
    return note


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

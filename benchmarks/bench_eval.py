"""Benchmark: plan one sweep of 100,000 jobs against 100 policies, as the sweep does it.

    PYTHONPATH=. python benchmarks/bench_eval.py [--jobs 100000] [--policies 100] [--runs 3]

Three in-memory backends (`reaper.backends.memory.MemoryBackend`: AWS Batch, Tapis, Sutro) hold
realistic jobs (mostly unique names, a handful of queues, tags, raw records); 100 varied policies
(queues, names, statuses, tags, max_* limits, some `where`, some `exclude`) are compiled as the
loader does. The timed path is the scan: `reaper.engine.scan.scan_backend(backend,
policies.for_backend(name), now)` for each backend, i.e. listing (paged, in memory), the
prefilter of undetailed AWS listings, enrichment, and evaluation of every job against every
policy of its backend. It is what `reaper plan` runs before the decision step. Also timed: the
same scans with no policies (the cost of listing alone), so the evaluation's share is visible.

`--workload sketch` replaces them with the first sketch of this benchmark: one AWS Batch
backend, names `train-0` .. `train-49`, and 100 policies that all target it, each with a queue,
`running`, a name glob, a `max_runtime` and a tag: every policy applies to every job, and most
jobs get as far as the name glob.

Prints the machine, the best of `--runs` wall and CPU times, evaluations/s (jobs x policies /
s) and the number of matches. Not a test: timings belong here, not in tests/ .
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reaper.backends.memory import MemoryBackend
from reaper.engine.scan import Scan, scan_backend
from reaper.jobs import Job, active_statuses, phase_of
from reaper.policy.model import PolicySet, PolicySource, compile_policy

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = 3600
TEAMS = ("ml", "vision", "nlp", "data", "platform", "research")
ENVS = ("prod", "staging", "dev", "dev-sandbox")
USERS = tuple(f"u{n:03d}" for n in range(40))
# name (config) → (type, share of the jobs, queues, job-name prefixes)
BACKENDS: dict[str, tuple[str, float, tuple[str, ...], tuple[str, ...]]] = {
    "batch-prod": (
        "aws_batch", 0.5,
        ("gpu-a100-spot", "gpu-a100-ondemand", "gpu-h100-ondemand", "gpu-l4-spot", "cpu-spot",
         "cpu-ondemand", "etl-high", "etl-low", "inference-rt", "research-scratch"),
        ("train", "eval", "etl", "sweep", "infer", "notebook", "debug", "backfill"),
    ),
    "hpc": (
        "tapis", 0.3,
        ("normal", "development", "large", "gpu-a100", "gpu-h100", "long", "flex", "skx-normal"),
        ("sim", "md", "cfd", "train", "assembly", "postproc"),
    ),
    "inference": ("sutro", 0.2, ("",), ("batch", "embed", "classify", "summarize")),
}  # fmt: skip
MODELS = ("llama-3.1-8b", "llama-3.1-70b", "qwen-2.5-7b", "gemma-2-9b", "mistral-7b")


# --- jobs --------------------------------------------------------------------------------------


def make_job(rng: random.Random, backend: str, index: int) -> Job:
    """One job of `backend`: a unique name, a queue, an active status, times, tags, raw record."""
    backend_type, _, queues, prefixes = BACKENDS[backend]
    statuses = active_statuses(backend_type)
    status = rng.choice(statuses) if rng.random() < 0.3 else "RUNNING"
    created = NOW - timedelta(seconds=int(rng.expovariate(1 / (6 * HOUR))))
    started = None
    if phase_of(backend_type, status) == "running":
        started = created + (NOW - created) * rng.random() * 0.5
    user = rng.choice(USERS)
    name = f"{rng.choice(prefixes)}-{user}-{rng.choice(MODELS)[:5]}-{index:07d}"
    tags = {"team": rng.choice(TEAMS), "env": rng.choice(ENVS), "owner": user}
    if rng.random() < 0.05:
        tags["keep"] = "true"
    return Job(
        backend=backend, type=backend_type, id=f"{backend}-{index:07d}", name=name,
        queue=rng.choice(queues), status=status, phase=phase_of(backend_type, status),
        created_at=created, started_at=started, tags=tags, owner=user,
        raw=_raw_record(rng, backend_type, name),
    )  # fmt: skip


def _raw_record(rng: random.Random, backend_type: str, name: str) -> dict[str, Any]:
    if backend_type == "aws_batch":
        return {
            "jobName": name,
            "container": {"vcpus": rng.choice((2, 4, 8, 16, 32, 64, 96)), "memory": 61440},
            "attempts": [{"exitCode": 1}] * rng.randint(0, 2),
            "jobDefinition": f"arn:aws:batch:us-east-1:123456789012:job-definition/{name[:4]}:7",
        }
    if backend_type == "tapis":
        return {"name": name, "nodeCount": rng.choice((1, 2, 4, 16, 64)), "maxMinutes": 2880}
    return {"name": name, "model": rng.choice(MODELS), "job_cost": round(rng.random() * 120, 2)}


def make_backends(rng: random.Random, total: int) -> list[MemoryBackend]:
    """The three backends with `total` jobs between them. AWS Batch lists undetailed (ListJobs
    has no tags), so its scan prefilters and enriches as the real one does."""
    backends, start = [], 0
    for name, (backend_type, share, _, _) in BACKENDS.items():
        count = round(total * share)
        jobs = (make_job(rng, name, start + i) for i in range(count))
        detailed = backend_type != "aws_batch"
        backends.append(MemoryBackend(name, backend_type, jobs, listing_detailed=detailed))
        start += count
    return backends


# --- policies ----------------------------------------------------------------------------------

NAME_GLOBS = ("train-*", "eval-*", "*-debug-*", "notebook-*", "sweep-*", "sim-*", "md-*",
              "batch-*", "embed-*", "*-llama-*", "debug-*", "backfill-*", "infer-*",
              "cfd-*")  # fmt: skip
QUEUE_GLOBS = ("gpu-*", "*-spot", "cpu-*", "etl-*", "development", "normal", "gpu-a100*",
               "research-scratch", "long", "inference-rt", "flex")  # fmt: skip
WHERES: tuple[dict[str, Any], ...] = (
    {"container.vcpus": {"ge": 64}},
    {"job_cost": {"gt": 50}, "model": {"glob": "llama-*"}},
    {"nodeCount": {"ge": 16}},
    {"attempts.0.exitCode": {"exists": True}},
    {"model": {"regex": "^(qwen|gemma)-"}},
)
EXCLUDES: tuple[dict[str, Any], ...] = (
    {"tags": {"keep": "true"}},
    {"names": ["*-prod-*", "*-nightly"]},
    {"tags": {"env": "prod"}},
    {"queues": ["*-ondemand"]},
)


def make_policy_mapping(rng: random.Random, index: int) -> dict[str, Any]:
    """A varied policy: two to four selectors, limits from hours to days, sometimes a backend
    list, a `where`, an `exclude`."""
    raw: dict[str, Any] = {"name": f"policy-{index:03d}", "dry_run": True}
    if rng.random() < 0.7:
        raw["backends"] = [rng.choice(list(BACKENDS))]
    limit_key = rng.choice(("max_runtime", "max_runtime", "max_pending", "max_age"))
    raw[limit_key] = rng.choice(("12h", "1d", "36h", "2d", "3d", "4d", "1w"))
    if limit_key == "max_runtime" or rng.random() < 0.3:
        raw["statuses"] = ["running"] if limit_key == "max_runtime" else ["pending"]
    if rng.random() < 0.6:
        raw["queues"] = rng.sample(QUEUE_GLOBS, rng.randint(1, 3))
    if rng.random() < 0.6:
        raw["names"] = rng.sample(NAME_GLOBS, rng.randint(1, 2))
    if rng.random() < 0.4:
        raw["tags"] = {"team": rng.choice(TEAMS)} if rng.random() < 0.6 else {"env": "dev*"}
    if rng.random() < 0.15:
        raw["where"] = rng.choice(WHERES)
    if rng.random() < 0.3:
        raw["exclude"] = rng.choice(EXCLUDES)
    return raw


def make_policies(rng: random.Random, count: int) -> PolicySet:
    types = sorted({backend_type for backend_type, *_ in BACKENDS.values()})
    compiled = []
    for index in range(count):
        source = PolicySource("policies/bench.yaml", "0" * 64, None, index)
        compiled.append(compile_policy(make_policy_mapping(rng, index), source, types))
    return PolicySet.of(compiled)


# --- the first sketch's workload ----------------------------------------------------------------


def make_sketch_backends(rng: random.Random, total: int) -> list[MemoryBackend]:
    jobs = []
    for i in range(total):
        status = rng.choice(["RUNNING", "RUNNABLE", "PENDING", "STARTING"])
        created = NOW - timedelta(seconds=rng.randint(0, 5 * 86400))
        started = created + timedelta(seconds=60) if status in ("RUNNING", "STARTING") else None
        queue, team = rng.choice(["gpu-a", "gpu-b", "cpu"]), rng.choice(["ml", "web"])
        jobs.append(
            Job("batch", "aws_batch", str(i), f"train-{i % 50}", queue, status,
                phase_of("aws_batch", status), created, started, {"team": team})
        )  # fmt: skip
    return [MemoryBackend("batch", "aws_batch", jobs)]


def make_sketch_policies(count: int) -> PolicySet:
    compiled = []
    for k in range(count):
        raw = {
            "name": f"p{k}", "queues": [f"gpu-{'ab'[k % 2]}"], "statuses": ["running"],
            "names": [f"train-{k % 50}*"], "max_runtime": f"{12 + k % 5}h", "tags": {"team": "ml"},
        }  # fmt: skip
        source = PolicySource("policies/bench.yaml", "0" * 64, None, k)
        compiled.append(compile_policy(raw, source, ["aws_batch"]))
    return PolicySet.of(compiled)


# --- timing ------------------------------------------------------------------------------------


def plan(backends: Sequence[MemoryBackend], policies: PolicySet) -> list[Scan]:
    """What the sweep's scan step does for each backend (sequentially: the GIL would serialise
    the sweep's scan threads on this CPU-bound work anyway)."""
    return [scan_backend(b, policies.for_backend(b.name), NOW) for b in backends]


def best_of(runs: int, action: Callable[[], object]) -> tuple[float, float, object]:
    """The best wall time and the best CPU time of this process over `runs`, and the result.
    The CPU time is the steadier figure on a machine that is busy with other work."""
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def describe_machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{platform.platform()}; {cpu}; nproc {os.cpu_count()}; {python}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workload", choices=("realistic", "sketch"), default="realistic")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    if args.workload == "sketch":
        backends = make_sketch_backends(rng, args.jobs)
        policies = make_sketch_policies(args.policies)
    else:
        backends = make_backends(rng, args.jobs)
        policies = make_policies(rng, args.policies)
    pairs = sum(
        len(page) * len(policies.for_backend(b.name)) for b in backends for page in b.list_active()
    )
    listing_s, listing_cpu_s, _ = best_of(args.runs, lambda: plan(backends, PolicySet(())))
    wall_s, cpu_s, scans = best_of(args.runs, lambda: plan(backends, policies))
    assert isinstance(scans, list)
    jobs_matched = sum(len(scan.candidates) for scan in scans)
    matches = sum(len(c.matches) for scan in scans for c in scan.candidates)
    print(f"machine:      {describe_machine()}")
    shape = f"{args.jobs} jobs x {len(policies)} policies (seed {args.seed})"
    print(f"workload:     {args.workload}: {shape}")
    raw_pairs = args.jobs * len(policies)
    print(f"pairs:        {pairs} job-policy pairs after `backends:` ({raw_pairs} raw)")
    print(f"planning:     {wall_s:.3f} s wall, {cpu_s:.3f} s CPU  (best of {args.runs})")
    print(f"listing only: {listing_s:.3f} s wall, {listing_cpu_s:.3f} s CPU  (no policies)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"evaluations:  {args.jobs * len(policies) / wall_s:,.0f} /s (jobs x policies / s)")
    print(f"matches:      {matches} matches on {jobs_matched} jobs")


if __name__ == "__main__":
    main()

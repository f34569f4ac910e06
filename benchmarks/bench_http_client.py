"""Client CPU per API call: what one call costs the reaper process, through each backend's real
code path (reaper's backend, its SDK, requests, urllib3) and through bare HTTP clients, against
the emulators with no latency.

    python benchmarks/bench_http_client.py               # 300 calls per client, 5 rounds
    python benchmarks/bench_http_client.py --calls 100 --no-write

The emulators run in a child process, so their work is not on this process's GIL. Each figure is
the calling thread's CPU time (`time.thread_time`: user + system, waiting costs nothing) per
call, the median of the rounds, one thread calling at a time. The sweep benchmark's (a) is
bound by this CPU (benchmarks/results.md, "Why the sweep targets are missed"): the table ends
with what the 10,000-job sweep's calls cost at these rates."""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import common

from reaper.backends import create_backend
from reaper.backends.base import Backend
from reaper.jobs import Job
from reaper.policy.config import load_config

# The 10,000-job sweep's calls by backend (benchmarks/results.md, sweep-10000-weighted).
SWEEP_CALLS = {"batch": 46, "hpc": 444, "inference": 620}
SDK_ROWS = {
    "inference": "Sutro: SutroBackend.refresh (urllib3)",
    "hpc": "Tapis: TapisBackend.refresh (tapipy getJob, urllib3)",
    "batch": "AWS Batch: AwsBatchBackend.refresh (boto3 DescribeJobs)",
}
THREADS = 8  # calls in flight per backend in a sweep (reaper.engine.sweep.DEFAULT_CONCURRENCY)
Row = tuple[str, float, float | None]  # client, CPU µs per call alone, and with THREADS at once


def serve(folder: str, ready: Any, stop: Any) -> None:
    """In the child: the three emulators, seeded with a few jobs each, until `stop` is set."""
    scenario = common.make_scenario(30, 3, "weighted", 0.0)
    with common.bench_world(Path(folder), scenario) as world:
        urls = {name: emulator.url for name, emulator in world.emulators.items()}
        ready.put((str(world.config_path), dict(world.environ), urls))
        stop.wait()


def per_call_us(call: Callable[[], object], calls: int, rounds: int, threads: int = 1) -> float:
    """Process CPU (user + system) per call, `calls` a round spread over `threads` threads
    calling at once; the median round."""
    call()  # a warm connection and warm caches
    each = max(1, calls // threads)

    def work() -> None:
        for _ in range(each):
            call()

    times = []
    for _ in range(rounds):
        started = process_cpu_s()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        times.append((process_cpu_s() - started) / (each * threads) * 1e6)
    return statistics.median(times)


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_job(backend: Backend) -> Job:
    for page in backend.list_active():
        for item in page:
            if isinstance(item, Job):
                return item
    raise SystemExit(f"{backend.name}: the emulator listed no job")


def bare_clients(
    url: str, path: str, headers: Mapping[str, str]
) -> dict[str, Callable[[], object]]:
    """The same GET through http.client, urllib3 and requests, each answer read as JSON."""
    import requests
    import urllib3

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    pool = urllib3.PoolManager()
    session = requests.Session()
    session.trust_env = False  # as reaper's sessions are (reaper.backends.http.pin_environment)

    def with_http_client() -> object:
        connection.request("GET", path, headers=dict(headers))
        return json.loads(connection.getresponse().read())

    return {
        "http.client (standard library)": with_http_client,
        "urllib3 PoolManager.request": lambda: json.loads(
            pool.request("GET", url + path, headers=dict(headers)).data
        ),
        "requests Session.get": lambda: session.get(url + path, headers=headers).json(),
    }


def measure(calls: int, rounds: int) -> list[Row]:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    with tempfile.TemporaryDirectory(prefix="reaper-bench-http-") as tmp:
        child = context.Process(target=serve, args=(tmp, ready, stop), daemon=True)
        child.start()
        try:
            config_path, environ, urls = ready.get(timeout=120)
            for key, value in environ.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            return _measure_clients(Path(config_path), urls, calls, rounds)
        finally:
            stop.set()
            child.join(30)


def _measure_clients(
    config_path: Path, urls: Mapping[str, str], calls: int, rounds: int
) -> list[Row]:
    config = load_config(config_path)
    backends = {
        name: create_backend(name, config.backends[name].section, config_path.parent)
        for name in ("inference", "hpc", "batch")
    }
    jobs = {name: first_job(backend) for name, backend in backends.items()}
    sutro = jobs["inference"]
    api_key = os.environ[str(config.backends["inference"].section["api_key_env"])]
    bare = bare_clients(
        urls["inference"], f"/v1/jobs/{sutro.id}", {"Authorization": f"Key {api_key}"}
    )
    rows = [(label, per_call_us(call, calls, rounds), None) for label, call in bare.items()]
    for name, label in SDK_ROWS.items():
        backend, job = backends[name], jobs[name]

        def refresh(b: Backend = backend, j: Job = job) -> object:
            return b.refresh(j)

        rows.append((label, per_call_us(refresh, calls, rounds),
                     per_call_us(refresh, calls, rounds, THREADS)))  # fmt: skip
    for backend in backends.values():
        backend.close()
    return rows


def report(rows: list[Row], calls: int, rounds: int) -> str:
    table = common.markdown_table(
        ("client, one GET of one job", "CPU µs per call, one thread",
         f"CPU µs per call, {THREADS} threads at once"),
        [[label, f"{alone:,.0f}", "" if crowd is None else f"{crowd:,.0f}"]
         for label, alone, crowd in rows],
    )  # fmt: skip
    by_label = {label: (alone, crowd) for label, alone, crowd in rows}
    alone_s = sum(SWEEP_CALLS[b] * by_label[SDK_ROWS[b]][0] for b in SWEEP_CALLS) / 1e6
    crowd_s = sum(SWEEP_CALLS[b] * (by_label[SDK_ROWS[b]][1] or 0.0) for b in SWEEP_CALLS) / 1e6
    floor_s = sum(SWEEP_CALLS.values()) * by_label["http.client (standard library)"][0] / 1e6
    return "\n".join([
        f"{calls} calls per round, {rounds} rounds, the median round; process CPU (user + "
        f"system) per call; emulators in a child process, no injected latency.",
        "",
        table,
        "",
        f"At these rates the 10,000-job sweep's {sum(SWEEP_CALLS.values()):,} calls "
        f"({', '.join(f'{b} {n}' for b, n in SWEEP_CALLS.items())}) cost about "
        f"**{alone_s:.2f} s** of client CPU through the backends one at a time and "
        f"**{crowd_s:.2f} s** with {THREADS} in flight, as a sweep makes them (a listing page "
        f"costs more than one job's read); through http.client alone, {floor_s:.2f} s.",
    ])  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.md")
    args = parser.parse_args(argv)
    loads = [common.load_average()]
    rows = measure(args.calls, args.rounds)
    loads.append(common.load_average())
    text = report(rows, args.calls, args.rounds)
    text += f"\n\nLoad average (1 min) before and after: {loads[0]}, {loads[1]}."
    print(text)
    if not args.no_write:
        common.update_results("http-client", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""An experiment, not a benchmark of record: `reaper run --once` on the sweep benchmark's world
with the three emulators in one process (as `bench_sweep.py` runs them) or each in its own, to
measure what sharing one GIL between the three emulated services costs the measured sweep.

    python benchmarks/experiments/split_emulators.py one
    python benchmarks/experiments/split_emulators.py split --jobs 100000

Each mode starts the emulator process(es) (benchmarks/common.py `bench_world`, seeded alike);
`split` takes AWS Batch from the first, Tapis from the second and Sutro from the third, and
points reaper.yaml and the credentials at them. Prints the sweep's seconds (sweep_start to
sweep_end in the audit log), the child's CPU seconds and the jobs cancelled. Figures:
benchmarks/results.md, "Where a 10k sweep's time goes"."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common

ROLES = {
    "hpc": ("base_url", "REAPER_DEMO_TAPIS_TOKEN"),
    "inference": ("api_url", "REAPER_DEMO_SUTRO_KEY"),
}


def serve(folder: str, jobs: int, ready: Any, stop: Any) -> None:
    """In a child: a seeded world (all three emulators) until `stop` is set."""
    scenario = common.make_scenario(jobs, 1_000, "weighted", 0.020)
    with common.bench_world(Path(folder), scenario) as world:
        urls = {name: emulator.url for name, emulator in world.emulators.items()}
        ready.put((str(world.config_path), dict(world.environ), urls))
        stop.wait()


def sweep(config_path: Path, env: dict[str, str]) -> tuple[float, float, int]:
    command = common.reaper_command("run", "--once", "--config", str(config_path))
    child = common.run_child(command, env)
    if child.returncode != 0:
        sys.exit(f"reaper run --once exited {child.returncode}:\n{child.stderr}")
    records = common.read_audit_records(config_path.parent / "audit.jsonl")
    times = {r["event"]: common.parse_ts(r["ts"]) for r in records if "sweep" in r["event"]}
    cancelled = sum(1 for r in records if r.get("outcome") == "cancelled")
    return (times["sweep_end"] - times["sweep_start"]).total_seconds(), child.cpu_s, cancelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("one", "split"))
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    worlds, stops = [], []
    for _ in range(3 if args.mode == "split" else 1):
        ready, stop = context.Queue(), context.Event()
        process = context.Process(target=serve, args=(tempfile.mkdtemp(), args.jobs, ready, stop))
        process.daemon = True
        process.start()
        worlds.append(ready.get(timeout=300))
        stops.append(stop)
    config_path, environ, _ = worlds[0]
    env = common.child_env()
    env.update({key: value for key, value in environ.items() if value is not None})
    if args.mode == "split":
        config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        for (backend, (url_key, secret)), (_, other_env, urls) in zip(
            ROLES.items(), worlds[1:], strict=True
        ):
            config["backends"][backend][url_key] = urls[backend]
            env[secret] = other_env[secret]
        Path(config_path).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    seconds, cpu, cancelled = sweep(Path(config_path), env)
    print(f"{args.mode}: sweep {seconds:.2f} s, CPU {cpu:.2f} s, {cancelled} cancelled")
    for stop in stops:
        stop.set()


if __name__ == "__main__":
    main()

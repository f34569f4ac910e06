"""Memory: peak RSS of one `reaper run --once` sweep at 10,000 and 100,000 active jobs.

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --jobs 10000 100000 --over 1000 --no-write

Each size gets a fresh world of benchmarks/common.py (the same workload as bench_sweep.py,
1,000 jobs over their limits by default, so only the size of the listing changes). The peak
resident set is the child's own `ru_maxrss` from os.wait4. A listing is streamed page by page
and only candidates are kept (reaper/scan.py), so the peak should grow far slower than the
number of jobs; target: peak at 100k ≤ 1.5x the peak at 10k."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import common

TARGET_RATIO = 1.5


def peak_rss_kb(jobs: int, over: int, latency_s: float, folder: Path) -> tuple[int, float]:
    """(peak RSS in KiB, wall seconds) of `reaper run --once` against a world of `jobs`."""
    folder.mkdir()
    scenario = common.make_scenario(jobs, over, "weighted", latency_s)
    with common.bench_world(folder, scenario) as world:
        command = common.reaper_command("run", "--once", "--config", str(world.config_path))
        child = common.run_child(command, common.child_env(world))
    if child.returncode != 0:
        sys.exit(f"reaper run --once exited {child.returncode}:\n{child.stdout}{child.stderr}")
    return child.max_rss_kb, child.wall_s


def baseline_rss_kb() -> int:
    child = common.run_child([sys.executable, "-c", "pass"], common.child_env())
    return child.max_rss_kb


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--over", type=int, default=1_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.md")
    common.add_priority_option(parser)
    args = parser.parse_args(argv)
    common.apply_priority(args.nice)
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as tmp:
        for jobs in args.jobs:
            rss, wall = peak_rss_kb(jobs, args.over, args.latency_ms / 1000, Path(tmp) / str(jobs))
            peaks[jobs] = rss
            rows.append([f"{jobs:,}", f"{args.over:,}", f"{rss / 1024:.1f}", f"{wall:.1f}"])
    python = baseline_rss_kb()
    rows.append(["`python -c pass`", "", f"{python / 1024:.1f}", ""])
    header = ("active jobs", "over their limits", "peak RSS MiB", "wall s")
    lines = [common.markdown_table(header, rows), ""]
    smallest, largest = min(peaks), max(peaks)
    if smallest != largest:
        ratio = peaks[largest] / peaks[smallest]
        lines.append(
            f"Peak RSS at {largest:,} jobs is **{ratio:.2f}x** that at {smallest:,} "
            f"(target ≤ {TARGET_RATIO}x). {args.latency_ms:g} ms latency per call."
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        common.update_results("memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

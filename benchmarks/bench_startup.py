"""Start-up: wall time of `reaper validate policies/` and `reaper test` on the examples against
`python -c pass`.

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --runs 50 --no-write

`reaper validate` reads YAML, checks it against the JSON Schema and compiles every policy; it
imports no SDK (docs/commands.md), so its start-up is the interpreter's plus reaper's own modules.
Each command runs `--runs` times in a fresh process; the table shows the minimum (the machine's
best) and the median (what a user sees). Target: `reaper validate` ≤ 0.3 s."""

from __future__ import annotations

import argparse
import statistics
import sys

import common

TARGET_S = 0.3
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import yaml, jsonschema'": [sys.executable, "-c", "import yaml, jsonschema"],
    "reaper validate policies/": common.reaper_command("validate", "policies/"),
    "reaper test --config examples/reaper.yaml": common.reaper_command(
        "test", "--config", "examples/reaper.yaml"
    ),
}
TARGETS = ("reaper validate policies/", "reaper test --config examples/reaper.yaml")
# An installed reaper has its modules compiled (pip writes the .pyc files); a checkout run with
# PYTHONDONTWRITEBYTECODE=1 compiles every module of reaper at every start. Shown for the record.
NO_PYC = "reaper validate policies/, no .pyc (PYTHONDONTWRITEBYTECODE=1)"


def time_command(command: list[str], runs: int, *, bytecode: bool = True) -> list[float]:
    """Wall seconds of `runs` fresh runs (after one warm-up run that fills the page cache and
    writes the .pyc files). Exits if the command fails."""
    env = common.child_env()
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(common.ROOT / ".no-such-pycache")  # find none either
    walls = []
    for _ in range(runs + 1):
        child = common.run_child(command, env)
        if child.returncode != 0:
            sys.exit(f"{' '.join(command)} exited {child.returncode}:\n{child.stderr}")
        walls.append(child.wall_s)
    return walls[1:]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.md")
    common.add_priority_option(parser)
    args = parser.parse_args(argv)
    common.apply_priority(args.nice)
    load_before = common.load_average()
    medians, rows = {}, []
    for label, command in COMMANDS.items():
        walls = time_command(command, args.runs)
        medians[label] = statistics.median(walls)
        rows.append([f"`{label}`", f"{min(walls):.3f}", f"{medians[label]:.3f}"])
    walls = time_command(COMMANDS["reaper validate policies/"], args.runs, bytecode=False)
    rows.append([f"`{NO_PYC}`", f"{min(walls):.3f}", f"{statistics.median(walls):.3f}"])
    python = medians["python -c pass"]
    verdicts = [
        f"`{label}`: **{medians[label]:.3f} s** median (target ≤ {TARGET_S} s: "
        f"{'met' if medians[label] <= TARGET_S else 'not met'}), "
        f"{medians[label] - python:.3f} s more than the bare interpreter."
        for label in TARGETS
    ]
    text = "\n".join([
        common.markdown_table(("command", "min s", "median s"), rows),
        "",
        *[f"- {verdict}" for verdict in verdicts],
        "",
        f"{args.runs} runs each, after a warm-up run; the children run with bytecode caching on "
        f"(PYTHONDONTWRITEBYTECODE removed), as an installed reaper does. Load average (1 min) "
        f"before and after: {load_before}, {common.load_average()}.",
    ])  # fmt: skip
    print(text)
    if not args.no_write:
        common.update_results("startup", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Fail when the running environment differs from a lock file (`make check-lock`, .ci/run).

Compares `name==version` pins of the lock with the installed distributions, names normalised
as PEP 503 does. reaper itself and the installers (pip, setuptools, wheel) are left out: they
are not pinned in the lock or come from the interpreter's own venv."""

from __future__ import annotations

import re
import sys
from importlib import metadata

IGNORED = {"reaper", "pip", "setuptools", "wheel"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        pins = (PIN.match(line) for line in handle)
        return {normalise(m[1]): m[2] for m in pins if m}


def installed() -> dict[str, str]:
    return {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}


def main(path: str) -> int:
    want = {k: v for k, v in locked(path).items() if k not in IGNORED}
    have = {k: v for k, v in installed().items() if k not in IGNORED}
    problems = [f"{n}: locked {v}, installed {have.get(n, 'nothing')}"
                for n, v in sorted(want.items()) if have.get(n) != v]  # fmt: skip
    problems += [f"{n}: installed {v}, not in {path}" for n, v in sorted(have.items())
                 if n not in want]  # fmt: skip
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{path}: {len(want)} pins, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

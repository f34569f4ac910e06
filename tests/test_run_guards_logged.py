"""`reaper run --once` through the CLI against the emulators: what its guards did is in its log
(stderr): a WARNING per fraction-guard refusal, per cap reached and for the pause file, and one
INFO summary line per backend."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from reaper.engine.guardlog import summary_line
from reaper.engine.sweep import BackendReport
from reaper.errors import ExitCode
from tests.e2e_support import NAMES, POLICIES, run_once, standard_world

CAPPED = POLICIES.replace("max_pending: 2d\n", "max_pending: 2d\n    max_cancels: 1\n")
BROAD_AND_CAPPED = """\
policies:
  - name: everything
    names: ["*"]
    max_age: 1m
""" + CAPPED.removeprefix("policies:\n")


def test_refusal_cap_and_summary_lines(tmp_path: Path) -> None:
    with standard_world(tmp_path, policies_yaml=BROAD_AND_CAPPED) as world:
        result = run_once(world)
    assert result.code == ExitCode.REFUSED, result.out + result.err
    for backend, active in (("batch", 9), ("hpc", 9), ("inference", 8)):
        assert (
            f"WARNING reaper.engine.guardlog: fraction guard refused policy everything: "
            f"matches {active} of {active} active on {backend}, limit 50%"
        ) in result.err
    summaries = re.findall(r"INFO reaper\.engine\.guardlog: sweep \S+ (\w+): (.*)", result.err)
    assert sorted(name for name, _ in summaries) == sorted(NAMES)
    for _, line in summaries:
        assert re.fullmatch(r"\d+ active, \d+ matched, 0 cancelled, skipped \d+ \(.*fraction_guard "
                            r"\d+.*\), 0 errors, [\d.]+ s", line), line  # fmt: skip


def test_pause_and_cap_warnings(tmp_path: Path) -> None:
    with standard_world(tmp_path, policies_yaml=CAPPED, config={"pause_file": "PAUSE"}) as world:
        (tmp_path / "PAUSE").write_text("maintenance\n", encoding="utf-8")
        result = run_once(world)
    assert result.code == ExitCode.REFUSED, result.out + result.err
    assert ("WARNING reaper.engine.guardlog: max_cancels 1 of policy stale-queue reached: 2 job(s) "
            "held back until a later sweep") in result.err  # fmt: skip
    assert (f"WARNING reaper.engine.guardlog: paused: the pause file {tmp_path / 'PAUSE'} exists; "
            "nothing is cancelled, 7 cancel(s) held back") in result.err  # fmt: skip


def test_the_summary_counts_errors_in_words_that_agree_with_the_number() -> None:
    one = BackendReport("b", active=3, outcomes=Counter(cancelled=1, failed=1))
    two = BackendReport("b", active=3, outcomes=Counter(failed=1), error="listing failed")
    assert ", 1 error, " in summary_line("s", one)
    assert ", 2 errors, " in summary_line("s", two)
    assert ", 0 errors, " in summary_line("s", BackendReport("b"))

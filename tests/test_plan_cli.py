"""`reaper plan` through the CLI against the emulators: its exit codes are those of `run` (3 when
a guard would refuse, 1 when a listing failed), its headline never claims "no job matches" about
jobs it could not list, dry-run cancels are counted apart, and a skipped job shows why it is
skipped rather than the reason a cancel would have given."""

from __future__ import annotations

import json
from pathlib import Path

from reaper.emulators.base import Knobs
from reaper.errors import ExitCode
from tests.e2e_support import NAMES, POLICIES, job_id, run_cli, same_knobs, standard_world

BROAD = """\
policies:
  - name: everything
    names: ["*"]
    max_age: 1m
"""
CAPPED = POLICIES.replace("max_pending: 2d\n", "max_pending: 2d\n    max_cancels: 0\n")


def plan(config: Path, *extra: str) -> tuple[int, str, str]:
    result = run_cli("plan", "--config", str(config), *extra)
    return result.code, result.out, result.err


def row_of(out: str, job: str) -> str:
    return next(line for line in out.splitlines() if f" {job} " in line)


def test_a_refusing_fraction_guard_exits_3_and_shows_its_numbers(tmp_path: Path) -> None:
    with standard_world(tmp_path, policies_yaml=BROAD) as world:
        code, out, err = plan(world.config_path)
        assert code == ExitCode.REFUSED, out + err
        assert "REFUSED policy everything: matches 9 of 9 active on batch, limit 50%" in out
        row = row_of(out, job_id("batch", "long-1"))
        assert "skip: fraction_guard" in row
        assert "fraction guard: policy everything matches 9 of 9 active on batch" in row
        assert "max_age 1m" not in row  # not the cancel reason, as if it had been cancelled
        assert "batch: 9 active jobs, 0 to cancel, 0 dry run, 9 skipped, listing ok" in out
        code, out, _ = plan(world.config_path, "--json")
        assert code == ExitCode.REFUSED
        body = json.loads(out)
        assert body["refused"] is True
        decision = next(d for d in body["decisions"] if d["job_id"] == job_id("hpc", "long-1"))
        assert decision["cause"] == "fraction_guard"
        assert decision["skip_detail"].startswith("fraction guard: policy everything matches 9")


def test_a_cap_exits_3_and_the_held_back_jobs_say_so(tmp_path: Path) -> None:
    with standard_world(tmp_path, policies_yaml=CAPPED) as world:
        code, out, err = plan(world.config_path)
        assert code == ExitCode.REFUSED, out + err
        assert "LIMIT max_cancels 0 reached for policy stale-queue: 3 held back" in out
        row = row_of(out, job_id("hpc", "stale-1"))
        assert "skip: limit" in row and "held back by max_cancels 0 of policy stale-queue" in row
        assert "cancel" in row_of(out, job_id("hpc", "long-1"))


def test_a_failed_listing_exits_1_and_the_headline_says_so(tmp_path: Path) -> None:
    knobs = {"hpc": Knobs(fail_list_page=1)}
    nothing = POLICIES.replace('names: ["long-*"]', 'names: ["no-such-*"]').replace(
        'names: ["stale-*"]', 'names: ["none-*"]'
    )
    with standard_world(tmp_path, policies_yaml=nothing, knobs=knobs) as world:
        code, out, err = plan(world.config_path)
        assert code == ExitCode.FAILED, out + err
        headline = out.splitlines()[0]
        assert headline != "no job matches any policy"
        assert "LISTING FAILED on hpc" in headline
        assert "no job matches any policy on batch, inference" in headline
        assert "hpc: 0 active jobs" in out and "listing FAILED" in out


def test_a_failed_listing_wins_over_a_refusal(tmp_path: Path) -> None:
    with standard_world(tmp_path, policies_yaml=BROAD, knobs={"batch": Knobs(fail_list_page=1)}) \
            as world:  # fmt: skip
        code, out, err = plan(world.config_path)
        assert code == ExitCode.FAILED, out + err
        assert "REFUSED policy everything: matches 9 of 9 active on hpc" in out


def test_dry_run_policies_are_not_counted_to_cancel(tmp_path: Path) -> None:
    observed = POLICIES.replace("max_pending: 2d\n", "max_pending: 2d\n    dry_run: true\n")
    with standard_world(tmp_path, policies_yaml=observed, knobs=same_knobs()) as world:
        code, out, err = plan(world.config_path)
        assert code == ExitCode.OK, out + err
        for backend in NAMES:  # long-1 and long-2 for real; stale-1 only observed
            assert f"{backend}: " in out
            line = next(x for x in out.splitlines() if x.startswith(f"{backend}: "))
            assert "2 to cancel, 1 dry run" in line, line
        assert "cancel (dry run)" in row_of(out, job_id("batch", "stale-1"))


def test_a_protected_job_shows_the_protection_not_the_reason(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        code, out, err = plan(world.config_path)
        assert code == ExitCode.OK, out + err
        row = row_of(out, job_id("batch", "long-kept"))
        assert "skip: protected" in row and "protected: the job carries the protect tag" in row
        assert "the cap is" not in row


def test_a_missing_tag_in_a_reason_is_visible(tmp_path: Path) -> None:
    tagged = POLICIES.replace("the cap is {max_runtime}", "team {tag:team}")
    with standard_world(tmp_path, policies_yaml=tagged) as world:
        code, out, err = plan(world.config_path)
        assert code == ExitCode.OK, out + err
        assert "team <no tag team>" in row_of(out, job_id("batch", "long-1"))

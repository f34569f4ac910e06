"""Machine-readable outputs and conveniences (issue 13): `run --once --json`, `run --once
--policy`, `validate --json` / `--format github`, `reaper completion`, `--version`, help texts
with examples, and the listing progress line on a terminal only."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reaper import __version__
from reaper.cli import build_parser
from reaper.commands.progress import ERASE, ListingProgress, listing_progress
from reaper.commands.validate import github_annotation
from reaper.emulators.base import Knobs
from reaper.errors import Diagnostic
from tests.e2e_support import (
    REPO_ROOT,
    audit_records,
    job_keys,
    keys,
    run_cli,
    run_once,
    running,
    standard_world,
)

FIXTURES = REPO_ROOT / "tests" / "fixtures"


# -- run --once --json / --policy ------------------------------------------------------------------
def test_run_once_json_is_the_sweep_summary(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        result = run_once(world, "--json")
    body = json.loads(result.out)
    assert body["schema_version"] == 1 and body["exit_code"] == result.code == 0
    assert set(body["backends"]) == {"batch", "hpc", "inference"}
    batch = body["backends"]["batch"]
    assert batch["active"] == 9 and batch["outcomes"] == {"cancelled": 3}
    assert batch["skipped"] == {"protected": 1} and batch["error"] is None
    assert body["dry_run"] is False and body["refused"] is False
    assert "sweep" not in result.out.splitlines()[0]  # no text summary mixed in


def test_run_once_policy_limits_the_run_to_that_policy(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        result = run_once(world, "--policy", "stale-queue")
        records = audit_records(world)
    assert result.code == 0, result.err
    cancelled = job_keys(records, "result", outcome="cancelled")
    assert cancelled == keys(["stale-1"])
    assert {r["policy"] for r in records if r["event"] in ("intent", "result")} == {"stale-queue"}


def test_run_once_with_an_unknown_policy_is_a_usage_error(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        result = run_once(world, "--policy", "stale-queu")
        assert not world.audit_path.exists()
    assert result.code == 2 and "unknown policy 'stale-queu'" in result.err


# -- validate --json / --format github -------------------------------------------------------------
def test_validate_json_lists_located_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: a\n    max_runtime: 1h\n    statuses: [runing]\n")
    result = run_cli("validate", "--json", str(bad))
    body = json.loads(result.out)
    assert result.code == 78 and body["schema_version"] == 1 and body["ok"] is False
    [problem] = body["problems"]
    assert (problem["file"], problem["line"], problem["column"]) == (str(bad), 4, 16)
    assert "did you mean 'running'" in problem["message"]


def test_validate_json_on_success(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("policies:\n  - name: a\n    max_runtime: 1h\n")
    body = json.loads(run_cli("validate", "--json", str(good)).out)
    assert body == {"schema_version": 1, "ok": True, "summary": "1 file, 1 policy: ok",
                    "config": None, "files": 1, "policies": 1, "notes": [],
                    "problems": []}  # fmt: skip


def test_validate_format_github_prints_workflow_annotations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: a\n    max_runtim: 1h\n")
    result = run_cli("validate", "--format", "github", str(bad))
    lines = result.out.splitlines()
    assert result.code == 78 and lines
    assert all(line.startswith(f"::error file={bad},line=") for line in lines), lines
    assert any(",line=3,col=5::unknown key 'max_runtim'" in line for line in lines), lines


def test_github_annotations_escape_what_would_end_the_command() -> None:
    line = github_annotation(Diagnostic("a,b:c.yaml", 2, 3, "50% of\nit"))
    assert line == "::error file=a%2Cb%3Ac.yaml,line=2,col=3::50%25 of%0Ait"


# -- completion, --version, help -------------------------------------------------------------------
@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts_know_every_command_and_option(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from reaper.cli import main

    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("validate", "plan", "audit", "verify", "new-chain-ok", "wide", "github"):
        assert word in script, word


FISH = shutil.which("fish")
needs_fish = pytest.mark.skipif(
    FISH is None and not os.environ.get("REAPER_CI_TOOLS"), reason="fish is not installed"
)  # .ci/run installs fish and sets REAPER_CI_TOOLS=1: there, a missing fish fails


def fish_complete(script: Path, *lines: str) -> list[list[str]]:
    """What fish offers for each command line, after sourcing `script` (first words only)."""
    probe = "; ".join(f"complete -C {json.dumps(line)}; echo '<end>'" for line in lines)
    done = subprocess.run([FISH or "fish", "--no-config", "-c", f"source {script}; {probe}"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert done.stderr == ""
    answers = done.stdout.split("<end>\n")[: len(lines)]
    return [[row.split("\t")[0] for row in answer.splitlines()] for answer in answers]


@needs_fish
def test_fish_completes_every_command_and_its_options(tmp_path: Path) -> None:
    result = run_cli("completion", "fish")
    assert result.code == 0, result.err
    script = tmp_path / "reaper.fish"
    script.write_text(result.out, encoding="utf-8")
    commands = subcommands(build_parser())
    top = [name for name in commands if " " not in name]
    offered, *per_command = fish_complete(script, "reaper ", *(f"reaper {c} --" for c in commands))
    assert sorted(offered) == sorted(top)
    for (name, parser), options in zip(commands.items(), per_command, strict=True):
        wanted = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        if name == "audit":  # its options, before `verify`
            assert set(options) == wanted, name
        else:
            assert wanted <= set(options), name
        assert "--log-level" not in options, name  # the top level's options come first
    shells, formats, after_verify = fish_complete(
        script, "reaper completion ", "reaper validate --format ", "reaper audit verify --"
    )
    assert sorted(shells) == ["bash", "fish", "tcsh", "zsh"]
    assert sorted(formats) == ["github", "json", "text"]
    assert "--new-chain-ok" in after_verify and "--since" not in after_verify


def test_fish_script_follows_the_parser_it_is_given() -> None:
    from reaper.commands.fish import fish_script

    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--mode", choices=["a", "b"], help="the mode; more words")
    commands = parser.add_subparsers(dest="command")
    sub = commands.add_parser("go", help="it's going")
    sub.add_argument("--out", type=Path, help="where")
    sub.add_argument("--quiet", action="store_true")
    lines = fish_script(parser).splitlines()
    assert (
        "complete -c tool -n 'not __fish_seen_subcommand_from go' -l mode -x -a 'a b' "
        "-d 'the mode'" in lines
    )
    assert (
        "complete -c tool -n 'not __fish_seen_subcommand_from go' -a go -d 'it\\'s going'" in lines
    )
    assert "complete -c tool -n '__fish_seen_subcommand_from go' -l out -r -F -d 'where'" in lines
    assert "complete -c tool -n '__fish_seen_subcommand_from go' -l quiet" in lines


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from reaper.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"reaper {__version__}"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in subcommands(sub).items()})
    return found


def test_every_subcommand_help_has_a_description_and_an_example() -> None:
    commands = subcommands(build_parser())
    assert {"validate", "plan", "run", "audit", "audit verify", "completion"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, name
        assert parser.epilog and f"reaper {name.split()[0]}" in parser.epilog, name
        assert parser.epilog.startswith("examples:"), name


# -- progress --------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_waits_throttles_and_clears() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ListingProgress(stream, delay_s=2, interval_s=0.5, clock=clock)
    progress("batch", 1, 100)
    assert stream.getvalue() == ""  # a quick listing shows nothing
    clock.now = 2.5
    progress("batch", 2, 200)
    progress("hpc\x1b[2J", 1, 10)  # within the interval: not drawn
    assert stream.getvalue() == ERASE + "listing: batch 2 pages, 200 jobs"
    clock.now = 3.1
    progress("batch", 3, 300)
    assert stream.getvalue().endswith(
        ERASE + "listing: batch 3 pages, 300 jobs; hpc\\x1b[2J 1 page, 10 jobs"
    )
    progress.done()
    assert stream.getvalue().endswith(ERASE)


def test_no_progress_when_stderr_is_not_a_terminal() -> None:
    assert listing_progress(io.StringIO()) is None


def test_a_long_listing_shows_progress_on_a_terminal_and_not_in_a_pipe(tmp_path: Path) -> None:
    now = time.time()
    seeds = {"batch": [running("batch", f"job-{i}", 1, now) for i in range(30)]}
    knobs = {"batch": Knobs(page_size=1, latency_s=0.15)}  # 30 pages, about 4.5 s
    with standard_world(tmp_path, seeds=seeds, knobs=knobs) as world:
        argv = [sys.executable, "-m", "reaper", "plan", "--config", str(world.config_path)]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        piped = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                               check=False)  # fmt: skip
        primary, secondary = pty.openpty()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=secondary, env=env)
        os.close(secondary)
        seen = read_until_exit(primary, child)
    assert piped.returncode == 0 and "listing:" not in piped.stderr
    assert child.returncode == 0
    assert "listing: batch " in seen and " pages, " in seen and ERASE in seen


def read_until_exit(fd: int, child: subprocess.Popen[bytes]) -> str:
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif child.poll() is not None:
            break
    child.wait(timeout=20)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")

"""What a terminal and a pipe see (issue 13, acceptance 4 in part): backend strings cannot drive
the terminal or forge lines, the plan table fits the terminal, a closed pipe ends a command
quietly, and botocore does not announce the credentials it found on every run."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from reaper.audit.writer import AuditLog
from reaper.engine.report import fit_widths, format_table
from reaper.service.logs import configure_logging
from reaper.service.systemd import sanitize_status
from reaper.untrusted import clean, clip
from tests.e2e_support import REPO_ROOT, run_cli, running, standard_jobs, standard_world

EVIL = "long-evil\x1b[2J\x1b]0;owned\x07\nINFO reaper: forged line\x9b31m"


def evil_world(folder: Path, name: str = EVIL):  # type: ignore[no-untyped-def]
    now = time.time()
    evil = replace(running("batch", name, 5, now), id="batch-evil")
    seeds = {"batch": [*standard_jobs("batch", now), evil]}
    return standard_world(folder, seeds=seeds, config={"limits": {"max_match_fraction": 1.0}})


def assert_inert(text: str) -> None:
    """No control character but the newlines that end lines, and no forged line."""
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
    assert not bad, repr(bad)
    assert not any(line.startswith("INFO reaper: forged") for line in text.splitlines())


def test_escape_sequences_in_a_job_name_never_reach_the_terminal(tmp_path: Path) -> None:
    with evil_world(tmp_path) as world:
        result = run_cli("plan", "--config", str(world.config_path), "--wide")
    assert result.code == 0, result.err
    assert_inert(result.out)
    assert_inert(result.err)
    assert "long-evil\\x1b[2J\\x1b]0;owned\\x07\\nINFO reaper: forged line\\x9b31m" in result.out


def test_escape_sequences_stay_out_of_the_json_plan_and_the_sweep_output(tmp_path: Path) -> None:
    with evil_world(tmp_path) as world:
        planned = run_cli("plan", "--config", str(world.config_path), "--json")
        swept = run_cli("run", "--once", "--config", str(world.config_path))
        audit = run_cli("audit", "--config", str(world.config_path))
        records = world.audit_path.read_text(encoding="utf-8")
    assert planned.code == 0 and swept.code == 0, swept.err
    for text in (planned.out, planned.err, swept.out, swept.err, audit.out, audit.err):
        assert_inert(text)
    assert "\\u001b[2J" in records  # the audit keeps the full name, JSON-escaped


def test_a_huge_job_name_is_cut_in_the_table(tmp_path: Path) -> None:
    with evil_world(tmp_path, name="long-" + "x" * 100_000) as world:
        result = run_cli("plan", "--config", str(world.config_path), "--wide")
    assert result.code == 0, result.err
    assert max(len(line) for line in result.out.splitlines()) < 2000
    assert "long-xxxx" in result.out and "…" in result.out


def test_the_plan_table_fits_columns_and_wide_shows_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_name = "long-" + "n" * 150
    with evil_world(tmp_path, name=long_name) as world:
        wide = run_cli("plan", "--config", str(world.config_path), "--wide")
        monkeypatch.setenv("COLUMNS", "140")
        fitted = run_cli("plan", "--config", str(world.config_path))
    table = lambda out: [line for line in out.splitlines() if line.startswith(("BACKEND", "batch"))]  # noqa: E731
    assert any(long_name in line for line in table(wide.out))
    assert max(len(line) for line in table(wide.out)) > 200
    assert max(len(line) for line in table(fitted.out)) <= 140
    assert not any(long_name in line for line in table(fitted.out))
    assert any("long-nnn" in line and "…" in line for line in table(fitted.out))


def test_fit_widths_narrows_the_widest_shrinkable_column_first() -> None:
    # BACKEND 5, NAME 60, REASON 80: at 100 columns REASON and NAME share what is left.
    assert fit_widths([5, 60, 80], [2, 1], 100) == [5, 46, 45]
    assert fit_widths([5, 60, 80], [2, 1], 10) == [5, 12, 12]  # no narrower than 12
    assert fit_widths([5, 6, 7], [2, 1], 100) == [5, 6, 7]


def test_format_table_cuts_with_an_ellipsis() -> None:
    table = format_table([("a", "x" * 30, "why " * 10)], ("K", "NAME", "REASON"), width=30)
    assert all(len(line) <= 30 for line in table.splitlines()), table
    assert "…" in table


def test_clean_escapes_controls_and_cuts() -> None:
    assert clean("a\x1b[2Jb\x07\n\r\tc\x9bd\u2028") == "a\\x1b[2Jb\\x07\\n\\r\\tc\\x9bd\\u2028"
    assert clean("x" * 300) == "x" * 255 + "…"
    assert clean("x" * 10, None) == "x" * 10
    assert clip("abcdef", 4) == "abc…"
    assert clean("naïve ✓ 日本") == "naïve ✓ 日本"  # printable text is left alone


def test_a_closed_pipe_ends_audit_quietly(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h") as log:
        for index in range(3000):  # far more than a pipe buffer holds
            log.append("skipped", backend="b", job_id=f"job-{index}", reason="r" * 40)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "reaper", "audit", "--file", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # `| head -1`
    code = child.wait(timeout=20)
    err = child.stderr.read().decode()
    child.stderr.close()
    assert first.startswith(b"TS")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141  # 128 + SIGPIPE, as a program killed by the signal


def test_botocore_does_not_announce_credentials_at_info(tmp_path: Path) -> None:
    with standard_world(tmp_path) as world:
        result = run_cli("plan", "--config", str(world.config_path))
    assert result.code == 0, result.err
    assert "Found credentials" not in result.err


def test_log_lines_escape_what_a_backend_sent(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream=stream, env={})
    logging.getLogger("reaper.test").warning("skipping job %s", "j\x1b[2J\nINFO forged\x9b")
    configure_logging("INFO", "json", stream=stream, env={})
    logging.getLogger("reaper.test").warning("skipping job %s", "j\x1b]0;t\x07\u2028\x9b")
    configure_logging("INFO", "text")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert_inert(stream.getvalue())
    assert "skipping job j\\x1b[2J\\nINFO forged\\x9b" in lines[0]
    assert json.loads(lines[1])["message"] == "skipping job j\x1b]0;t\x07\u2028\x9b"


def test_systemd_status_is_one_safe_line() -> None:
    status = sanitize_status("batch: FAILED: \x1b[2J\nREADY=1\x00" + "x" * 5000)
    assert "\n" not in status and "\x1b" not in status and "\x00" not in status
    assert status.startswith("batch: FAILED: \\x1b[2J\\nREADY=1\\x00") and len(status) <= 1024

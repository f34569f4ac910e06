"""Without a config, every command that needs one gives the same answer: one line on stderr
listing where it looked, exit 78 (docs/commands.md, "Exit codes")."""

from __future__ import annotations

from pathlib import Path

import pytest

from reaper.cli import main
from reaper.errors import ExitCode

COMMANDS = [
    ["plan"],
    ["run", "--once"],
    ["audit"],
    ["audit", "verify"],
    ["daemon"],
    ["validate"],
    ["test"],
    ["explain", "batch", "job-1"],
]


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder without reaper.yaml, no $REAPER_CONFIG, and a system config path that
    does not exist (whatever this machine has in /etc)."""
    system = tmp_path / "etc" / "reaper.yaml"
    monkeypatch.setattr("reaper.policy.config.SYSTEM_CONFIG", system)
    monkeypatch.delenv("REAPER_CONFIG", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return system


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_no_config_anywhere_lists_every_place(
    argv: list[str], nowhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.CONFIG
    (line,) = error_lines(capsys)
    assert line.startswith(f"reaper {argv[0]}: no config found; looked at ")
    assert "$REAPER_CONFIG (unset)" in line
    assert str(Path.cwd() / "reaper.yaml") in line and str(nowhere) in line


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_reaper_config_naming_nothing(
    argv: list[str], nowhere: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (Path.cwd() / "reaper.yaml").write_text("not: used\n", encoding="utf-8")  # no fallback
    monkeypatch.setenv("REAPER_CONFIG", "/nope")
    assert main(argv) == ExitCode.CONFIG
    (line,) = error_lines(capsys)
    assert line.endswith("no config found; looked at /nope ($REAPER_CONFIG); give --config FILE "
                         "or set $REAPER_CONFIG")  # fmt: skip


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_config_option_naming_nothing(
    argv: list[str], nowhere: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("REAPER_CONFIG", str(Path.cwd() / "other.yaml"))  # --config wins
    assert main([*argv, "--config", "/nope"]) == ExitCode.CONFIG
    (line,) = error_lines(capsys)
    assert f"reaper {argv[0]}: no config found; looked at /nope (--config);" in line

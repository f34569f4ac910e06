import json
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reaper.audit.writer import AuditEvent, AuditLog, AuditOutcome, SkipCause
from reaper.cli import main
from reaper.errors import ConfigError, Diagnostic, ExitCode


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    """A sweep two hours ago and one a minute ago, on the real clock (`--since` uses it)."""
    path = tmp_path / "audit.jsonl"
    now = datetime.now(UTC)
    with AuditLog(path, host="h", clock=lambda: now - timedelta(hours=2)) as log:
        log.append(AuditEvent.INTENT, sweep_id="s1", backend="prod", job_id="old-1", policy="p1")
    with AuditLog(path, host="h", clock=lambda: now - timedelta(minutes=1)) as log:
        log.append(AuditEvent.SWEEP_START, sweep_id="s2")
        job = {"sweep_id": "s2", "backend": "prod", "job_id": "j-42", "policy": "gpu-cap"}
        log.append(AuditEvent.INTENT, **job, reason="ran 13h;\nGPU jobs are capped at 12h")
        log.append(AuditEvent.RESULT, **job, outcome=AuditOutcome.CANCELLED)
        log.append(AuditEvent.SKIPPED, **{**job, "job_id": "j-7"}, cause=SkipCause.PROTECTED)
        log.append(AuditEvent.RESULT, **{**job, "job_id": "j-9"}, outcome="failed", error="503")
    return path


def test_table_shows_every_record_with_outcome_or_cause(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--file", str(audit_file)]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TS", "EVENT", "BACKEND", "JOB", "POLICY", "OUTCOME", "REASON"]
    assert len(lines) == 7
    intent = "intent prod j-42 gpu-cap - ran 13h; GPU jobs are capped at 12h"
    assert lines[3].split()[1:] == intent.split()
    assert "cancelled" in lines[4] and "protected" in lines[5] and "(error: 503)" in lines[6]


def test_filters_by_since_policy_and_job(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "--file", str(audit_file), "--json"]
    assert main([*args, "--since", "1h"]) == ExitCode.OK
    assert len(json.loads(capsys.readouterr().out)["records"]) == 5
    assert main([*args, "--policy", "p1"]) == ExitCode.OK
    assert [r["job_id"] for r in json.loads(capsys.readouterr().out)["records"]] == ["old-1"]
    assert main([*args, "--job", "j-42", "--since", "30m"]) == ExitCode.OK
    events = [r["event"] for r in json.loads(capsys.readouterr().out)["records"]]
    assert events == ["intent", "result"]


def test_json_document_has_a_schema_version(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--file", str(audit_file), "--json"]) == ExitCode.OK
    document = json.loads(capsys.readouterr().out)
    assert document["schema_version"] == 1
    assert document["torn_line"] is None and document["errors"] == []
    assert document["records"][2]["reason"] == "ran 13h;\nGPU jobs are capped at 12h"


def test_a_torn_last_line_is_noted_not_fatal(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with audit_file.open("ab") as file:
        file.write(b'{"ts":"20')
    assert main(["audit", "--file", str(audit_file), "--json"]) == ExitCode.OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["torn_line"] == {"file": str(audit_file), "line": 7}
    assert f"{audit_file}:7: torn last line" in captured.err
    assert main(["audit", "verify", "--file", str(audit_file)]) == ExitCode.OK


def test_a_corrupt_line_fails_the_query_and_verify_names_it(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = audit_file.read_bytes().split(b"\n")
    lines[2] = lines[2][:20]
    audit_file.write_bytes(b"\n".join(lines))
    assert main(["audit", "--file", str(audit_file)]) == ExitCode.FAILED
    assert f"{audit_file}:3: not a JSON object" in capsys.readouterr().err
    assert main(["audit", "verify", "--file", str(audit_file)]) == ExitCode.FAILED
    assert capsys.readouterr().out.startswith(f"{audit_file}:3: ")


def test_verify_reports_an_intact_chain(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--file", str(audit_file)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "chain intact: 6 records" in out and "head sha256 " in out


def test_verify_names_the_altered_line(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit_file.write_bytes(audit_file.read_bytes().replace(b'"j-42"', b'"j-43"', 1))
    assert main(["audit", "verify", "--file", str(audit_file)]) == ExitCode.FAILED
    assert capsys.readouterr().out.startswith(f"{audit_file}:3: ")


def test_verify_takes_rotated_files_in_either_option_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, rotated, older = (tmp_path / name for name in ("audit.jsonl", "a.1", "a.2"))
    with AuditLog(path, host="h") as log:
        for name in (older, rotated):
            log.append(AuditEvent.SWEEP_START)
            path.rename(name)
            log.reopen()
        log.append(AuditEvent.SWEEP_END)
    for argv in (
        ["audit", "verify", "--file", str(rotated), str(path)],
        ["audit", "verify", "--file", str(rotated), "--file", str(path)],
        ["audit", "--file", str(rotated), "--file", str(path), "verify"],
    ):
        assert main(argv) == ExitCode.OK, argv
        assert "chain intact: 2 records in 2 files" in capsys.readouterr().out
    assert main(["audit", "verify", "--file", str(older), str(path)]) == ExitCode.FAILED
    assert capsys.readouterr().out.startswith(f"{path}:1: does not continue a.2:1")


def test_missing_file_and_bad_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.jsonl")
    assert main(["audit", "--file", missing]) == ExitCode.FAILED
    assert "cannot read" in capsys.readouterr().err
    assert main(["audit", "verify", "--file", missing]) == ExitCode.FAILED
    assert "cannot read" in capsys.readouterr().err
    assert main(["audit", "--file", missing, "--since", "24"]) == ExitCode.USAGE
    assert "duration" in capsys.readouterr().err
    assert main(["audit", "--bogus"]) == ExitCode.USAGE


def test_without_file_the_config_names_the_log(
    audit_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config module is another helper's; this stands in for its two documented names."""
    seen: list[object] = []

    def locate_config(arg: str | None, env: object, cwd: object) -> Path:
        seen.append(arg)
        return Path(arg or "reaper.yaml")

    def load_config(path: Path) -> object:
        if path.name == "bad.yaml":
            raise ConfigError([Diagnostic(str(path), 3, 1, "unknown key 'x'")])
        return types.SimpleNamespace(audit_log=audit_file, audit_key_file=None)

    fake = types.ModuleType("reaper.policy.config")
    fake.locate_config = locate_config  # type: ignore[attr-defined]
    fake.load_config = load_config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "reaper.policy.config", fake)

    assert main(["audit", "verify", "--config", "site.yaml"]) == ExitCode.OK
    assert seen == ["site.yaml"] and "chain intact" in capsys.readouterr().out
    assert main(["audit", "--config", "bad.yaml"]) == ExitCode.CONFIG
    assert "bad.yaml:3:1: unknown key 'x'" in capsys.readouterr().err


def test_the_logs_of_several_instances_are_merged_by_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each instance keeps its own log (docs/scale.md); `--file a --file b` reads them as one."""
    start = datetime(2026, 5, 1, 12, tzinfo=UTC)
    for host, minutes in (("a", (0, 2, 4)), ("b", (1, 3, 5))):
        for minute in minutes:
            moment = start + timedelta(minutes=minute)
            with AuditLog(tmp_path / f"{host}.jsonl", host=host, clock=lambda m=moment: m) as log:
                log.append(AuditEvent.SWEEP_START, sweep_id=f"{host}{minute}")
    files = ["--file", str(tmp_path / "a.jsonl"), "--file", str(tmp_path / "b.jsonl")]
    assert main(["audit", *files, "--json"]) == ExitCode.OK
    records = json.loads(capsys.readouterr().out)["records"]
    assert [r["sweep_id"] for r in records] == ["a0", "b1", "a2", "b3", "a4", "b5"]
    assert main(["audit", "verify", *files[:2]]) == ExitCode.OK  # each log keeps its own chain

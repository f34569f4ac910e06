"""The newest records are protected (docs/audit.md, "The head and the key"): `<audit_log>.head`
catches a log cut at the end, and `audit_key_file:` makes every record and the head carry an
HMAC-SHA256 `mac`, which catches a forged record appended with a correct `prev`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from reaper.audit.seal import head_path, read_head
from reaper.audit.writer import AuditLog
from reaper.errors import ExitCode
from tests.e2e_support import run_cli, run_once, standard_world

KEY = "k3y-" + "0123456789abcdef" * 2


def key_file(folder: Path) -> Path:
    path = folder / "audit.key"
    path.write_text(KEY + "\n")
    return path


def verify(config: Path, *extra: str) -> tuple[int, str]:
    result = run_cli("audit", "verify", "--config", str(config), *extra)
    return result.code, result.out + result.err


def cut_last_lines(path: Path, count: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-count]))


def forge_result(path: Path, key_field: bool) -> None:
    """Append a `result` that chains correctly to the last line, as someone who can write the log
    (but not read the key) could."""
    last = path.read_bytes().splitlines()[-1]
    forged = {"ts": "2099-01-01T00:00:00.000Z", "event": "result", "sweep_id": None,
              "host": "h", "version": "0.1.0", "backend": "batch", "job_id": "someone-elses",
              "outcome": "already_terminal", "prev": hashlib.sha256(last).hexdigest()}  # fmt: skip
    if key_field:
        forged["mac"] = "0" * 64
    with path.open("ab") as file:
        file.write(json.dumps(forged, separators=(",", ":")).encode() + b"\n")


def test_a_log_cut_at_the_end_fails_verify_against_its_head(tmp_path: Path) -> None:
    with standard_world(tmp_path, config={"dry_run": False}) as world:
        assert run_once(world).code == 0
        head = read_head(head_path(world.audit_path), None)
        assert head.records == len(world.audit_path.read_bytes().splitlines())
        assert verify(world.config_path)[0] == 0
        cut_last_lines(world.audit_path, 2)
        code, text = verify(world.config_path)
        assert code == ExitCode.FAILED and "ends before its head" in text
        # What the chain alone cannot see: without the head file the cut log verifies.
        head_path(world.audit_path).unlink()
        assert verify(world.config_path)[0] == 0


def test_with_a_key_a_forged_record_fails_verify(tmp_path: Path) -> None:
    config = {"dry_run": False, "audit_key_file": str(key_file(tmp_path))}
    with standard_world(tmp_path / "w", config=config) as world:
        assert run_once(world).code == 0
        assert run_once(world).code == 0
        records = [json.loads(line) for line in world.audit_path.read_text().splitlines()]
        assert records and all(len(r["mac"]) == 64 for r in records)
        code, text = verify(world.config_path)
        assert code == 0 and "every mac correct" in text
        forge_result(world.audit_path, key_field=True)
        code, text = verify(world.config_path)
        assert code == ExitCode.FAILED and "wrong `mac`" in text


def test_without_a_key_a_forged_record_passes_what_the_key_is_for(tmp_path: Path) -> None:
    with standard_world(tmp_path, config={"dry_run": False}) as world:
        assert run_once(world).code == 0
        forge_result(world.audit_path, key_field=False)
        assert verify(world.config_path)[0] == 0  # documented: only the key proves authorship


def test_with_a_key_records_without_mac_and_a_forged_head_fail(tmp_path: Path) -> None:
    config = {"dry_run": False, "audit_key_file": str(key_file(tmp_path))}
    with standard_world(tmp_path / "w", config=config) as world:
        assert run_once(world).code == 0
        forge_result(world.audit_path, key_field=False)
        code, text = verify(world.config_path)
        assert code == ExitCode.FAILED and "no `mac`" in text
        cut_last_lines(world.audit_path, 1)
        assert verify(world.config_path)[0] == 0
        # A head rewritten to match a cut log, without the key, is caught by its mac.
        cut_last_lines(world.audit_path, 3)
        lines = world.audit_path.read_bytes().splitlines()
        fake = {"records": len(lines), "sha256": hashlib.sha256(lines[-1]).hexdigest(),
                "ts": "2099-01-01T00:00:00.000Z", "mac": "1" * 64}  # fmt: skip
        head_path(world.audit_path).write_text(json.dumps(fake, separators=(",", ":")) + "\n")
        code, text = verify(world.config_path)
        assert code == ExitCode.FAILED and "head file" in text
        head_path(world.audit_path).unlink()
        code, text = verify(world.config_path)
        assert code == ExitCode.FAILED and "no head file" in text


def test_the_head_follows_rotation_and_counts_records_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h") as log:
        for _ in range(3):
            log.append("sweep_start")
    assert read_head(head_path(path), None).records == 3
    with AuditLog(path, host="h") as log:  # the count is picked up from the head, not rescanned
        assert log.records == 3
        log.append("sweep_end")
    path.rename(tmp_path / "audit.jsonl.1")
    with AuditLog(path, host="h") as log:
        log.append("sweep_start")
    assert read_head(head_path(path), None).records == 1
    # A fresh writer after the rotation starts a new chain: verify is told so.
    result = run_cli("audit", "verify", "--new-chain-ok", "--file", str(tmp_path / "audit.jsonl.1"),
                     "--file", str(path))  # fmt: skip
    assert result.code == 0, result.out


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_created_files_get_fixed_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "new" / "folder" / "audit.jsonl"
    old = os.umask(umask)
    try:
        with AuditLog(path, host="h") as log:
            log.append("sweep_start")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert head_path(path).stat().st_mode & 0o777 == 0o640
    assert path.parent.stat().st_mode & 0o777 == 0o750
    assert path.parent.parent.stat().st_mode & 0o777 == 0o750

"""Start-up reconciliation (docs/audit.md): an `intent` without a `result` means a crash
interrupted a cancel. Look the job up and write the missing `result` as `unconfirmed→…`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reaper.audit.reader import Record, rotated_files
from reaper.audit.writer import AuditLog, read_audit, unconfirmed_outcome, unresolved_intents
from reaper.backends.base import Backend
from reaper.errors import BackendError
from reaper.jobs import JOB_KINDS, Job, JobKind, Phase, phase_of

log = logging.getLogger(__name__)

CARRIED = (
    "sweep_id", "policy", "policy_file", "policy_sha256", "policy_commit", "backend", "type",
    "kind", "job_id", "job_name", "queue", "status", "runtime_s", "pending_s", "reason",
    "dry_run",
)  # fmt: skip


def reconcile(audit: AuditLog, backends: Mapping[str, Backend]) -> int:
    """Write a `result` for every unresolved intent whose backend answers; returns how many.
    An intent whose backend is not configured or fails stays open for the next start."""
    done = 0
    for intent in unresolved_intents(intents_and_results(audit.path)):
        backend = backends.get(str(intent.get("backend")))
        outcome = _look_up(backend, intent) if backend is not None else None
        if outcome is None:
            continue
        fields = {key: intent.get(key) for key in CARRIED}
        audit.append("result", **fields, outcome=unconfirmed_outcome(outcome), error=None)
        log.warning("reconciled interrupted cancel of %s/%s: %s", fields["backend"],
                    fields["job_id"], outcome)  # fmt: skip
        done += 1
    return done


def intents_and_results(path: Path) -> list[Record]:
    """The `intent` and `result` records of the log and of the file rotated away before it
    (`PATH.1`), oldest first: a rotation between a crash and the next start must not hide the
    open intent it left. Older files are not read: a start reconciles at once, so an intent
    still open there was already tried at an earlier start. Raises OSError."""
    records: list[Record] = []
    for file in reversed(list(rotated_files(path))[:2]):
        if file.exists():
            kept = read_audit(file, keep=lambda r: r.get("event") in ("intent", "result"))
            records += kept.records
    return records


def _look_up(backend: Backend, intent: Mapping[str, Any]) -> str | None:
    """`cancelled` if the job is terminal now (the interrupted cancel may have done it, and the
    re-cancel window must hold), `not_found` if it is gone, `failed` if it is still active (an
    asynchronous cancel may still be winding it down, so the re-cancel window holds it too; after
    the window the sweep evaluates it afresh), None if the backend cannot tell now."""
    try:
        fresh = backend.refresh(job_stub(backend, intent))
    except BackendError as exc:
        log.error("cannot reconcile %s: %s", intent.get("job_id"), exc)
        return None
    if fresh is None:
        return "not_found"
    return "cancelled" if fresh.phase is Phase.TERMINAL else "failed"


def job_stub(backend: Backend, intent: Mapping[str, Any]) -> Job:
    """A Job holding what an audit record knows of it, for `Backend.refresh` (its `kind` tells
    AWS Batch which describe call reads it; records written before kinds name none)."""
    status = str(intent.get("status") or "")
    kind = intent.get("kind")
    return Job(
        backend=backend.name, type=backend.type, id=str(intent["job_id"]),
        name=str(intent.get("job_name") or ""), queue=str(intent.get("queue") or ""),
        status=status, phase=phase_of(backend.type, status) if status else Phase.UNKNOWN,
        created_at=datetime.fromtimestamp(0, UTC), detailed=False,
        kind=JobKind(kind) if kind in JOB_KINDS else None,
    )  # fmt: skip

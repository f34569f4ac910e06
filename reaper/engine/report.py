"""Rendering plans and sweep results for people (tables) and scripts (JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from reaper.engine.decide import Action, Clearance, Decision, Plan
from reaper.engine.notices import format_due
from reaper.engine.scan import Scan
from reaper.engine.sweep import SweepReport
from reaper.jobs import SkipCause
from reaper.policy.durations import format_duration
from reaper.policy.model import Match

SCHEMA_VERSION = 1
COLUMNS = ("BACKEND", "JOB", "NAME", "QUEUE", "STATUS", "RUNTIME", "POLICY", "DECISION", "REASON")


def decision_label(decision: Decision[Match]) -> str:
    due = "" if decision.due is None else f" (due {format_due(decision.due)})"
    if decision.action is Action.SKIP:
        return f"skip: {decision.cause}{due}"
    verb = "warn" if decision.action is Action.WARN else "cancel"
    return f"{verb}{due}" + (" (dry run)" if decision.dry_run else "")


def _runtime(decision: Decision[Match], now: datetime) -> str:
    runtime = decision.job.runtime(now)
    if runtime is not None:
        return format_duration(runtime)
    pending = decision.job.pending(now)
    return f"pending {format_duration(pending)}" if pending is not None else "-"


def decision_row(decision: Decision[Match], now: datetime) -> tuple[str, ...]:
    job = decision.job
    return (job.backend, job.id, job.name, job.queue or "-", job.status, _runtime(decision, now),
            decision.policy.name, decision_label(decision), decision.reason)  # fmt: skip


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> str:
    """Aligned columns; the last column (the reason) is never padded or cut."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def plan_summary(scans: Sequence[Scan], plan: Plan[Match]) -> list[str]:
    """One line per backend, per guard refusal, and for the pause file."""
    lines = []
    if paused := len(plan.skips(SkipCause.PAUSED)):
        lines.append(f"PAUSED: the pause file exists; {paused} cancel(s) held back")
    for scan in scans:
        state = f"FAILED: {scan.error}" if scan.error else "ok"
        cancels = sum(1 for d in plan.cancels() if d.job.backend == scan.backend)
        lines.append(
            f"{scan.backend}: {scan.active} active jobs, {cancels} to cancel, listing {state}"
        )
    for r in plan.fraction_refusals:
        lines.append(
            f"REFUSED policy {r.policy} on {r.backend}: matches {r.matched} of {r.active} active "
            f"jobs, more than max_match_fraction {r.max_fraction}"
        )
    for hit in plan.limit_hits:
        scope = f"policy {hit.policy}" if hit.policy else "this sweep"
        lines.append(
            f"LIMIT {hit.limit} {hit.maximum} reached for {scope}: {hit.skipped} held back"
        )
    if warned := plan.warnings():
        lines.append(f"{len(warned)} job(s) to warn; cancelled at their due time if still matching")
    for clearance in plan.cleared:
        w = clearance.warning
        lines.append(f"warning of {w.backend}/{w.job_id} by {w.policy} (due {format_due(w.due)}) "
                     f"to be cleared: {clearance.cause}")  # fmt: skip
    return lines


def decision_json(decision: Decision[Match], now: datetime) -> dict[str, Any]:
    job, match = decision.job, decision.match
    return {
        "backend": job.backend, "type": job.type, "job_id": job.id, "job_name": job.name,
        "queue": job.queue, "status": job.status, "phase": str(job.phase),
        "runtime_s": match.runtime_s, "pending_s": match.pending_s, "age_s": match.age_s,
        "policy": decision.policy.name, "policy_file": match.policy.source.file,
        "action": str(decision.action), "cause": decision.cause and str(decision.cause),
        "dry_run": decision.dry_run, "also_matched": list(decision.also_matched),
        "facts": [f.text for f in match.facts], "reason": decision.reason,
        "due": None if decision.due is None else decision.due.isoformat(),
    }  # fmt: skip


def plan_json(scans: Sequence[Scan], plan: Plan[Match], now: datetime) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now.isoformat(),
        "backends": {
            s.backend: {"active": s.active, "complete": s.complete, "error": s.error} for s in scans
        },
        "decisions": [decision_json(d, now) for d in plan.decisions],
        "fraction_refusals": [vars_of(r) for r in plan.fraction_refusals],
        "limit_hits": [vars_of(h) for h in plan.limit_hits],
        "cleared": [clearance_json(c) for c in plan.cleared],
        "refused": plan.refused,
    }


def clearance_json(clearance: Clearance) -> dict[str, Any]:
    w = clearance.warning
    return {"backend": w.backend, "job_id": w.job_id, "policy": w.policy,
            "due": w.due.isoformat(), "cause": str(clearance.cause)}  # fmt: skip


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def sweep_summary(result: SweepReport) -> list[str]:
    """One line per backend: what was done, skipped, and what failed."""
    lines = [f"sweep {result.sweep_id}"]
    for name, r in result.backends.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items())) or "nothing done"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(r.skipped.items()))
        ladder = "".join(f"; {k} {v}" for k, v in sorted(r.ladder.items()))
        line = f"{name}: {r.active} active; {outcomes}{ladder}" + (
            f"; skipped: {skipped}" if skipped else ""
        )
        lines.append(line + (f"; ERROR: {r.error}" if r.error else ""))
    if result.audit_error:
        lines.append(f"AUDIT LOG FAILED, cancelling stopped: {result.audit_error}")
    return lines

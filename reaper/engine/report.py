"""Rendering plans and sweep results for people (tables) and scripts (JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from reaper.engine.decide import RECANCEL_WINDOW, Action, Decision, Plan
from reaper.engine.scan import Scan
from reaper.engine.sweep import SweepReport
from reaper.jobs import SkipCause
from reaper.policy.durations import format_duration
from reaper.policy.model import Match

SCHEMA_VERSION = 1
COLUMNS = ("BACKEND", "JOB", "NAME", "QUEUE", "STATUS", "RUNTIME", "POLICY", "DECISION", "REASON")


def decision_label(decision: Decision[Match]) -> str:
    if decision.action is Action.SKIP:
        return f"skip: {decision.cause}"
    return "cancel (dry run)" if decision.dry_run else "cancel"


def _runtime(decision: Decision[Match], now: datetime) -> str:
    runtime = decision.job.runtime(now)
    if runtime is not None:
        return format_duration(runtime)
    pending = decision.job.pending(now)
    return f"pending {format_duration(pending)}" if pending is not None else "-"


def decision_row(
    decision: Decision[Match], now: datetime, plan: Plan[Match] | None = None
) -> tuple[str, ...]:
    """One table row. A skipped job's REASON is why it is skipped, not the cancel reason its
    policy would have given: that would read as if it had been cancelled."""
    job = decision.job
    reason = decision.reason if decision.action is Action.CANCEL else skip_detail(decision, plan)
    return (job.backend, job.id, job.name, job.queue or "-", job.status, _runtime(decision, now),
            decision.policy.name, decision_label(decision), reason)  # fmt: skip


def skip_detail(decision: Decision[Match], plan: Plan[Match] | None = None) -> str:
    """Why a job is skipped, in words, with the guard's numbers where `plan` has them."""
    cause, policy, backend = decision.cause, decision.policy.name, decision.job.backend
    if cause is SkipCause.FRACTION_GUARD and plan is not None:
        refusal = next((r for r in plan.fraction_refusals
                        if (r.policy, r.backend) == (policy, backend)), None)  # fmt: skip
        if refusal is not None:
            return f"fraction guard: policy {policy} {refusal.describe()}"
    if cause is SkipCause.LIMIT and plan is not None:
        hits = [h for h in plan.limit_hits if h.policy in (policy, None)]
        if hits:
            return "held back by " + " and ".join(h.describe() for h in hits)
    return _SKIP_TEXT.get(SkipCause(cause), f"skipped: {cause}") if cause else "skipped"


_SKIP_TEXT: dict[SkipCause, str] = {
    SkipCause.PROTECTED: "protected: the job carries the protect tag",
    SkipCause.LISTING_INCOMPLETE: "the listing of this backend failed: no cancel here",
    SkipCause.FRACTION_GUARD: "fraction guard refused this policy on this backend",
    SkipCause.RECENTLY_CANCELLED: f"cancelled less than {format_duration(RECANCEL_WINDOW)} ago, "
    "still winding down",
    SkipCause.LIMIT: "held back by max_cancels / max_cancels_per_sweep",
    SkipCause.PAUSED: "paused: the pause file exists",
}


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


def plan_headline(scans: Sequence[Scan], shown: int, unreachable: Sequence[str] = ()) -> str:
    """What to print instead of an empty table: never "no job matches" about a backend whose
    jobs were not all seen."""
    failed = [*unreachable, *(s.backend for s in scans if s.error)]
    if shown:
        return ""
    if not failed:
        return "no job matches any policy"
    listed = [s.backend for s in scans if not s.error]
    seen = f"no job matches any policy on {', '.join(listed)}; " if listed else ""
    return f"{seen}LISTING FAILED on {', '.join(failed)}: its jobs are unknown (see below)"


def plan_summary(scans: Sequence[Scan], plan: Plan[Match]) -> list[str]:
    """One line per backend, per guard refusal, and for the pause file. "To cancel" counts the
    cancels a run would make; dry-run cancels (config or policy `dry_run`) are counted apart."""
    lines = []
    if paused := len(plan.skips(SkipCause.PAUSED)):
        lines.append(f"PAUSED: the pause file exists; {paused} cancel(s) held back")
    for scan in scans:
        state = f"FAILED: {scan.error}" if scan.error else "ok"
        cancels = [d for d in plan.cancels() if d.job.backend == scan.backend]
        dry = sum(1 for d in cancels if d.dry_run)
        skipped = sum(1 for d in plan.decisions
                      if d.job.backend == scan.backend and d.action is Action.SKIP)  # fmt: skip
        lines.append(f"{scan.backend}: {scan.active} active jobs, {len(cancels) - dry} to cancel, "
                     f"{dry} dry run, {skipped} skipped, listing {state}")  # fmt: skip
    for r in plan.fraction_refusals:
        lines.append(f"REFUSED policy {r.policy}: {r.describe()} (max_match_fraction)")
    for hit in plan.limit_hits:
        scope = f"policy {hit.policy}" if hit.policy else "this sweep"
        lines.append(
            f"LIMIT {hit.limit} {hit.maximum} reached for {scope}: {hit.skipped} held back"
        )
    return lines


def decision_json(
    decision: Decision[Match], now: datetime, plan: Plan[Match] | None = None
) -> dict[str, Any]:
    """`reason` is what the policy says (and a cancel would send); `skip_detail` why a skipped
    job is not cancelled."""
    job, match = decision.job, decision.match
    skipped = decision.action is Action.SKIP
    return {
        "backend": job.backend, "type": job.type, "job_id": job.id, "job_name": job.name,
        "queue": job.queue, "status": job.status, "phase": str(job.phase),
        "runtime_s": match.runtime_s, "pending_s": match.pending_s, "age_s": match.age_s,
        "policy": decision.policy.name, "policy_file": match.policy.source.file,
        "action": str(decision.action), "cause": decision.cause and str(decision.cause),
        "dry_run": decision.dry_run, "also_matched": list(decision.also_matched),
        "facts": [f.text for f in match.facts], "reason": decision.reason,
        "skip_detail": skip_detail(decision, plan) if skipped else None,
    }  # fmt: skip


def plan_json(scans: Sequence[Scan], plan: Plan[Match], now: datetime) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now.isoformat(),
        "backends": {
            s.backend: {"active": s.active, "complete": s.complete, "error": s.error} for s in scans
        },
        "decisions": [decision_json(d, now, plan) for d in plan.decisions],
        "fraction_refusals": [vars_of(r) for r in plan.fraction_refusals],
        "limit_hits": [vars_of(h) for h in plan.limit_hits],
        "refused": plan.refused,
    }


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def sweep_summary(result: SweepReport) -> list[str]:
    """One line per backend: what was done, skipped, and what failed."""
    lines = [f"sweep {result.sweep_id}"]
    for name, r in result.backends.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items())) or "nothing done"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(r.skipped.items()))
        line = f"{name}: {r.active} active; {outcomes}" + (
            f"; skipped: {skipped}" if skipped else ""
        )
        lines.append(line + (f"; ERROR: {r.error}" if r.error else ""))
    if result.audit_error:
        lines.append(f"AUDIT LOG FAILED, cancelling stopped: {result.audit_error}")
    return lines

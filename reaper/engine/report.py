"""Rendering plans and sweep results for people (tables) and scripts (JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from reaper.engine.decide import RECANCEL_WINDOW, Action, Clearance, Decision, Plan
from reaper.engine.notices import format_due
from reaper.engine.scan import Scan
from reaper.engine.sweep import BackendReport, SweepReport
from reaper.jobs import SkipCause
from reaper.policy.durations import format_duration
from reaper.policy.model import Match
from reaper.untrusted import MAX_TEXT, clean, clip

SCHEMA_VERSION = 1
COLUMNS = ("BACKEND", "JOB", "NAME", "QUEUE", "STATUS", "RUNTIME", "POLICY", "DECISION", "REASON")
SHRINKABLE = ("REASON", "NAME")  # cut to fit the terminal; ids are never cut (they are copied)
MIN_SHRUNK = 12  # narrowest a shrunk column gets: "nightly-etl…" still says something
MAX_REASON = 4 * MAX_TEXT  # a reason quotes names and tags, and says more than one of them


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


def decision_row(
    decision: Decision[Match], now: datetime, plan: Plan[Match] | None = None
) -> tuple[str, ...]:
    """The table row of one decision. Every string a backend provided (id, name, queue, status,
    and the reason, which may quote them) is shown escaped and cut (reaper.untrusted.clean). A
    skipped job's REASON is why it is skipped, not the cancel reason its policy would have
    given: that would read as if it had been cancelled."""
    job = decision.job
    reason = decision.reason if decision.action is Action.CANCEL else skip_detail(decision, plan)
    return (clean(job.backend), clean(job.id), clean(job.name), clean(job.queue or "-"),
            clean(job.status), _runtime(decision, now), clean(decision.policy.name),
            decision_label(decision), clean(reason, MAX_REASON))  # fmt: skip


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


def format_table(
    rows: Sequence[Sequence[str]],
    header: Sequence[str] = COLUMNS,
    width: int | None = None,
    shrink: Sequence[str] = SHRINKABLE,
) -> str:
    """Aligned columns; the last one is not padded. With `width`, the `shrink` columns (NAME
    and REASON) are cut with an ellipsis so that a line fits, as far as their minimum widths
    allow; the other columns (ids above all) are never cut."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    if width is not None:
        widths = fit_widths(widths, [header.index(c) for c in shrink if c in header], width)
    lines = []
    for row in [header, *rows]:
        cells = [clip(cell, w).ljust(w) for cell, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, clip(row[-1], widths[-1])]).rstrip())
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


def fit_widths(widths: Sequence[int], shrinkable: Sequence[int], width: int) -> list[int]:
    """Column widths whose sum with two-space gaps is at most `width`, found by narrowing the
    `shrinkable` columns, the widest first, down to MIN_SHRUNK characters each."""
    fitted = list(widths)
    excess = sum(fitted) + 2 * (len(fitted) - 1) - width
    while excess > 0:
        candidates = [i for i in shrinkable if fitted[i] > MIN_SHRUNK]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: fitted[i])
        others = [fitted[i] for i in candidates if i != widest]
        target = max(MIN_SHRUNK, max(others, default=MIN_SHRUNK), fitted[widest] - excess)
        step = max(fitted[widest] - target, 1)
        fitted[widest] -= step
        excess -= step
    return fitted


def plan_summary(scans: Sequence[Scan], plan: Plan[Match]) -> list[str]:
    """One line per backend, per guard refusal, and for the pause file. "To cancel" counts the
    cancels a run would make; dry-run cancels (config or policy `dry_run`) are counted apart."""
    lines = []
    if paused := len(plan.skips(SkipCause.PAUSED)):
        lines.append(f"PAUSED: the pause file exists; {paused} cancel(s) held back")
    for scan in scans:
        state = f"FAILED: {clean(scan.error, MAX_REASON)}" if scan.error else "ok"
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
    if warned := plan.warnings():
        lines.append(f"{len(warned)} job(s) to warn; cancelled at their due time if still matching")
    for clearance in plan.cleared:
        w = clearance.warning
        lines.append(f"warning of {w.backend}/{w.job_id} by {w.policy} (due {format_due(w.due)}) "
                     f"to be cleared: {clearance.cause}")  # fmt: skip
    return lines


def decision_json(
    decision: Decision[Match], now: datetime, plan: Plan[Match] | None = None
) -> dict[str, Any]:
    """`reason` is what the policy says (and a cancel would send); `skip_detail` why a skipped
    job is not cancelled."""
    job, match = decision.job, decision.match
    skipped = decision.action is Action.SKIP
    return {
        "backend": job.backend, "type": job.type, "kind": job.kind, "job_id": job.id,
        "job_name": job.name, "queue": job.queue, "status": job.status, "phase": str(job.phase),
        "runtime_s": match.runtime_s, "pending_s": match.pending_s, "age_s": match.age_s,
        "policy": decision.policy.name, "policy_file": match.policy.source.file,
        "action": str(decision.action), "cause": decision.cause and str(decision.cause),
        "dry_run": decision.dry_run, "also_matched": list(decision.also_matched),
        "facts": [f.text for f in match.facts], "reason": decision.reason,
        "skip_detail": skip_detail(decision, plan) if skipped else None,
        "due": None if decision.due is None else decision.due.isoformat(),
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
        lines.append(line + (f"; ERROR: {clean(r.error, MAX_REASON)}" if r.error else ""))
    if result.audit_error:
        lines.append(f"AUDIT LOG FAILED, cancelling stopped: {clean(result.audit_error)}")
    return lines


def sweep_json(result: SweepReport, *, dry_run: bool) -> dict[str, Any]:
    """`reaper run --once --json`: the sweep summary (docs/commands.md)."""
    plan = result.plan
    return {
        "schema_version": SCHEMA_VERSION,
        "sweep_id": result.sweep_id,
        "dry_run": dry_run,
        "backends": {name: _backend_json(r) for name, r in result.backends.items()},
        "fraction_refusals": [vars_of(r) for r in plan.fraction_refusals],
        "limit_hits": [vars_of(h) for h in plan.limit_hits],
        "refused": plan.refused,
        "audit_error": result.audit_error,
        "exit_code": int(result.exit_code),
    }


def _backend_json(r: BackendReport) -> dict[str, Any]:
    return {
        "active": r.active,
        "matched": dict(r.matched),
        "outcomes": dict(r.outcomes),
        "skipped": dict(r.skipped),
        "error": r.error,
        "duration_s": round(r.duration_s, 3),
    }

"""`reaper explain BACKEND JOB_ID`: why a sweep would (or would not) cancel one live job.

Reads that one job (the backend's re-read of one job: no mutating call) and the audit log's
tail (read-only, for the re-cancel window); writes nothing (docs/commands.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reaper.commands.common import (
    add_config_option,
    add_now_option,
    examples,
    load,
    report_interrupted,
)
from reaper.errors import BackendError, ExitCode
from reaper.untrusted import clean

if TYPE_CHECKING:
    from reaper.engine.decide import Decision
    from reaper.engine.explain import JobExplanation
    from reaper.engine.sweep import AuditState
    from reaper.jobs import Job
    from reaper.policy.config import Config
    from reaper.policy.explain import PolicyExplanation
    from reaper.policy.model import Match, PolicySet
    from reaper.policy.selectors import Check

SCHEMA_VERSION = 1
MAX_LINE = 4096  # characters of one line of the explanation


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="why a sweep would or would not cancel one job",
        description="Read one live job and show, policy by policy, every selector with what "
        "it observed and needed, the exclude block, the guards, and the decision a sweep "
        "would take now. Makes no mutating call and writes no audit record.",
        **examples(
            "reaper explain batch-prod 6f1c0d3e-2b4a-4f7e-9a51-3c2d1e0f9b8a",
            "reaper explain batch-prod 6f1c0d3e --now 2026-12-01T12:00:00Z",
            "reaper explain hpc 7d0e2c91-a4b5-4c6d-8e9f-0a1b2c3d4e5f-007 --json | jq .decision",
        ),
    )
    parser.add_argument("backend", metavar="BACKEND", help="the backend's name in reaper.yaml")
    parser.add_argument("job_id", metavar="JOB_ID", help="the job's id on that backend")
    add_config_option(parser)
    add_now_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from reaper.engine.decide import guards_from
    from reaper.engine.explain import SweepState, explain_job
    from reaper.engine.runtime import utc_now

    config, policies = load(args)
    if args.backend not in config.backends:
        known = ", ".join(config.backends) or "none"
        print(f"reaper explain: unknown backend {args.backend!r} (configured: {known})",
              file=sys.stderr)  # fmt: skip
        return ExitCode.USAGE
    from reaper.service.interrupt import Interrupted, run_interruptible

    now = args.now or utc_now()
    # A backend that never answers must not hold a Ctrl-C: the read runs interruptibly.
    read = run_interruptible(lambda _stop: read_one(config, args.backend, args.job_id))
    if isinstance(read, Interrupted):
        return report_interrupted("explain", read, "nothing was changed (explain never cancels)",
                                  "explain makes no mutating call")  # fmt: skip
    job, error, unlisted = read
    if job is None:
        print(f"reaper explain: {clean(error, MAX_LINE)}", file=sys.stderr)
        return ExitCode.FAILED
    audit, audit_error = read_state(config.audit_log, now, policies, config.confirm_within)
    paused = config.pause_file is not None and config.pause_file.exists()
    state = SweepState(guards_from(config), paused, audit.recent_cancels, audit_error, unlisted,
                       warnings=audit.warnings)  # fmt: skip
    explanation = explain_job(job, policies.for_backend(args.backend), state, now)
    if args.json:
        json.dump(explanation_json(explanation), sys.stdout, indent=2, default=str)
        print()
    else:
        # A job's name, tags and status come from the backend: escaped, cut (reaper.untrusted).
        print("\n".join(clean(line, MAX_LINE) for line in explanation_lines(explanation)))
    return ExitCode.OK


def read_one(config: Config, backend: str, job_id: str) -> tuple[Job | None, str, str | None]:
    """The job as the backend reads it now, or None and why not (not found, unreachable); and
    why the backend's listing never yields it, if it never does."""
    from reaper.backends.base import read_job, why_unlisted
    from reaper.engine.runtime import open_backends

    opened = open_backends(config, [backend])
    try:
        if backend in opened.errors:
            return None, f"backend {backend} not reachable: {opened.errors[backend]}", None
        job = read_job(opened.backends[backend], job_id)
        unlisted = None if job is None else why_unlisted(opened.backends[backend], job)
    except BackendError as exc:
        return None, f"cannot read job {job_id}: {exc}", None
    finally:
        opened.close()
    return job, f"job {job_id!r} not found on backend {backend}", unlisted


def read_state(
    audit_path: Path, now: datetime, policies: PolicySet, confirm_within: timedelta
) -> tuple[AuditState, str | None]:
    """The re-cancel window's jobs (with the cancels still awaiting confirmation within
    `confirm_within`, as a sweep reads them) and the open warnings from the audit log's tail,
    or none and why it is unreadable."""
    from reaper.audit.reader import LogTail
    from reaper.engine.sweep import AuditState, read_audit_state

    try:
        return read_audit_state(LogTail(audit_path), now, policies, confirm_within), None
    except OSError as exc:
        return AuditState(), f"{audit_path}: {exc.strerror or exc}"


# -- text -----------------------------------------------------------------------------------------
def explanation_lines(e: JobExplanation) -> list[str]:
    lines = job_lines(e.job, e.now)
    lines.append(f"evaluated at {_time(e.now)}; {len(e.policies)} policies target "
                 f"{e.job.backend}")  # fmt: skip
    for policy in e.policies:
        lines += ["", *policy_lines(policy)]
    lines += ["", "guards", *check_lines(e.checks, "  ")]
    g = e.guards
    lines.append(f"  per sweep (counted over the whole listing, not decided for one job): "
                 f"max_cancels_per_sweep {_or_none(g.max_cancels_per_sweep)}, "
                 f"max_match_fraction {_or_none(g.max_match_fraction)} "
                 f"(when more than {g.fraction_guard_floor} jobs match)")  # fmt: skip
    lines.append(f"  dry_run (reaper.yaml): {_bool(g.dry_run)}")
    return [*lines, "", decision_line(e)]


def job_lines(job: Job, now: datetime) -> list[str]:
    started = _time(job.started_at) if job.started_at else "not started"
    tags = ", ".join(f"{k}={v}" for k, v in sorted(job.tags.items())) or "none"
    return [
        f"job {job.backend}/{job.id}: {job.name or '(no name)'}, queue {job.queue or '-'}, "
        f"status {job.status} ({job.phase.value})" + (f", {job.kind} job" if job.kind else ""),
        f"  created {_time(job.created_at)}, started {started}",
        f"  tags: {tags}",
    ]


def policy_lines(p: PolicyExplanation) -> list[str]:
    policy = p.policy
    verdict = "MATCHES" if p.matches else "does not match"
    where = f"{policy.source.file} #{policy.source.position + 1}"
    lines = [f"policy {policy.name} ({where}): {verdict}"]
    widths = column_widths([check for clause in p.clauses for check in clause.checks])
    for clause in p.clauses:
        lines.append(f"  {clause.name}: {clause.summary}")
        lines += check_lines(clause.checks, "    ", widths)
    lines.append(f"  dry_run {_bool(policy.dry_run)}; max_cancels {_or_none(policy.max_cancels)} "
                 "(per sweep)")  # fmt: skip
    return lines


def column_widths(checks: Sequence[Check]) -> tuple[int, int]:
    """The widths of the clause and observed columns over `checks`."""
    return max((len(c.clause) for c in checks), default=0), max(
        (len(c.observed) for c in checks), default=0
    )


def check_lines(
    checks: Sequence[Check], indent: str, widths: tuple[int, int] | None = None
) -> list[str]:
    """`holds  CLAUSE  OBSERVED  needed NEEDED`, aligned (over `checks`, or to `widths`)."""
    name_w, seen_w = widths or column_widths(checks)
    return [
        f"{indent}{'holds' if c.holds else 'FAILS'}  {c.clause.ljust(name_w)}  "
        f"{c.observed.ljust(seen_w)}  needed {c.needed}"
        for c in checks
    ]


def decision_line(e: JobExplanation) -> str:
    d = e.decision
    if e.unlisted is not None:
        return f"decision: none: a sweep never lists this job ({e.unlisted})"
    if d is None:
        return "decision: no policy matches: a sweep leaves this job alone"
    also = f" (also matched: {', '.join(d.also_matched)})" if d.also_matched else ""
    if d.cause is not None:
        return (
            f"decision: skip ({d.cause}): policy {d.policy.name} matches{also}; reason: {d.reason}"
        )
    dry = " (dry run: nothing would be cancelled)" if d.dry_run else ""
    return f"decision: cancel by policy {d.policy.name}{dry}{also}; reason: {d.reason}"


def _time(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _or_none(value: object) -> str:
    return "none" if value is None else str(value)


# -- JSON -----------------------------------------------------------------------------------------
def explanation_json(e: JobExplanation) -> dict[str, Any]:
    job, g = e.job, e.guards
    return {
        "schema_version": SCHEMA_VERSION,
        "now": e.now.isoformat(),
        "job": {
            "backend": job.backend, "type": job.type, "kind": job.kind, "job_id": job.id,
            "job_name": job.name, "queue": job.queue, "status": job.status,
            "phase": job.phase.value,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at and job.started_at.isoformat(), "tags": dict(job.tags),
        },
        "policies": [policy_json(p) for p in e.policies],
        "guards": [check_json(c) for c in e.checks],
        "per_sweep": {
            "max_cancels_per_sweep": g.max_cancels_per_sweep,
            "max_match_fraction": g.max_match_fraction,
            "fraction_guard_floor": g.fraction_guard_floor,
        },
        "dry_run": g.dry_run,
        "decision": decision_json(e.decision),
        "unlisted": e.unlisted,
        "limit_hits": [{"limit": str(h.limit), "policy": h.policy, "maximum": h.maximum}
                       for h in e.limit_hits],
    }  # fmt: skip


def policy_json(p: PolicyExplanation) -> dict[str, Any]:
    policy, match = p.policy, p.match
    return {
        "policy": policy.name, "policy_file": policy.source.file, "matches": p.matches,
        "dry_run": policy.dry_run, "max_cancels": policy.max_cancels,
        "clauses": [
            {"clause": c.name, "holds": c.holds, "summary": c.summary,
             "checks": [check_json(check) for check in c.checks]}
            for c in p.clauses
        ],
        "facts": [f.text for f in match.facts] if match else [],
    }  # fmt: skip


def check_json(c: Check) -> dict[str, Any]:
    return {"clause": c.clause, "observed": c.observed, "needed": c.needed, "holds": c.holds}


def decision_json(d: Decision[Match] | None) -> dict[str, Any]:
    if d is None:
        return {"action": "none", "policy": None, "cause": None, "dry_run": None,
                "reason": None, "also_matched": [], "due": None}  # fmt: skip
    return {
        "action": str(d.action), "policy": d.policy.name, "cause": d.cause and str(d.cause),
        "dry_run": d.dry_run, "reason": d.reason, "also_matched": list(d.also_matched),
        "due": d.due and d.due.isoformat(),
    }  # fmt: skip

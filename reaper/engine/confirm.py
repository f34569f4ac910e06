"""Confirmation of cancels (docs/audit.md, "Confirmation"): a `cancelled` outcome means the
backend accepted the call, not that the job ended. Tapis and Sutro finish a cancel later, and an
AWS Batch job cancelled in RUNNABLE stays RUNNABLE until it reaches the head of its queue. So at
every later sweep reaper reads each job it cancelled and has not yet seen end:

- ended (or gone): a `confirmed` record with the final status and the seconds from the cancel
  to the sweep that saw it ended (an upper bound: reaper looks once per sweep);
- still active after `limits.confirm_within`: a `stuck` record, a WARNING, a metric, and one
  more cancel call, announced and recorded like any other (`intent`/`result`, with
  `after_stuck: true`); the job is then only confirmed, never stuck again.

Runs at the start of a sweep, after `sweep_start`, for the sweep's backends only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reaper.audit.reader import Awaiting, Record, awaiting_confirmation, parse_record_time
from reaper.audit.reconcile import CARRIED, job_stub
from reaper.backends.base import Backend
from reaper.errors import BackendError
from reaper.jobs import Job, has_ended

log = logging.getLogger(__name__)

# How far back the follow-up reads the log: far enough to see a cancel become due for `stuck`
# even when reaper was down for as long again, and at least an hour (a short confirm_within
# must not make a cancel from the last sweep but one invisible).
LOOKBACK_FACTOR = 2
MIN_LOOKBACK = timedelta(hours=1)

Write = Callable[[str, dict[str, Any]], bool]  # event, fields → written (False: audit broken)


@dataclass(frozen=True)
class FollowUp:
    """What one sweep's follow-up needs: its backends, the time, the limit, the dry-run and
    pause state (no extra cancel call then), and how to write a record."""

    backends: dict[str, Backend]
    now: datetime
    confirm_within: timedelta
    may_cancel: bool
    write: Write


def lookback(confirm_within: timedelta) -> timedelta:
    return max(MIN_LOOKBACK, LOOKBACK_FACTOR * confirm_within)


def follow_up(step: FollowUp, records: list[Record]) -> dict[str, dict[str, int]]:
    """Confirm or flag every cancel of the step's backends still awaiting confirmation; returns
    backend → {"confirmed": n, "stuck": n}. Never raises for a backend failure."""
    counts: dict[str, dict[str, int]] = {}
    for awaiting in awaiting_confirmation(records):
        backend = step.backends.get(str(awaiting.result.get("backend")))
        if backend is None:
            continue
        outcome = _follow_one(step, backend, awaiting)
        if outcome is not None:
            tally = counts.setdefault(backend.name, {"confirmed": 0, "stuck": 0})
            tally[outcome] += 1
    return counts


def _follow_one(step: FollowUp, backend: Backend, awaiting: Awaiting) -> str | None:
    result = awaiting.result
    cancelled_at = parse_record_time(result)
    if cancelled_at is None:
        return None
    try:
        fresh = backend.refresh(job_stub(backend, result))
    except BackendError as exc:
        log.warning("cannot confirm the cancel of %s/%s yet: %s", backend.name,
                    result.get("job_id"), exc)  # fmt: skip
        return None
    seconds = int((step.now - cancelled_at).total_seconds())
    fields = {key: result.get(key) for key in CARRIED if key != "sweep_id"}
    if fresh is None or has_ended(fresh):
        status = None if fresh is None else fresh.status
        step.write("confirmed", fields | {"status": status, "seconds_to_terminal": seconds})
        return "confirmed"
    if awaiting.stuck or step.now - cancelled_at < step.confirm_within:
        return None
    _report_stuck(step, backend, fresh, fields, seconds)
    return "stuck"


def _report_stuck(
    step: FollowUp, backend: Backend, fresh: Job, fields: dict[str, Any], seconds: int
) -> None:
    log.warning("cancel of %s/%s has not ended the job after %ds (status %s); cancelling once "
                "more", backend.name, fresh.id, seconds, fresh.status)  # fmt: skip
    announced = fields | {"status": fresh.status, "after_stuck": True}
    if not step.write("stuck", fields | {"status": fresh.status, "seconds_since_cancel": seconds}):
        return
    if not step.may_cancel:
        log.warning("not cancelling %s/%s again: dry run or paused", backend.name, fresh.id)
        return
    if not step.write("intent", announced):
        return
    outcome = backend.cancel(fresh, str(fields.get("reason") or "cancelled by reaper"))
    step.write("result", announced | {"outcome": str(outcome.outcome), "error": outcome.error})

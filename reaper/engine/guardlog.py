"""Loud guards: the log lines a sweep writes about what its guards refused or held back, and its
one summary line per backend (docs/commands.md, "What a sweep logs").

A guard that acts silently looks exactly like a policy that matched nothing: every refusal,
every cap reached and the pause file in effect get a WARNING naming the policy, the backend and
the numbers, so that an operator reading the journal sees why nothing was cancelled."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from reaper.engine.decide import M, Plan
from reaper.jobs import SkipCause

log = logging.getLogger(__name__)


class SweepStats(Protocol):
    """What the summary line and the metrics (reaper.service.metrics) need from one backend's
    part of one sweep; reaper.engine.sweep.BackendReport satisfies it.

    `active` is the number of active jobs listed (jobs seen), `matched` maps policy → jobs it
    matched, `outcomes` maps a cancel outcome (`cancelled`, `dry_run`, `failed`, …) → count,
    `skipped` maps a skip cause → count, `error` is set when the backend failed (listing, auth,
    network)."""

    @property
    def backend(self) -> str: ...
    @property
    def active(self) -> int: ...
    @property
    def matched(self) -> Mapping[str, int]: ...
    @property
    def outcomes(self) -> Mapping[str, int]: ...
    @property
    def skipped(self) -> Mapping[str, int]: ...
    @property
    def error(self) -> str | None: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def followups(self) -> Mapping[str, int]: ...  # earlier cancels `confirmed` / `stuck`


def log_guards(plan: Plan[M], pause_file: Path | None, paused: bool) -> None:
    """One WARNING per fraction-guard refusal and per cap reached, and one for the pause file."""
    for refusal in plan.fraction_refusals:
        key = (refusal.policy, refusal.backend)
        skips = plan.skips(SkipCause.FRACTION_GUARD)
        held = sum(1 for d in skips if (d.policy.name, d.job.backend) == key)
        log.warning("fraction guard refused policy %s: %s; %d job(s) not cancelled",
                    refusal.policy, refusal.describe(), held)  # fmt: skip
    for hit in plan.limit_hits:
        log.warning("%s reached: %d job(s) held back until a later sweep", hit.describe(),
                    hit.skipped)  # fmt: skip
    if paused:
        held = len(plan.skips(SkipCause.PAUSED))
        log.warning("paused: the pause file %s exists; nothing is cancelled, %d cancel(s) held "
                    "back", pause_file, held)  # fmt: skip


def summary_line(sweep_id: str, counts: SweepStats) -> str:
    """`sweep S batch: 9 active, 6 matched, 0 cancelled, skipped 6 (fraction_guard 5, limit 1),
    0 errors, 0.4 s`; other outcomes (dry_run, already_terminal, ...) where there are some."""
    outcomes = dict(counts.outcomes)
    parts = [f"{counts.active} active", f"{sum(counts.matched.values())} matched",
             f"{outcomes.pop('cancelled', 0)} cancelled"]  # fmt: skip
    parts += [f"{n} {name}" for name, n in sorted(outcomes.items()) if n and name != "failed"]
    skipped = {cause: n for cause, n in sorted(counts.skipped.items()) if n}
    detail = ", ".join(f"{cause} {n}" for cause, n in skipped.items())
    parts.append(f"skipped {sum(skipped.values())}" + (f" ({detail})" if detail else ""))
    errors = outcomes.get("failed", 0) + (counts.error is not None)
    parts.append(f"{errors} error" if errors == 1 else f"{errors} errors")
    parts.append(f"{counts.duration_s:.1f} s")
    return f"sweep {sweep_id} {counts.backend}: " + ", ".join(parts)


def log_summary(sweep_id: str, counts: SweepStats) -> None:
    """The one INFO line per sweep and backend."""
    log.info("%s", summary_line(sweep_id, counts))

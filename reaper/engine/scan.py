"""Step 2 of the sweep for one backend: list active jobs page by page, enrich only the jobs a
tag/where selector (or the protect tag) needs, and evaluate the backend's policies.

Only candidates (jobs some policy matched) are kept; the rest are counted and dropped, so a
sweep's memory grows with the matches, not with the size of the cluster."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from reaper.backends.base import Backend
from reaper.engine.decide import Candidate, Listing
from reaper.errors import BackendError
from reaper.jobs import Job, Phase
from reaper.policy.index import PolicyIndex
from reaper.policy.model import Match, Policy
from reaper.policy.reasons import render_reason

log = logging.getLogger(__name__)


@dataclass
class Scan:
    """What one backend's listing produced. `complete` is False when the listing failed part-way:
    acting on half a picture would break the fraction guard and the dedupe, so nothing may be
    cancelled on this backend (decide's `listing_incomplete`)."""

    backend: str
    active: int = 0  # pending or running jobs listed: the fraction guard's denominator
    unknown_status: int = 0
    candidates: list[Candidate[Match]] = field(default_factory=list)
    complete: bool = True
    error: str | None = None

    def to_listing(self) -> Listing[Match]:
        return Listing(self.backend, self.active, self.complete, tuple(self.candidates))


# Told after each page of a listing: (backend, pages so far, jobs so far). For a person
# watching a long listing (reaper.commands.progress); it must not raise.
Progress = Callable[[str, int, int], None]


def scan_backend(
    backend: Backend, policies: Sequence[Policy], now: datetime, progress: Progress | None = None
) -> Scan:
    """List, enrich where needed and evaluate. Never raises BackendError: a failure is recorded
    in the Scan (`complete=False`, `error`)."""
    scan = Scan(backend.name)
    index = PolicyIndex(policies, now)
    undetailed: list[Job] = []
    pages = listed = 0
    try:
        for page in backend.list_active():
            for job in page:
                _consider(job, index, scan, undetailed)
            pages, listed = pages + 1, listed + len(page)
            if progress is not None:
                progress(backend.name, pages, listed)
        _evaluate_enriched(backend, index, undetailed, scan)
    except BackendError as exc:
        scan.complete, scan.error = False, str(exc)
    return scan


def _consider(job: Job, index: PolicyIndex, scan: Scan, undetailed: list[Job]) -> None:
    if job.phase is Phase.UNKNOWN:
        scan.unknown_status += 1
        log.warning("skipping job %s on %s: unknown status %r", job.id, job.backend, job.status)
        return
    if job.phase is Phase.TERMINAL:
        return
    scan.active += 1
    if job.detailed:
        _add_candidate(job, index, scan)
    elif index.may_match(job):
        # Enrich before deciding: a detail selector may match, and a cheap match still needs
        # the job's tags to honour the protect tag. (`prefilter` of a policy that needs no
        # detail is its `evaluate`: tests/test_policy_property.py.)
        undetailed.append(job)


def _evaluate_enriched(backend: Backend, index: PolicyIndex, jobs: list[Job], scan: Scan) -> None:
    if not jobs:
        return
    for job in backend.enrich(jobs):
        if job.phase in (Phase.PENDING, Phase.RUNNING):
            _add_candidate(job, index, scan)


def _add_candidate(job: Job, index: PolicyIndex, scan: Scan) -> None:
    if matches := index.evaluate_all(job):
        reason = render_reason(matches[0], index.now)
        scan.candidates.append(Candidate(job, tuple(matches), reason))

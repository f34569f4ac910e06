"""One job explained (`reaper explain`, docs/commands.md): every policy of its backend, clause by
clause (reaper.policy.explain); the guards a sweep applies to a single job; and the decision a
sweep would take now, made by the sweep's own decision step (reaper.engine.decide) on a listing
of that one job.

Pure: the job, the policies, the guards, the pause state and the recent cancels come in (the
command reads them, read-only); plain data comes out. The per-job guards are shown as checks
built by a list of rules (`GUARD_CHECKS`, in the decision step's order) that a new guard appends
to, as a new policy condition appends to `reaper.policy.explain.CLAUSES`.

The fraction guard and the limits count over a whole listing, so they are reported as the
policy's and the config's settings, not decided here: only a limit of 0 decides a single job on
its own, and `decide` applies it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from reaper.engine.decide import (
    RECANCEL_WINDOW,
    Candidate,
    Decision,
    Guards,
    JobKey,
    LimitHit,
    Listing,
    OpenWarning,
    decide,
)
from reaper.engine.notices import format_due
from reaper.jobs import KEEP_UNTIL_TAG, Job, kept_until
from reaper.policy.durations import format_duration
from reaper.policy.explain import PolicyExplanation, explain_policy
from reaper.policy.model import Match, Policy
from reaper.policy.reasons import render_reason
from reaper.policy.selectors import Check


@dataclass(frozen=True)
class SweepState:
    """What a sweep knows besides the job: the config's guards, whether the pause file exists,
    the jobs the audit log shows cancelled within the re-cancel window, and why the audit log
    could not be read (then, as in `plan`, none count); `unlisted` says why a sweep never sees
    the job (AWS Batch `queues:`), if it never does."""

    guards: Guards
    paused: bool
    recent: Collection[JobKey]
    audit_error: str | None = None
    unlisted: str | None = None  # why the backend's listing never yields the job, if it never does
    # The open warnings of the audit log (docs/policies.md, "Grace, notices and windows").
    warnings: Mapping[JobKey, OpenWarning] = field(default_factory=dict)


# A per-job guard as a check: `holds` when it lets a sweep cancel the job.
GuardRule = Callable[[Job, SweepState], Check]


def listing_check(job: Job, state: SweepState) -> Check:
    """A sweep acts only on the jobs its backend's listing yields."""
    observed = "listed" if state.unlisted is None else f"not listed: {state.unlisted}"
    return Check("listing", observed, "listed by the backend", state.unlisted is None)


def protect_check(job: Job, state: SweepState) -> Check:
    """The protect tag: its key on the job, whatever the value, means never cancelled."""
    tag = state.guards.protect_tag
    value = job.tags.get(tag)
    observed = "absent" if value is None else f"{tag}={value or chr(34) * 2}"
    return Check("protect_tag", observed, f"no {tag} tag", value is None)


def recancel_check(job: Job, state: SweepState) -> Check:
    """The re-cancel window, from the audit log's tail."""
    window = format_duration(RECANCEL_WINDOW)
    held = (job.backend, job.id) in state.recent
    if state.audit_error is not None:
        observed = f"unknown: cannot read the audit log ({state.audit_error})"
    elif held:
        observed = f"cancelled by reaper within the last {window}"
    else:
        observed = f"no cancel in the last {window}"
    return Check("recancel_window", observed, f"no cancel in the last {window}", not held)


def pause_check(job: Job, state: SweepState) -> Check:
    """The pause file holds every cancel back."""
    return Check("pause_file", "exists" if state.paused else "absent", "absent", not state.paused)


# In the decision step's order (reaper.engine.decide); a new per-job guard appends its rule.
GUARD_CHECKS: tuple[GuardRule, ...] = (listing_check, protect_check, recancel_check, pause_check)


@dataclass(frozen=True)
class JobExplanation:
    """What `reaper explain` shows. `checks` are the per-job guards (protect tag, re-cancel
    window, pause file); `decision` is None when no policy matches or a sweep never lists the
    job (`unlisted` says why)."""

    job: Job
    now: datetime
    policies: tuple[PolicyExplanation, ...]
    guards: Guards
    checks: tuple[Check, ...]
    decision: Decision[Match] | None
    limit_hits: tuple[LimitHit, ...]
    unlisted: str | None = None


def explain_job(
    job: Job,
    policies: Sequence[Policy],
    state: SweepState,
    now: datetime,
    guard_rules: Sequence[GuardRule] = GUARD_CHECKS,
) -> JobExplanation:
    """Explain `job` under `policies` (those of its backend, in order) at `now` (aware). Pure."""
    explained = tuple(explain_policy(policy, job, now) for policy in policies)
    matches = tuple(e.match for e in explained if e.match is not None)
    decision, hits = _decide_one(job, matches, state, now)
    warning = state.warnings.get((job.backend, job.id))
    checks = (
        *(rule(job, state) for rule in guard_rules),
        *keep_until_checks(job, now),  # these two need the time, the guard rules do not
        *ladder_checks(decision, warning, now),
    )
    return JobExplanation(job, now, explained, state.guards, checks, decision, hits, state.unlisted)


def _decide_one(
    job: Job, matches: tuple[Match, ...], state: SweepState, now: datetime
) -> tuple[Decision[Match] | None, tuple[LimitHit, ...]]:
    """The sweep's decision step on a listing of this one job. The fraction guard is left out:
    its denominator is the backend's whole listing, which one job cannot stand for."""
    if not matches or state.unlisted is not None:
        return None, ()
    candidate = Candidate(job, matches, render_reason(matches[0], now))
    listing = Listing(job.backend, 1, True, (candidate,))
    single = replace(state.guards, max_match_fraction=None)
    warning = state.warnings.get((job.backend, job.id))
    plan = decide([listing], single, paused=state.paused, recently_cancelled=state.recent,
                  now=now, warnings={} if warning is None else {warning.key: warning})  # fmt: skip
    return plan.decisions[0], plan.limit_hits


def keep_until_checks(job: Job, now: datetime) -> tuple[Check, ...]:
    """An owner's `reaper:keep-until`: protected while its time is ahead (or unreadable)."""
    if KEEP_UNTIL_TAG not in job.tags:
        return ()
    held = kept_until(job.tags, now)
    observed = f"{KEEP_UNTIL_TAG}={job.tags[KEEP_UNTIL_TAG]}"
    return (Check("keep_until", observed, "no keep-until ahead of now", not held),)


def ladder_checks(
    decision: Decision[Match] | None, warning: OpenWarning | None, now: datetime
) -> tuple[Check, ...]:
    """The deciding policy's grace period, required notice and window (docs/policies.md,
    "Grace, notices and windows"), as the open warning in the audit log shows them."""
    if decision is None:
        return ()
    policy = decision.match.policy
    ours = warning if warning is not None and warning.policy == policy.name else None
    checks = [*_grace_checks(decision, ours, now)]
    if policy.window is not None:
        inside = policy.window.contains(now)
        opens = format_due(policy.window.next_opening(now))
        observed = "open now" if inside else f"closed; opens {opens}"
        checks.append(Check("window", observed, policy.window.text, inside))
    return tuple(checks)


def _grace_checks(
    decision: Decision[Match], ours: OpenWarning | None, now: datetime
) -> list[Check]:
    policy, checks = decision.match.policy, []
    if policy.warns_first:
        grace = format_duration(policy.grace) if policy.grace else "0s"
        if ours is None:
            observed = f"not warned yet: a sweep now warns, due {format_due(decision.due)}"
        else:
            observed = f"warned, due {format_due(ours.due)}" + (" (dry run)" * ours.dry_run)
        held = ours is None or now < ours.due
        checks.append(Check("grace", observed, f"warned {grace} before, due by now", not held))
    if policy.require_notice:
        delivered = ours is not None and ours.delivered
        observed = "a warned notice was delivered" if delivered else "no warned notice delivered"
        checks.append(Check("require_notice", observed, "a delivered warned notice", delivered))
    return checks

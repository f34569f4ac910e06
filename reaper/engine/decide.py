"""The decision step of a sweep (docs/architecture.md, sweep step 3): candidates in, decisions out.

Pure: plain data in, plain data out; no I/O, no clock, no logging. `decide()` applies the rules
below, in this order, each in one small function whose
docstring says why it exists:

1. `skip_protected`            a job carrying the protect tag is never cancelled
2. `dedupe_candidates`         a job is decided once, by the first policy in (file, position) order
   `skip_incomplete_listings`  no cancels on a backend whose listing failed part-way
3. `find_fraction_refusals`    a policy matching too much of a backend is refused there, whole
4. `skip_recently_cancelled`   no re-cancel of a job still winding down
5. `apply_ladder`              warn first, cancel at `due`, inside the window, after the notice
6. `apply_limits`              per-policy `max_cancels`, then `max_cancels_per_sweep`
7. `hold_while_paused`         the pause file turns every would-be cancel or warning into a skip
8. `propose`                   dry run (global or per policy) is a flag on a cancel, nothing more
   `find_cleared`              an open warning whose job no longer matches is cleared

The step takes small Protocols instead of `reaper.policy.model` types so that it needs nothing
of the policy language and is testable with plain dataclasses; it is generic over the match type, so
the sweep gets its own `Match` objects back, fully typed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Generic, Protocol, TypeVar

from reaper.jobs import Job, SkipCause, kept_until

JobKey = tuple[str, str]  # (backend name, job id): job ids are unique only within a backend

# docs/architecture.md, sweep step 3: "no re-cancel within 10 minutes".
RECANCEL_WINDOW = timedelta(minutes=10)

# The fraction guard never refuses a policy that matches this many jobs or fewer on a backend.
# Why: on a tiny backend any match is a large fraction. With `max_match_fraction: 0.5` and a
# backend running 2 jobs that are both past a 12h runtime cap, an operator expects both to be
# cancelled, not a refusal every sweep until someone submits more work. A floor bounds what a
# wrong policy can do on a small backend to this many jobs per sweep (and `max_cancels_per_sweep`
# still applies); c7n's resource limit likewise pairs a percentage with an absolute count
# (c7n/query.py, `check_resource_limit`, `max-resources` and `max-resources-percent`).
DEFAULT_FRACTION_GUARD_FLOOR = 3


class Action(StrEnum):
    CANCEL = "cancel"
    SKIP = "skip"
    WARN = "warn"  # the first sight of a job under a policy with a grace period: warn, wait


class Limit(StrEnum):
    MAX_CANCELS = "max_cancels"  # per policy, per sweep, over all backends
    MAX_CANCELS_PER_SWEEP = "max_cancels_per_sweep"  # over all policies and backends


class WindowLike(Protocol):
    """What the decision step needs of a time window (`reaper.policy.windows.Window`)."""

    def contains(self, now: datetime) -> bool: ...
    def next_opening(self, at: datetime) -> datetime: ...


class PolicyLike(Protocol):
    """What the decision step needs of a policy (`reaper.policy.model.Policy` satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def max_cancels(self) -> int | None: ...
    @property
    def order(self) -> tuple[str, int]: ...  # (policy file path, position in the file)
    @property
    def grace(self) -> timedelta | None: ...
    @property
    def require_notice(self) -> bool: ...
    @property
    def window(self) -> WindowLike | None: ...


class MatchLike(Protocol):
    """What the decision step needs of a match (`reaper.policy.model.Match` satisfies it)."""

    @property
    def policy(self) -> PolicyLike: ...


M = TypeVar("M", bound=MatchLike)


@dataclass(frozen=True, slots=True)
class Candidate(Generic[M]):
    """One job and every policy that matched it, in (file, position) order; `reason` is the
    rendered reason of the first match. Raises ValueError if `matches` is empty or unordered."""

    job: Job
    matches: tuple[M, ...]
    reason: str

    def __post_init__(self) -> None:
        if not self.matches:
            raise ValueError(f"candidate {self.job.id} has no match")
        orders = [m.policy.order for m in self.matches]
        if any(a >= b for a, b in pairwise(orders)):
            raise ValueError(f"matches of {self.job.id} are not in strict policy order")

    @property
    def key(self) -> JobKey:
        return (self.job.backend, self.job.id)

    @property
    def policy(self) -> PolicyLike:
        return self.matches[0].policy


@dataclass(frozen=True, slots=True)
class Listing(Generic[M]):
    """What one backend's listing produced in this sweep. `active_count` counts every active job
    listed (matched or not) and is the fraction guard's denominator; `complete` is False when the
    listing failed part-way. Raises ValueError if a candidate belongs to another backend."""

    backend: str
    active_count: int
    complete: bool
    candidates: tuple[Candidate[M], ...] = ()
    # Why an incomplete listing's jobs are skipped: the listing failed, or the backend's clock
    # cannot be trusted (CLOCK_SKEW).
    blocked_by: SkipCause = SkipCause.LISTING_INCOMPLETE

    def __post_init__(self) -> None:
        if self.active_count < 0:
            raise ValueError(f"negative active_count for backend {self.backend}")
        strays = [c.job.id for c in self.candidates if c.job.backend != self.backend]
        if strays:
            raise ValueError(f"jobs {strays} do not belong to backend {self.backend}")


@dataclass(frozen=True, slots=True)
class Guards:
    """The safety settings of `reaper.yaml`. The defaults are the safe side (dry run on, the
    example limits of docs/config.md); the config loader should pass every value explicitly."""

    protect_tag: str = "reaper:keep"
    max_cancels_per_sweep: int | None = 100
    max_match_fraction: float | None = 0.5
    fraction_guard_floor: int = DEFAULT_FRACTION_GUARD_FLOOR
    dry_run: bool = True


@dataclass(frozen=True, slots=True)
class Decision(Generic[M]):
    """What happens to one job. `cause` is set exactly when `action` is SKIP. `dry_run` is the
    effective flag (global or per policy): the sweep replaces only the cancel call with it."""

    job: Job
    policy: PolicyLike
    match: M
    reason: str
    action: Action
    cause: SkipCause | None
    also_matched: tuple[str, ...]
    dry_run: bool
    due: datetime | None = None  # when the job's warning falls due (WARN, or a held cancel)

    @property
    def key(self) -> JobKey:
        return (self.job.backend, self.job.id)


@dataclass(frozen=True, slots=True)
class OpenWarning:
    """A `warned` record no `cleared` or cancel has closed (read from the audit log by the
    sweep). `delivered`: a `warned` notice naming the job reached a notifier."""

    backend: str
    job_id: str
    policy: str
    due: datetime
    dry_run: bool = False
    delivered: bool = False
    job_name: str = ""
    owner: str = ""  # for routing the `cleared` notice to who heard the warning

    @property
    def key(self) -> JobKey:
        return (self.backend, self.job_id)


class ClearCause(StrEnum):
    NO_LONGER_MATCHES = "no_longer_matches"  # finished, changed, or its policy is gone
    PROTECTED = "protected"  # the owner tagged it since


@dataclass(frozen=True, slots=True)
class Clearance:
    """An open warning this sweep closes: its job is listed no more as matching."""

    warning: OpenWarning
    cause: ClearCause


@dataclass(frozen=True, slots=True)
class FractionRefusal:
    """The fraction guard refused `policy` on `backend`: it matched `matched` of `active` jobs,
    more than `max_fraction` of them."""

    policy: str
    backend: str
    matched: int
    active: int
    max_fraction: float

    def describe(self) -> str:
        """`matches 6 of 9 active on batch, limit 50%`."""
        return (f"matches {self.matched} of {self.active} active on {self.backend}, "
                f"limit {self.max_fraction:.0%}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class LimitHit:
    """`skipped` would-be cancels went over `limit` (= `maximum`); `policy` is None for the
    sweep-wide limit."""

    limit: Limit
    policy: str | None
    maximum: int
    skipped: int

    def describe(self) -> str:
        """`max_cancels 2 of policy gpu-cap` or `max_cancels_per_sweep 100`."""
        scope = f" of policy {self.policy}" if self.policy else ""
        return f"{self.limit} {self.maximum}{scope}"


@dataclass(frozen=True, slots=True)
class Plan(Generic[M]):
    """The outcome of one decision step. `decisions` holds one entry per distinct job, ordered
    by (policy order, oldest job first): the order the sweep acts in."""

    decisions: tuple[Decision[M], ...]
    fraction_refusals: tuple[FractionRefusal, ...] = ()
    limit_hits: tuple[LimitHit, ...] = ()
    cleared: tuple[Clearance, ...] = ()

    @property
    def refused(self) -> bool:
        """True when a safety guard refused to act (the caller exits 3, docs/commands.md)."""
        return bool(self.fraction_refusals or self.limit_hits)

    def cancels(self) -> list[Decision[M]]:
        return [d for d in self.decisions if d.action is Action.CANCEL]

    def warnings(self) -> list[Decision[M]]:
        return [d for d in self.decisions if d.action is Action.WARN]

    def skips(self, cause: SkipCause) -> list[Decision[M]]:
        return [d for d in self.decisions if d.cause is cause]


def decide(
    listings: Sequence[Listing[M]],
    guards: Guards,
    *,
    paused: bool = False,
    recently_cancelled: Collection[JobKey] = frozenset(),
    now: datetime | None = None,
    warnings: Mapping[JobKey, OpenWarning] | None = None,
) -> Plan[M]:
    """Decide every candidate of one sweep. Guarantees: each distinct (backend, job id) appears
    exactly once; no protected, recently cancelled or incompletely listed job is a cancel; no
    cancel while paused; no cancel by a policy with a grace period before its warning is due,
    nor outside its window; the cancels respect every limit; same input, same output.
    `now` is needed as soon as a policy warns first or has a window (and for `reaper:keep-until`).
    Raises ValueError if two listings name the same backend."""
    backends = [listing.backend for listing in listings]
    if len(set(backends)) != len(backends):
        raise ValueError(f"duplicate backend listings: {sorted(backends)}")
    candidates = dedupe_candidates(c for listing in listings for c in listing.candidates)
    refusals = find_fraction_refusals(candidates, listings, guards)
    decisions = sorted((propose(c, guards) for c in candidates), key=decision_order)
    decisions = skip_protected(decisions, guards.protect_tag, now)
    decisions = skip_incomplete_listings(
        decisions, {lst.backend: lst.blocked_by for lst in listings if not lst.complete}
    )
    decisions = skip_refused(decisions, refusals)
    decisions = skip_recently_cancelled(decisions, recently_cancelled)
    decisions = apply_ladder(decisions, warnings or {}, now)
    decisions, hits = apply_limits(decisions, guards.max_cancels_per_sweep)
    decisions = hold_while_paused(decisions, paused)
    cleared = find_cleared(warnings or {}, decisions, listings)
    return Plan(tuple(decisions), tuple(refusals), tuple(hits), tuple(cleared))


def select_recent_cancels(
    cancelled_at: Mapping[JobKey, datetime], now: datetime, window: timedelta = RECANCEL_WINDOW
) -> frozenset[JobKey]:
    """The jobs cancelled less than `window` before `now`: the `recently_cancelled` input."""
    return frozenset(key for key, at in cancelled_at.items() if now - at < window)


def decision_order(d: Decision[M]) -> tuple[tuple[str, int], str, datetime, str, str]:
    """Policy (file, position) order, then oldest job first, then backend and id for ties.

    Oldest first because limits cut from the end of this order: the job that has waited or run
    the longest is the furthest past its cap and has cost the most, and a job skipped by a limit
    is always younger than every job cancelled before it, so a backlog drains over the next
    sweeps in age order and no job is starved by newer arrivals."""
    return (d.policy.order, d.policy.name, d.job.created_at, d.job.backend, d.job.id)


def propose(candidate: Candidate[M], guards: Guards) -> Decision[M]:
    """The provisional decision for a candidate: cancel, by its first policy (rule 2).

    Rule 7, dry run: the decision stays `cancel`, flagged `dry_run`, when the config or the policy
    says so. Dry run is one branch in one place — the sweep swaps only the cancel call — so dry-run
    cancels pass through every guard below and count against the limits: a plan shows exactly what a
    real run would do."""
    first, *others = candidate.matches
    return Decision(
        job=candidate.job,
        policy=first.policy,
        match=first,
        reason=candidate.reason,
        action=Action.CANCEL,
        cause=None,
        also_matched=tuple(m.policy.name for m in others),
        dry_run=guards.dry_run or first.policy.dry_run,
    )


def dedupe_candidates(candidates: Iterable[Candidate[M]]) -> list[Candidate[M]]:
    """Rule 2: one candidate per (backend, job id), in first-seen order.

    A job matched by several policies is cancelled once, by the first policy in (file, position)
    order, and the others are recorded as `also_matched` (docs/policies.md): two cancels of one
    job would double-count limits and write two conflicting reasons. A job can also be listed
    twice in one sweep (AWS lists per status, and a job can move from RUNNABLE to RUNNING between
    two calls); its entries are merged, keeping the one whose first policy comes first, so its
    reason still belongs to the policy that decides it."""
    merged: dict[JobKey, Candidate[M]] = {}
    for candidate in candidates:
        kept = merged.get(candidate.key)
        merged[candidate.key] = candidate if kept is None else _merge(kept, candidate)
    return list(merged.values())


def _merge(kept: Candidate[M], new: Candidate[M]) -> Candidate[M]:
    winner, other = (new, kept) if new.policy.order < kept.policy.order else (kept, new)
    names = {m.policy.name for m in winner.matches}
    extra = [m for m in other.matches if m.policy.name not in names]
    matches = tuple(sorted((*winner.matches, *extra), key=lambda m: m.policy.order))
    return replace(winner, matches=matches)


def _skip_where(
    decisions: list[Decision[M]], cause: SkipCause, predicate: Callable[[Decision[M]], bool]
) -> list[Decision[M]]:
    """Turn every still-cancel decision that satisfies `predicate` into a skip for `cause`;
    an earlier rule's cause is never overwritten."""
    return [
        replace(d, action=Action.SKIP, cause=cause)
        if d.action is Action.CANCEL and predicate(d)
        else d
        for d in decisions
    ]


def skip_protected(
    decisions: list[Decision[M]], protect_tag: str, now: datetime | None = None
) -> list[Decision[M]]:
    """Rule 1: a job carrying the protect tag — the key, whatever its value — is never cancelled,
    nor one whose `reaper:keep-until` time is still ahead (`now` given; see reaper.jobs).

    It comes first so that a protected job is always audited as `protected`, the one cause an
    owner can act on. Any value counts because an owner writing `reaper:keep=false` still
    meant to mark the job; only removing the tag lifts the protection. (Policy `exclude:` blocks
    are applied earlier, by evaluation: an excluded job is never a candidate.)"""
    return _skip_where(
        decisions, SkipCause.PROTECTED, lambda d: is_protected(d.job, protect_tag, now)
    )


def is_protected(job: Job, protect_tag: str, now: datetime | None) -> bool:
    """The protect tag, or (with `now`) a `reaper:keep-until` still in force."""
    return protect_tag in job.tags or (now is not None and kept_until(job.tags, now))


def skip_incomplete_listings(
    decisions: list[Decision[M]], incomplete: Collection[str] | Mapping[str, SkipCause]
) -> list[Decision[M]]:
    """No cancels on a backend whose listing failed part-way (docs/architecture.md): acting on half
    a picture breaks the fraction guard (the denominator is short) and the dedupe (a job's other
    listing may be on a page never read). The backend is retried next sweep. `incomplete` maps a
    backend to its cause (default LISTING_INCOMPLETE; CLOCK_SKEW for a clock not trusted)."""
    causes = (
        dict(incomplete)
        if isinstance(incomplete, Mapping)
        else dict.fromkeys(incomplete, SkipCause.LISTING_INCOMPLETE)
    )
    return [
        replace(d, action=Action.SKIP, cause=causes[d.job.backend])
        if d.action is Action.CANCEL and d.job.backend in causes
        else d
        for d in decisions
    ]


def find_fraction_refusals(
    candidates: Sequence[Candidate[M]], listings: Sequence[Listing[M]], guards: Guards
) -> list[FractionRefusal]:
    """Rule 3: the (policy, backend) pairs the fraction guard refuses, in policy order.

    A policy that matches more than `max_match_fraction` of a backend's active jobs — and more than
    `fraction_guard_floor` of them, see DEFAULT_FRACTION_GUARD_FLOOR — is almost always a mistake (a
    typo in a glob, a unit slip in a duration), so the whole policy is refused on that backend:
    never a truncated subset, which would kill an arbitrary slice of a mistake. The count is every
    job the policy matched there, protected or shadowed by an earlier policy too: it measures how
    broad the policy is, which must not depend on other policies. Backends with an incomplete
    listing are not judged (their count is short)."""
    if guards.max_match_fraction is None:
        return []
    active = {lst.backend: lst.active_count for lst in listings if lst.complete}
    counts: Counter[tuple[str, str]] = Counter()
    order: dict[str, tuple[str, int]] = {}
    for candidate in candidates:
        for match in candidate.matches:
            counts[(match.policy.name, candidate.job.backend)] += 1
            order[match.policy.name] = match.policy.order
    return [
        FractionRefusal(policy, backend, matched, active[backend], guards.max_match_fraction)
        for (policy, backend), matched in sorted(
            counts.items(), key=lambda kv: (order[kv[0][0]], kv[0])
        )
        if backend in active and is_too_broad(matched, active[backend], guards)
    ]


def is_too_broad(matched: int, active: int, guards: Guards) -> bool:
    """True if `matched` of `active` jobs trips the fraction guard ("more than", strictly)."""
    if guards.max_match_fraction is None or matched <= guards.fraction_guard_floor:
        return False
    return matched > guards.max_match_fraction * active


def skip_refused(
    decisions: list[Decision[M]], refusals: Sequence[FractionRefusal]
) -> list[Decision[M]]:
    """Rule 3, applied: every decision of a refused (policy, backend) becomes a skip.

    A job the refused policy decides is not handed on to a later policy that also matched it:
    "decided once, by the first policy" stays absolute, the reason already rendered stays true,
    and a refusal is meant to stop and let a person look."""
    refused = {(r.policy, r.backend) for r in refusals}
    return _skip_where(
        decisions, SkipCause.FRACTION_GUARD, lambda d: (d.policy.name, d.job.backend) in refused
    )


def skip_recently_cancelled(
    decisions: list[Decision[M]], recent: Collection[JobKey]
) -> list[Decision[M]]:
    """Rule 4: no re-cancel of a job cancelled within RECANCEL_WINDOW. Tapis and Sutro cancel
    asynchronously and AWS takes time to terminate, so a cancelled job is often still listed
    as active next sweep; cancelling it again would double the audit trail and the API calls
    and use up the limits on jobs already dealt with."""
    return _skip_where(decisions, SkipCause.RECENTLY_CANCELLED, lambda d: d.key in recent)


def apply_limits(
    decisions: list[Decision[M]], max_per_sweep: int | None
) -> tuple[list[Decision[M]], list[LimitHit]]:
    """Rule 6: each policy's `max_cancels`, then `max_cancels_per_sweep` over all policies and
    backends; `decisions` must be in `decision_order`, and the excess is skipped `limit`.

    Limits cap the damage of a policy that is wrong in a way the fraction guard cannot see. A
    hit is a refusal (exit 3), reported per limit; the skipped jobs are the youngest, and are
    picked up by the next sweeps. A job skipped by its policy's limit does not use up the
    sweep-wide one."""
    per_policy: Counter[str] = Counter()
    hits: dict[tuple[Limit, str | None], LimitHit] = {}
    out: list[Decision[M]] = []
    for d in decisions:
        hit = _limit_reached(d.policy, per_policy, max_per_sweep)
        if d.action is not Action.CANCEL:
            out.append(d)
        elif hit is None:
            per_policy[d.policy.name] += 1
            out.append(d)
        else:
            key = (hit.limit, hit.policy)
            hits[key] = replace(hit, skipped=hits[key].skipped + 1) if key in hits else hit
            out.append(replace(d, action=Action.SKIP, cause=SkipCause.LIMIT))
    return out, list(hits.values())


def _limit_reached(
    policy: PolicyLike, per_policy: Counter[str], max_per_sweep: int | None
) -> LimitHit | None:
    """The limit one more cancel by `policy` would exceed (as a hit of one job), or None."""
    if policy.max_cancels is not None and per_policy[policy.name] >= policy.max_cancels:
        return LimitHit(Limit.MAX_CANCELS, policy.name, policy.max_cancels, 1)
    if max_per_sweep is not None and per_policy.total() >= max_per_sweep:
        return LimitHit(Limit.MAX_CANCELS_PER_SWEEP, None, max_per_sweep, 1)
    return None


def hold_while_paused(decisions: list[Decision[M]], paused: bool) -> list[Decision[M]]:
    """Rule 7: while the pause file exists every would-be cancel or warning becomes a skip
    `paused`.

    It runs after the guards so that a paused sweep still evaluates, audits and reports what a
    real one would do — including its refusals — and an operator can read the audit before
    removing the pause file. Nothing is cancelled, not even in dry run; and nobody is warned,
    because an operator pauses when a policy looks wrong, and a warning is a promise to cancel."""
    if not paused:
        return decisions
    return [
        replace(d, action=Action.SKIP, cause=SkipCause.PAUSED)
        if d.action in (Action.CANCEL, Action.WARN)
        else d
        for d in decisions
    ]


def due_time(policy: PolicyLike, now: datetime) -> datetime:
    """When a warning given at `now` falls due: after the grace, at the window's next opening."""
    due = now + (policy.grace or timedelta(0))
    return due if policy.window is None else policy.window.next_opening(due)


def apply_ladder(
    decisions: list[Decision[M]], warnings: Mapping[JobKey, OpenWarning], now: datetime | None
) -> list[Decision[M]]:
    """Rule 5: the ladder of a policy with a grace period, a required notice or a window
    (docs/policies.md, "Grace, notices and windows"). Owners adopt a reaper when they hear of a
    cancel before it happens, so such a policy's first match is a WARN (recorded `warned` with
    `due`); a later sweep at or after `due` cancels if the job still matches, inside the window,
    and — with `require_notice` — once a `warned` notice reached someone. A real cancel needs a
    real warning: one given in dry run (which sends no notice) is given again.

    It runs after the guards, so nobody is warned of a cancel a guard would refuse, and before
    the limits, which count cancels only."""
    out: list[Decision[M]] = []
    for d in decisions:
        policy = d.policy
        if d.action is not Action.CANCEL or not (
            policy.grace is not None or policy.require_notice or policy.window
        ):
            out.append(d)
            continue
        if now is None:
            raise ValueError(f"policy {policy.name} needs `now` to decide")
        out.append(_ladder_step(d, warnings.get(d.key), now))
    return out


def _ladder_step(d: Decision[M], warning: OpenWarning | None, now: datetime) -> Decision[M]:
    policy = d.policy
    warns_first = policy.grace is not None or policy.require_notice
    valid = (
        warning is not None and warning.policy == policy.name and (d.dry_run or not warning.dry_run)
    )
    if warns_first and (warning is None or not valid):
        return replace(d, action=Action.WARN, due=due_time(policy, now))
    due = warning.due if warning is not None and valid else None
    if due is not None and now < due:
        return replace(d, action=Action.SKIP, cause=SkipCause.GRACE, due=due)
    if policy.window is not None and not policy.window.contains(now):
        opening = policy.window.next_opening(now)
        return replace(d, action=Action.SKIP, cause=SkipCause.OUTSIDE_WINDOW, due=opening)
    if policy.require_notice and not d.dry_run and not (warning is not None and warning.delivered):
        return replace(d, action=Action.SKIP, cause=SkipCause.NOTICE_PENDING, due=due)
    return replace(d, due=due)


def find_cleared(
    warnings: Mapping[JobKey, OpenWarning],
    decisions: Sequence[Decision[M]],
    listings: Sequence[Listing[M]],
) -> list[Clearance]:
    """The open warnings this sweep closes, in (backend, job id) order: the job's backend was
    listed completely and the job is no longer a candidate (it finished, changed, or its
    policy is gone), or it is protected now. A job held by a guard stays warned: it still
    matches. Only complete listings clear: a job missing from half a listing may still run."""
    complete = {lst.backend for lst in listings if lst.complete}
    by_key = {d.key: d for d in decisions}
    found = []
    for key, warning in sorted(warnings.items()):
        if warning.backend not in complete:
            continue
        decision = by_key.get(key)
        if decision is None:
            found.append(Clearance(warning, ClearCause.NO_LONGER_MATCHES))
        elif decision.cause is SkipCause.PROTECTED:
            found.append(Clearance(warning, ClearCause.PROTECTED))
    return found

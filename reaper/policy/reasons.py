"""Reasons: a policy's template (reaper.policy.templates) or the generated default, rendered from
a match (docs/policies.md, "Reasons")."""

from __future__ import annotations

from datetime import datetime

from reaper.backends.base import truncate_reason
from reaper.policy.durations import format_duration
from reaper.policy.model import Match
from reaper.policy.templates import LIMITS, NOT_APPLICABLE, render_template


def reason_values(match: Match) -> dict[str, str]:
    """The flat table every placeholder (except `{tag:KEY}`) is rendered from."""
    policy, job = match.policy, match.job
    return {
        "policy": policy.name,
        "description": policy.description,
        "backend": job.backend,
        "job_id": job.id,
        "job_name": job.name,
        "queue": job.queue,
        "status": job.status,
        "owner": job.owner or "",
        "runtime": _seconds(match.runtime_s),
        "pending": _seconds(match.pending_s),
        "age": _seconds(match.age_s),
        **{key: policy.selectors.limit_text(key) or NOT_APPLICABLE for key in LIMITS},
    }


def _seconds(value: float | None) -> str:
    return NOT_APPLICABLE if value is None else format_duration(value)


def default_reason(match: Match) -> str:
    """`reaper policy NAME: fact; fact; ...` from what matched."""
    facts = "; ".join(fact.text for fact in match.facts)
    return f"reaper policy {match.policy.name}: {facts}"


def render_reason(match: Match, now: datetime) -> str:
    """The policy's template, or the generated default, cut to 1024 characters with an ellipsis
    (AWS Batch's cap). Durations come from the match, so the reason agrees with the audit's
    `runtime_s`/`pending_s`; `now` is part of the contract for placeholders that will need the
    clock (a grace period)."""
    template = match.policy.reason
    if template is None:
        return truncate_reason(default_reason(match))
    return truncate_reason(render_template(template, reason_values(match), match.job.tags))

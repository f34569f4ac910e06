"""Notices: who hears about a sweep's warnings, cancels and clearances, and what they read
(docs/config.md, "Notifiers"; docs/policies.md, "Grace, notices and windows").

Pure: the sweep hands in `NoticeItem`s (one job, one event), `route` batches them into
`Notice`s — one message per sweep, notifier (as rendered for the job's owner) and event — and
`reaper.engine.sender` delivers them off the cancel path. A notifier URL holding `{owner}` or
`{tag:KEY}` is rendered per job from the same safe table as reasons (reaper.policy.templates),
each value URL-quoted so that no job field can add a host, a recipient or a parameter; a job
without that fact goes to the notifier's `fallback:`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote

from reaper.engine.decide import Clearance
from reaper.policy.model import Match, Policy
from reaper.policy.reasons import reason_values
from reaper.policy.templates import TAG, ReasonTemplate, render_template

log = logging.getLogger(__name__)


class NoticeEvent(StrEnum):
    """What a notice is about; a policy's `notify_on` picks from these."""

    WARNED = "warned"
    CANCELLED = "cancelled"
    CLEARED = "cleared"
    REFUSED = "refused"
    FAILED = "failed"


TITLES = {
    NoticeEvent.WARNED: "reaper: {n} job(s) will be cancelled",
    NoticeEvent.CANCELLED: "reaper: {n} job(s) cancelled",
    NoticeEvent.CLEARED: "reaper: {n} warning(s) withdrawn, no cancel",
    NoticeEvent.REFUSED: "reaper: {n} cancel(s) held back by a safety guard",
    NoticeEvent.FAILED: "reaper: {n} cancel(s) failed",
}


@dataclass(frozen=True, slots=True)
class NotifierSpec:
    """A configured notifier, ready to route: its URL as a template (None: it could not be
    read, `error` says why, and its notices fail and are audited `notify_failed`)."""

    name: str
    url: ReasonTemplate | None
    error: str | None = None
    fallback: str | None = None
    timeout_s: float = 10.0
    retries: int = 2
    max_jobs: int = 20

    @property
    def personal(self) -> bool:
        """True if the URL names something of the job (`{owner}`, `{tag:KEY}`, ...)."""
        return self.url is not None and any(p.name is not None for p in self.url.pieces)


@dataclass(frozen=True, slots=True)
class NoticeItem:
    """One job's line in a notice, with what the URL may be rendered from."""

    event: NoticeEvent
    notifiers: tuple[str, ...]
    backend: str
    job_id: str
    policy: str
    line: str
    values: Mapping[str, str] = field(default_factory=dict)  # placeholder → value
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to one (rendered) notifier URL. `url` is a secret: never shown."""

    notifier: NotifierSpec
    url: str | None
    event: NoticeEvent
    jobs: tuple[tuple[str, str], ...]
    title: str
    body: str
    sweep_id: str | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """The notifiers of a config, and what a policy without `notify` / `notify_on` gets."""

    notifiers: Mapping[str, NotifierSpec]
    default_notify: tuple[str, ...] = ()
    default_on: tuple[str, ...] = ("warned", "cancelled")

    def notifiers_for(self, policy: Policy, event: NoticeEvent) -> tuple[str, ...]:
        """The notifiers that hear of `event` by `policy` (none if it did not ask for it)."""
        events = policy.notify_on if policy.notify_on is not None else self.default_on
        if event not in events:
            return ()
        return policy.notify if policy.notify is not None else self.default_notify


def format_due(due: datetime | None) -> str:
    return "-" if due is None else due.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


DEFAULT_LINES = {
    NoticeEvent.WARNED: "{backend}/{job_id} ({job_name}) will be cancelled at or after {due} "
    "by policy {policy} if it still matches: {reason}",
    NoticeEvent.CANCELLED: "{backend}/{job_id} ({job_name}) was cancelled by policy {policy}: "
    "{reason}",
    NoticeEvent.CLEARED: "{backend}/{job_id} ({job_name}) no longer matches policy {policy} "
    "({cause}): the cancel due {due} is withdrawn",
    NoticeEvent.REFUSED: "{backend}/{job_id} ({job_name}) was not cancelled by policy {policy}: "
    "{cause}",
    NoticeEvent.FAILED: "{backend}/{job_id} ({job_name}): the cancel by policy {policy} failed",
}


def match_item(
    event: NoticeEvent,
    routing: Routing,
    match: Match,
    reason: str,
    *,
    due: datetime | None = None,
    cause: str = "",
) -> NoticeItem | None:
    """The item for one decided job, or None if its policy notifies nobody of `event`."""
    policy, job = match.policy, match.job
    names = routing.notifiers_for(policy, event)
    if not names:
        return None
    values = reason_values(match) | {"event": str(event), "reason": reason, "due": format_due(due)}
    if policy.message is not None:
        line = render_template(policy.message, values, job.tags)
    else:
        line = DEFAULT_LINES[event].format_map(values | {"cause": cause})
    return NoticeItem(event, names, job.backend, job.id, policy.name, line, values, job.tags)


def cleared_item(
    routing: Routing, policy: Policy | None, clearance: Clearance
) -> NoticeItem | None:
    """The item for a withdrawn warning. The job may be gone, so only what the warning
    recorded is known: `{owner}` routes, a `{tag:KEY}` URL goes to the fallback."""
    if policy is None:  # the policy was removed since: nobody asked to hear about it
        return None
    names = routing.notifiers_for(policy, NoticeEvent.CLEARED)
    if not names:
        return None
    w = clearance.warning
    values = {
        "backend": w.backend, "job_id": w.job_id, "job_name": w.job_name or "-",
        "policy": policy.name, "due": format_due(w.due), "cause": str(clearance.cause),
        "owner": w.owner,
    }  # fmt: skip
    line = DEFAULT_LINES[NoticeEvent.CLEARED].format_map(values)
    return NoticeItem(NoticeEvent.CLEARED, names, w.backend, w.job_id, policy.name, line, values)


def render_url(spec: NotifierSpec, item: NoticeItem) -> str | None:
    """The notifier's URL for this job, or None if it names a fact the job lacks (an empty
    `{owner}`, a missing tag): the job then goes to the fallback."""
    assert spec.url is not None
    for piece in spec.url.pieces:
        if piece.name == TAG and piece.tag not in item.tags:
            return None
        if piece.name not in (None, TAG) and not item.values.get(piece.name, ""):
            return None
    values = {key: quote(value, safe="") for key, value in item.values.items()}
    tags = {key: quote(value, safe="") for key, value in item.tags.items()}
    return render_template(spec.url, _Defaulting(values), tags)


class _Defaulting(dict[str, str]):
    """Values for a URL template: a placeholder of no use for this event renders empty
    (render_url has sent such a job to the fallback already)."""

    def __missing__(self, key: str) -> str:
        return ""


def route(
    items: Iterable[NoticeItem], routing: Routing, sweep_id: str | None = None
) -> list[Notice]:
    """Batch items into notices: one per (notifier, rendered URL, event), in first-seen order,
    each listing up to the notifier's `max_jobs` lines and then "and K more". A job whose URL
    cannot be rendered goes to the fallback chain; with none left it is logged and dropped."""
    groups: dict[tuple[str, str | None, NoticeEvent], list[NoticeItem]] = {}
    for item in items:
        for name in item.notifiers:
            target = _resolve(routing, name, item)
            if target is None:
                log.warning("no notifier can reach the owner of %s/%s for %s (%s has no "
                            "fallback)", item.backend, item.job_id, item.event, name)  # fmt: skip
                continue
            groups.setdefault((target[0].name, target[1], item.event), []).append(item)
    return [
        _notice(routing.notifiers[name], url, event, batch, sweep_id)
        for (name, url, event), batch in groups.items()
    ]


def _resolve(
    routing: Routing, name: str, item: NoticeItem
) -> tuple[NotifierSpec, str | None] | None:
    seen: set[str] = set()
    current: str | None = name
    while current is not None and current not in seen:
        seen.add(current)
        spec = routing.notifiers[current]
        if spec.url is None:  # unreadable: the notice fails visibly, it does not move on
            return spec, None
        url = render_url(spec, item)
        if url is not None:
            return spec, url
        current = spec.fallback
    return None


def _notice(
    spec: NotifierSpec,
    url: str | None,
    event: NoticeEvent,
    batch: Sequence[NoticeItem],
    sweep_id: str | None,
) -> Notice:
    unique = list({(i.backend, i.job_id): i for i in batch}.values())
    shown = [f"- {item.line}" for item in unique[: spec.max_jobs]]
    if len(unique) > spec.max_jobs:
        shown.append(f"and {len(unique) - spec.max_jobs} more")
    title = TITLES[event].format(n=len(unique))
    jobs = tuple((i.backend, i.job_id) for i in unique)
    return Notice(spec, url, event, jobs, title, "\n".join(shown), sweep_id)

"""Wiring shared by `plan`, `run`, `daemon` and `demo`: config → guards, backends, sweep env."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reaper.audit.seal import load_key
from reaper.audit.writer import AuditLog
from reaper.backends import create_backend
from reaper.backends.base import Backend
from reaper.backends.notify import NotifyError, read_url
from reaper.engine.decide import guards_from
from reaper.engine.notices import NotifierSpec, Routing
from reaper.engine.scan import Progress
from reaper.engine.sender import NoticeSender
from reaper.engine.sweep import SweepEnv
from reaper.errors import BackendError
from reaper.jobs import utc_now as jobs_utc_now
from reaper.policy.config import Config, NotifierConfig
from reaper.policy.model import PolicySet
from reaper.policy.templates import ReasonTemplate, TemplateError, compile_template

log = logging.getLogger(__name__)

MAX_FLUSH_S = 300.0  # the longest a one-shot run waits for its notices before exiting


def utc_now() -> datetime:
    """The time a sweep evaluates at (reaper.jobs.utc_now). The commands look it up here when
    they run, so that a test can move it for a whole command."""
    return jobs_utc_now()


def open_audit(config: Config, clock: Callable[[], datetime] = utc_now) -> AuditLog:
    """The config's audit log, keyed with `audit_key_file` when there is one. Raises
    AuditKeyError (the key cannot be read) or AuditWriteError (the log cannot be opened)."""
    key = None if config.audit_key_file is None else load_key(config.audit_key_file)
    return AuditLog(config.audit_log, key=key, clock=clock)


def host_now() -> datetime:
    """The host's clock, which the servers' clocks (their Date headers) are compared with; kept
    apart from `utc_now`, the time a sweep evaluates at (tests move that one alone)."""
    return datetime.now(UTC)


def routing_from(config: Config, environ: Mapping[str, str]) -> Routing | None:
    """The config's notifiers with their URLs read (and registered for redaction), or None
    when it has none. A URL that cannot be read or compiled is logged by notifier name and
    leaves that notifier unusable: its notices fail and are audited, the sweep goes on."""
    if not config.notifiers:
        return None
    specs = {name: _notifier_spec(n, environ) for name, n in config.notifiers.items()}
    defaults = config.notice_defaults
    return Routing(specs, defaults.notify, defaults.notify_on)


def _notifier_spec(notifier: NotifierConfig, environ: Mapping[str, str]) -> NotifierSpec:
    try:
        url = read_url(notifier.name, notifier.source, notifier.ref, environ)
        return _spec(notifier, compile_template(url), None)
    except NotifyError as exc:
        error = str(exc)
    except TemplateError:  # its problems quote the URL: name the notifier only
        error = f"notifier {notifier.name}: its URL has a placeholder that is not allowed"
    log.error("%s", error)
    return _spec(notifier, None, error)


def _spec(notifier: NotifierConfig, url: ReasonTemplate | None, error: str | None) -> NotifierSpec:
    return NotifierSpec(
        notifier.name, url, error, fallback=notifier.fallback,
        timeout_s=notifier.timeout.total_seconds(), retries=notifier.retries,
        max_jobs=notifier.max_jobs,
    )  # fmt: skip


def flush_budget_s(routing: Routing) -> float:
    """How long a one-shot run waits for its notices after the sweep: every attempt of the
    slowest notifier, with its back-off, for a few notices; bounded."""
    slowest = max(
        (
            spec.timeout_s * (spec.retries + 1) + 5 * spec.retries
            for spec in routing.notifiers.values()
        ),
        default=0.0,
    )
    return min(MAX_FLUSH_S, 3 * slowest + 5)


@dataclass
class OpenedBackends:
    """Backends that could be built, and the errors of those that could not."""

    backends: dict[str, Backend] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()


def open_backends(config: Config, only: Iterable[str] | None = None) -> OpenedBackends:
    """Build the backends this instance sweeps (`only` those, if given; a shard narrows them
    further), importing only the SDKs of their types. A backend that cannot be built is
    reported, not fatal: the others still sweep."""
    opened = OpenedBackends()
    wanted = set(config.backends if only is None else only)
    for name, section in config.swept_backends.items():
        if name not in wanted:
            continue
        try:
            opened.backends[name] = create_backend(name, section.section, config.path.parent)
        except BackendError as exc:
            log.error("%s", exc)
            opened.errors[name] = str(exc)
    return opened


def sweep_env(
    config: Config,
    policies: PolicySet,
    backends: dict[str, Backend],
    audit: AuditLog | None,
    *,
    force_dry_run: bool = False,
    clock: Callable[[], datetime] | None = None,
    unreachable: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    deadline_s: float | None = None,
    progress: Progress | None = None,
    routing: Routing | None = None,
    sender: NoticeSender | None = None,
) -> SweepEnv:
    """The sweep's environment; `clock` defaults to the host's (`utc_now`, looked up now)."""
    return SweepEnv(
        policies=policies,
        backends=backends,
        audit=audit,
        audit_path=config.audit_log,
        guards=guards_from(config, force_dry_run=force_dry_run),
        clock=clock or utc_now,
        pause_file=config.pause_file,
        unreachable=dict(unreachable or {}),
        stop=stop,
        deadline_s=deadline_s,
        confirm_within=config.confirm_within,
        max_clock_skew=config.max_clock_skew,
        host_clock=host_now,
        progress=progress,
        routing=routing,
        sender=sender,
    )

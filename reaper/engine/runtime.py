"""Wiring shared by `plan`, `run`, `daemon` and `demo`: config → guards, backends, sweep env."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reaper.audit.writer import AuditLog
from reaper.backends import create_backend
from reaper.backends.base import Backend
from reaper.engine.decide import Guards
from reaper.engine.sweep import SweepEnv
from reaper.errors import BackendError
from reaper.policy.config import Config
from reaper.policy.model import PolicySet

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def guards_from(config: Config, *, force_dry_run: bool = False) -> Guards:
    """The config's safety settings; `--dry-run` can only make a run drier, never wetter."""
    return Guards(
        protect_tag=config.protect_tag,
        max_cancels_per_sweep=config.max_cancels_per_sweep,
        max_match_fraction=config.max_match_fraction,
        dry_run=config.dry_run or force_dry_run,
    )


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
    clock: Callable[[], datetime] = utc_now,
    unreachable: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    deadline_s: float | None = None,
) -> SweepEnv:
    return SweepEnv(
        policies=policies,
        backends=backends,
        audit=audit,
        audit_path=config.audit_log,
        guards=guards_from(config, force_dry_run=force_dry_run),
        clock=clock,
        pause_file=config.pause_file,
        unreachable=dict(unreachable or {}),
        stop=stop,
        deadline_s=deadline_s,
    )

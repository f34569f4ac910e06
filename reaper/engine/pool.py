"""The daemon's live backends: built on first use, rebuilt after a reload, closed when unused.

A backend that cannot be built (a missing token file, an unknown AWS profile) is not fatal: its
sweep reports the error and the next sweep tries again (docs/architecture.md: "reported and retried
next
sweep"). A reload bumps the generation, so every backend is rebuilt from the new config at its
next sweep — re-reading token and key files — while a sweep in flight keeps the client it
started with."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reaper.backends import create_backend
from reaper.backends.base import Backend
from reaper.errors import BackendError
from reaper.policy.config import BackendConfig, Config

log = logging.getLogger(__name__)

Opener = Callable[[str, Mapping[str, Any], Path], Backend]


@dataclass(frozen=True)
class _Entry:
    backend: Backend
    section: BackendConfig
    generation: int


class BackendPool:
    """Backend name → live backend. Thread-safe; each name is used by one sweep thread at a
    time (the scheduler runs one sweep per backend), so replacing a backend in `get` closes the
    old one at once, while a backend dropped from the config is closed only once its last sweep
    has ended (`close_retired`)."""

    def __init__(self, opener: Opener = create_backend) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._live: dict[str, _Entry] = {}
        self._retired: list[tuple[str, Backend]] = []
        self._generation = 0

    def get(self, name: str, config: Config) -> Backend:
        """The backend `name` as `config` describes it, built now if it is missing, stale or
        described differently. Raises BackendError when it cannot be built (or `name` is not
        in `config`); the stale one is closed either way."""
        section = config.backends.get(name)
        if section is None:
            raise BackendError(name, "not in the config (removed by a reload)")
        with self._lock:
            entry = self._live.get(name)
            if entry and entry.section == section and entry.generation == self._generation:
                return entry.backend
            generation = self._generation
            stale = self._live.pop(name, None)
        if stale is not None:
            close_quietly(name, stale.backend)
        backend = self._opener(name, section.section, config.path.parent)
        with self._lock:
            self._live[name] = _Entry(backend, section, generation)
        return backend

    def open_all(self, config: Config) -> dict[str, str]:
        """Build every backend this instance sweeps now (start-up); returns name → error for
        those that could not be built (each is retried at its first sweep)."""
        errors = {}
        for name in config.swept_backends:
            try:
                self.get(name, config)
            except BackendError as exc:
                log.error("%s", exc)
                errors[name] = str(exc)
        return errors

    def live(self) -> dict[str, Backend]:
        """The backends built so far (for reconciliation at start-up)."""
        with self._lock:
            return {name: entry.backend for name, entry in self._live.items()}

    def renew(self, config: Config) -> None:
        """After a reload: rebuild every backend at its next use, and retire the backends that
        `config` no longer names."""
        with self._lock:
            self._generation += 1
            for name in [n for n in self._live if n not in config.backends]:
                self._retired.append((name, self._live.pop(name).backend))

    def close_retired(self, busy: Collection[str]) -> None:
        """Close the retired backends whose name has no sweep in flight."""
        with self._lock:
            idle = [(n, b) for n, b in self._retired if n not in busy]
            self._retired = [(n, b) for n, b in self._retired if n in busy]
        for name, backend in idle:
            close_quietly(name, backend)

    def close_all(self) -> None:
        """Close every backend, live or retired. The pool is empty afterwards."""
        with self._lock:
            doomed = [(n, e.backend) for n, e in self._live.items()] + self._retired
            self._live, self._retired = {}, []
        for name, backend in doomed:
            close_quietly(name, backend)

    def __enter__(self) -> BackendPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_all()


def close_quietly(name: str, backend: Backend) -> None:
    """Close a backend; a failure to close is logged, never raised (nothing depends on it)."""
    try:
        backend.close()
    except (BackendError, OSError) as exc:
        log.warning("closing backend %s failed: %s", name, exc)

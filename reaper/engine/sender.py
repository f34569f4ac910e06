"""Delivering notices off the cancel path (docs/config.md, "Notifiers").

A sweep hands its notices to `NoticeSender.submit` and goes on at once: one worker thread
sends them, each with the notifier's timeout and retries, and audits each outcome — `notified`
(what `require_notice` waits for) or `notify_failed`. A notifier that hangs or fails therefore
never blocks or delays a cancel; its failures are logged, counted (`failures`, and the
`on_outcome` hook the daemon points at its metrics) and audited. Dry-run notices are logged,
never sent: a warning is a promise to cancel, and a dry run cancels nothing."""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from reaper.backends.notify import NotifyError, deliver
from reaper.engine.notices import Notice
from reaper.redact import redact

log = logging.getLogger(__name__)

BACKOFF_S = 0.5  # before the first retry; doubled each time, at most BACKOFF_MAX_S
BACKOFF_MAX_S = 5.0

Deliver = Callable[[str, str, str, str, float], None]  # name, url, title, body, timeout_s


class AuditSink(Protocol):
    """What the sender writes to (`reaper.audit.writer.AuditLog` satisfies it)."""

    def append(self, event: str, **fields: Any) -> Any: ...


class NoticeSender:
    """A queue and one worker thread. `submit` never blocks; `flush` waits (bounded) for the
    queue to drain; `close` stops the worker after the current notice."""

    def __init__(
        self,
        audit: AuditSink,
        *,
        deliver_fn: Deliver = deliver,
        on_outcome: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._audit, self._deliver, self._on_outcome = audit, deliver_fn, on_outcome
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._stop = threading.Event()
        self.failures: Counter[str] = Counter()  # notifier → notices that failed
        self.sent: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
        self._thread.start()

    def submit(self, notices: Iterable[Notice]) -> None:
        for notice in notices:
            self._queue.put(notice)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every submitted notice to be sent or given up; True if
        the queue drained."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, name="notify-flush", daemon=True).start()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            notice = self._queue.get()
            try:
                if notice is None:
                    return
                self._send(notice)
            except Exception:  # the worker must outlive any one notice
                log.exception("notifier thread: unexpected error")
            finally:
                self._queue.task_done()

    def _send(self, notice: Notice) -> None:
        spec = notice.notifier
        attempts, error = 0, spec.error or ""
        while notice.url is not None and attempts <= spec.retries:
            attempts += 1
            try:
                self._deliver(spec.name, notice.url, notice.title, notice.body, spec.timeout_s)
            except NotifyError as exc:
                error = redact(str(exc))
                log.warning("notice %s to %s, attempt %d: %s", notice.event, spec.name,
                            attempts, error)  # fmt: skip
                if attempts <= spec.retries and self._stop.wait(_backoff(attempts)):
                    break
                continue
            self._record(notice, ok=True, attempts=attempts, error=None)
            return
        log.error("notice %s to %s about %d job(s) failed: %s", notice.event, spec.name,
                  len(notice.jobs), error)  # fmt: skip
        self._record(notice, ok=False, attempts=attempts, error=error)

    def _record(self, notice: Notice, *, ok: bool, attempts: int, error: str | None) -> None:
        name = notice.notifier.name
        (self.sent if ok else self.failures)[name] += 1
        if self._on_outcome is not None:
            self._on_outcome(name, ok)
        fields: dict[str, Any] = {
            "sweep_id": notice.sweep_id, "notifier": name, "notice": str(notice.event),
            "jobs": [list(job) for job in notice.jobs], "attempts": attempts,
        }  # fmt: skip
        if error is not None:
            fields["error"] = error
        try:
            self._audit.append("notified" if ok else "notify_failed", **fields)
        except Exception as exc:  # AuditWriteError: the sweep's own writes report the log
            log.error("cannot audit notice to %s: %s", name, exc)


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1)))

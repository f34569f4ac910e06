"""Running a one-shot command's work (`plan`, `run --once`) so that SIGINT and SIGTERM end it
promptly (docs/commands.md, "Interrupting `plan`, `run --once` and `explain`").

The work runs in a daemon thread with a `stop` event; the main thread sleeps on the self-pipe of
`reaper.service.signals`, whose handlers only set a flag. On a signal the main thread sets
`stop`: listings in progress are abandoned, no new re-check or cancel starts, and the cancel
calls already in flight finish and write their `result`. The main thread waits for that at most
`grace_s`, then reports: a call still hanging after the grace is left to the reconciliation of
its open intent at the next start."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from reaper.service.signals import STOP_SIGNALS, SignalFlags, Wakeup, handling_signals

T = TypeVar("T")

# SIGINT/SIGTERM to exit: the work has this long to record the cancels in flight. Below 5 s,
# so that a command ends within 5 s of the signal whatever a backend does.
DEFAULT_GRACE_S = 4.0


@dataclass(frozen=True)
class Interrupted(Generic[T]):
    """The work was asked to stop by `signum`. `finished`: it wound down within the grace (its
    `result` is then set, unless it raised)."""

    signum: int
    finished: bool
    result: T | None = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process the signal ended (130, 143)."""
        return 128 + self.signum


class _Outcome(Generic[T]):
    """What the work thread produced: a result or an exception, and a wake-up when done."""

    def __init__(self, wakeup: Wakeup) -> None:
        self.wakeup = wakeup
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self, work: Callable[[threading.Event], T], stop: threading.Event) -> None:
        try:
            self.result = work(stop)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc
        finally:
            self.done.set()
            self.wakeup.poke()


def run_interruptible(
    work: Callable[[threading.Event], T], grace_s: float = DEFAULT_GRACE_S
) -> T | Interrupted[T]:
    """`work(stop)` in a daemon thread, until it returns or SIGINT/SIGTERM arrives (main thread
    only). Returns the work's result, or Interrupted; re-raises what the work raised. Outside
    the main thread, where no signal handler can be set, it simply runs the work."""
    if threading.current_thread() is not threading.main_thread():
        return work(threading.Event())
    wakeup = Wakeup()
    try:
        return _run(work, grace_s, wakeup)
    finally:
        wakeup.close()


def _run(
    work: Callable[[threading.Event], T], grace_s: float, wakeup: Wakeup
) -> T | Interrupted[T]:
    flags, stop, outcome = SignalFlags(wakeup), threading.Event(), _Outcome[T](wakeup)
    worker = threading.Thread(target=outcome.run, args=(work, stop), name="work", daemon=True)
    with handling_signals(flags, STOP_SIGNALS):
        worker.start()
        while not outcome.done.is_set() and not flags.stop:
            wakeup.wait(1.0)
        if flags.stop:
            stop.set()
            outcome.done.wait(grace_s)
            signum = flags.signum or signal.SIGTERM
            return Interrupted(signum, outcome.done.is_set(), outcome.result)
    if outcome.error is not None:
        raise outcome.error
    return cast(T, outcome.result)  # the work returned it

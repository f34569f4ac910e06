"""How the daemon's main loop is woken: a self-pipe, poked by signal handlers and sweep threads.

Signal handlers only set a flag and write one byte (patroni `daemon.py`):
reloading, stopping and everything else happen in the main loop. A pipe rather than a
`threading.Event`: a Python signal handler runs in the main thread between bytecodes, possibly
while that thread holds the Event's internal lock, and `Event.set()` would then deadlock."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Iterator
from types import FrameType

RELOAD_SIGNALS = (signal.SIGHUP,)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DRAIN_BYTES = 4096


class Wakeup:
    """A non-blocking self-pipe. `poke()` is safe from any thread and from signal handlers;
    `wait()` is for the main loop only."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def poke(self) -> None:
        """Wake `wait()`; never blocks and never raises (a full pipe is already awake)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def wait(self, timeout_s: float) -> bool:
        """Block until poked or `timeout_s` has passed; returns True if poked. Pokes that came
        while nobody waited count (they are drained here)."""
        readable, _, _ = select.select([self._read_fd], [], [], max(0.0, timeout_s))
        if not readable:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, _DRAIN_BYTES):
                pass
        return True

    @property
    def signal_fd(self) -> int:
        """The write end, for `signal.set_wakeup_fd`."""
        return self._write_fd

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class SignalFlags:
    """What the signals asked for. Set by `handle`, read and cleared by the main loop."""

    def __init__(self, wakeup: Wakeup) -> None:
        self.reload = False
        self.stop = False
        self.signum: int | None = None  # the first stop signal, for the exit code
        self.wakeup = wakeup

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: set a flag, poke the loop, nothing else."""
        if signum in RELOAD_SIGNALS:
            self.reload = True
        else:
            self.stop = True
            self.signum = self.signum or signum
        self.wakeup.poke()

    def take_reload(self) -> bool:
        """True once per reload request (two SIGHUPs before the loop looks count as one: the
        reload reads the files as they are then)."""
        asked, self.reload = self.reload, False
        return asked


@contextlib.contextmanager
def handling_signals(
    flags: SignalFlags, signals: tuple[int, ...] = RELOAD_SIGNALS + STOP_SIGNALS
) -> Iterator[None]:
    """Route `signals` (default SIGHUP, SIGTERM and SIGINT) to `flags` (main thread only);
    restore the previous handlers afterwards.

    The C-level handler also writes to the wakeup pipe (`signal.set_wakeup_fd`): a signal that
    the kernel delivers to a sweep thread would otherwise leave the main thread asleep in
    `select` until its timeout, since Python runs handlers only in the main thread."""
    previous = {sig: signal.signal(sig, flags.handle) for sig in signals}
    previous_fd = signal.set_wakeup_fd(flags.wakeup.signal_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Terminated(BaseException):
    """SIGTERM while a command has no handling of its own (loading the config, printing): it
    unwinds like KeyboardInterrupt does for SIGINT, so that the command can say why it ends."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """SIGTERM raises Terminated inside the block (main thread only; elsewhere a no-op); the
    previous handler is restored afterwards. `handling_signals` inside it takes precedence."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

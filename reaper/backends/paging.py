"""Fetching a listing's pages ahead of the code that reads them (docs/architecture.md, sweep
step 3), for the HTTP backends:

- `offset_pages`: an offset listing (Tapis `skip`) knows its next offsets in advance, so up to
  `in_flight` pages are fetched at once and handed on in order.
- `chained_pages`: a cursor chain (Sutro `next_cursor`) is sequential, but the next page can
  be on its way while the caller parses and evaluates the one it has.

Each fetch runs in a daemon thread of its own (at most `in_flight` at once): a process that
abandons a listing (SIGINT, a sweep deadline: reaper.engine.sweep) exits without waiting for a
call that hangs, as the scan threads themselves are daemon threads. Closing a generator early
leaves the fetches in flight to finish on their own; their results are dropped."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")
C = TypeVar("C")

# As many as a sweep's cancel calls per backend (reaper.engine.sweep.DEFAULT_CONCURRENCY); the
# HTTP clients' pools (base.HTTP_POOL_SIZE) hold more.
DEFAULT_IN_FLIGHT = 8


def offset_pages(
    fetch: Callable[[int], Sequence[T]], limit: int, in_flight: int = DEFAULT_IN_FLIGHT
) -> Iterator[tuple[int, Sequence[T]]]:
    """Yield `(offset, records)` of an offset listing in offset order, ending after the first
    page shorter than the first one (an empty page included; the empty page is not yielded).
    `limit` is the page size asked for.

    The first page is fetched alone and its length is the stride: a service that serves fewer
    records than asked for (a lower cap on `limit`) is still read without gaps. After a full
    first page, up to `in_flight` pages at the following offsets are in flight at once, each
    full page read starting the next fetch; up to `in_flight - 1` fetches past the end are
    wasted (empty pages). After a short first page (a small listing, or a cap), one page is
    fetched to tell which, and the window opens only if that page is full too. Raises what
    `fetch` raises, once the pages before the failed one have been yielded."""
    first = fetch(0)
    if not first:
        return
    stride = len(first)
    pending: deque[tuple[int, Future[Sequence[T]]]] = deque()
    offsets = itertools.count(stride, stride)

    def top_up(window: int) -> None:
        while len(pending) < window:
            offset = next(offsets)
            pending.append((offset, _start(fetch, offset)))

    top_up(max(1, in_flight) if stride >= limit else 1)
    yield 0, first
    while pending:
        offset, future = pending.popleft()
        records = future.result()
        if len(records) >= stride:
            top_up(max(1, in_flight))
        if records:
            yield offset, records
        if len(records) < stride:
            return


def chained_pages(fetch: Callable[[C | None], tuple[T, C | None]]) -> Iterator[T]:
    """Yield the pages of a cursor chain: `fetch(cursor)` returns a page and the next cursor
    (None after the last page; the first call gets None). The next page's fetch starts before
    the current page is yielded, so the consumer's work overlaps it. Raises what `fetch`
    raises, after the pages before."""
    future = _start(fetch, None)
    while True:
        page, cursor = future.result()
        if cursor is not None:
            future = _start(fetch, cursor)
        yield page
        if cursor is None:
            return


A = TypeVar("A")
R = TypeVar("R")


def _start(fetch: Callable[[A], R], argument: A) -> Future[R]:
    """`fetch(argument)` in a daemon thread of its own; its outcome in the Future."""
    future: Future[R] = Future()

    def run() -> None:
        try:
            future.set_result(fetch(argument))
        except BaseException as exc:  # handed to whoever reads the page
            future.set_exception(exc)

    future.set_running_or_notify_cancel()
    threading.Thread(target=run, name="page", daemon=True).start()
    return future

"""Fetching a listing's pages ahead of the code that reads them (docs/architecture.md, sweep
step 3), for the HTTP backends:

- `offset_pages`: an offset listing (Tapis `skip`) knows its next offsets in advance, so up to
  `in_flight` pages are fetched at once and handed on in order.
- `chained_pages`: a cursor chain (Sutro `next_cursor`) is sequential, but the next page can
  be on its way while the caller parses and evaluates the one it has.

Both are generators that own a small thread pool: closing the generator (a consumer that
stops early, an error) cancels the fetches not yet started and waits for none of them."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    pool = ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="page")
    pending: deque[tuple[int, Future[Sequence[T]]]] = deque()
    offsets = itertools.count(stride, stride)

    def top_up(window: int) -> None:
        while len(pending) < window:
            offset = next(offsets)
            pending.append((offset, pool.submit(fetch, offset)))

    try:
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
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def chained_pages(fetch: Callable[[C | None], tuple[T, C | None]]) -> Iterator[T]:
    """Yield the pages of a cursor chain: `fetch(cursor)` returns a page and the next cursor
    (None after the last page; the first call gets None). The next page's fetch starts before
    the current page is yielded, so the consumer's work overlaps it. Raises what `fetch`
    raises, after the pages before."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="page")
    try:
        future = pool.submit(fetch, None)
        while True:
            page, cursor = future.result()
            if cursor is not None:
                future = pool.submit(fetch, cursor)
            yield page
            if cursor is None:
                return
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

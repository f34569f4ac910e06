"""Retries with capped exponential backoff and full jitter, for the HTTP backends (Tapis, Sutro).
AWS Batch relies on botocore's own retry modes instead: one retry layer, never two."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from reaper.backends.base import CancelOutcome, CancelResult
from reaper.errors import BackendError
from reaper.jobs import Job, Phase

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` calls in all; sleeps drawn from [0, min(cap, base * 2**n)]
    ("full jitter", https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/)."""

    attempts: int = 4
    base_s: float = 0.2
    cap_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry_number: int) -> float:
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2**retry_number))


class RetryableError(Exception):
    """Raised by a call to ask for another attempt; carries the last failure for the message."""


def call_with_retries(call: Callable[[], T], policy: RetryPolicy) -> T:
    """Run `call`, retrying while it raises RetryableError, up to `policy.attempts` calls.
    Re-raises the last RetryableError when the budget is spent; other exceptions pass through."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except RetryableError:
            if attempt == policy.attempts - 1:
                raise
            policy.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


class LostAnswerError(Exception):
    """A cancel call whose answer was lost (a timeout, a reset connection, a 5xx): the server
    may have applied it. Carries the failure for the message."""


def cancel_honestly(
    send: Callable[[], CancelResult],
    reread: Callable[[], Job | None],
    policy: RetryPolicy,
) -> CancelResult:
    """A cancel whose outcome says what is known (docs/audit.md, "Outcomes").

    `send` makes ONE cancel call: it returns the outcome of an answer, raises RetryableError
    when the call certainly did nothing (throttled) and LostAnswerError when it may have been
    applied. After a lost answer the job is re-read before anything is retried: terminal now
    means reaper's call ended it (`cancelled`); gone means `not_found`; still active means the
    call did not land, and it is retried. A retry's "already terminal" after a lost answer is
    reaper's own earlier call landing late: `cancelled`, never `already_terminal`. `failed`
    only when the job is still active (or unreadable) after the last attempt. `reread` may
    raise BackendError: the state is then unknown, and the next attempt's answer decides."""
    lost: str | None = None
    failure, state = "no attempt made", "the job is still active"
    for attempt in range(policy.attempts):
        try:
            result = send()
        except RetryableError as exc:  # certainly not applied: back off and try again
            failure = str(exc)
        except LostAnswerError as exc:
            lost = failure = str(exc)
            try:
                known = _after_lost_answer(reread(), failure)
            except BackendError as error:  # cannot tell: the retry's answer will
                known, state = None, f"its state could not be read: {error}"
            if known is not None:
                return known
        else:
            return _after_answer(result, lost)
        if attempt < policy.attempts - 1:
            policy.sleep(policy.delay(attempt))
    return CancelResult(
        CancelOutcome.FAILED,
        f"{failure} (gave up after {policy.attempts} attempts; {state})",
        unanswered=True,
    )


def _after_answer(result: CancelResult, lost: str | None) -> CancelResult:
    if lost is not None and result.outcome is CancelOutcome.ALREADY_TERMINAL:
        return CancelResult(
            CancelOutcome.CANCELLED,
            f"the answer to an earlier cancel call was lost ({lost}); it has ended the job",
        )
    return result


def _after_lost_answer(fresh: Job | None, lost: str) -> CancelResult | None:
    """What the job's state tells after a lost answer; None when it is still active (retry)."""
    if fresh is None:
        return CancelResult(
            CancelOutcome.NOT_FOUND, f"{lost}; the job is gone since the cancel call"
        )
    if fresh.phase is Phase.TERMINAL:
        return CancelResult(
            CancelOutcome.CANCELLED,
            f"{lost}; the job has ended since the cancel call ({fresh.status})",
        )
    return None

"""Retries with capped exponential backoff and full jitter, for the HTTP backends (Tapis, Sutro).
AWS Batch relies on botocore's own retry modes instead: one retry layer, never two."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

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

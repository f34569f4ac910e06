import random

import pytest

from reaper.backends.retry import RetryableError, RetryPolicy, call_with_retries


def _policy(sleeps: list[float], attempts: int = 4) -> RetryPolicy:
    return RetryPolicy(
        attempts=attempts, base_s=1, cap_s=3, sleep=sleeps.append, rng=random.Random(1)
    )


def test_retries_until_success() -> None:
    answers = iter([RetryableError("429"), RetryableError("503"), "ok"])

    def call() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sleeps: list[float] = []
    assert call_with_retries(call, _policy(sleeps)) == "ok"
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1 and 0 <= sleeps[1] <= 2


def test_gives_up_after_budget_and_caps_delay() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise RetryableError("503")

    sleeps: list[float] = []
    with pytest.raises(RetryableError):
        call_with_retries(call, _policy(sleeps, attempts=5))
    assert len(calls) == 5 and len(sleeps) == 4 and max(sleeps) <= 3


def test_other_errors_are_not_retried() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise ValueError("bad credentials")

    with pytest.raises(ValueError):
        call_with_retries(call, _policy([]))
    assert calls == [1]

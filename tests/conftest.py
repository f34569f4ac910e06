"""Hypothesis profiles, chosen by `HYPOTHESIS_PROFILE`:

- `default`: modest, deterministic (derandomized, no example database), so CI runs the same
  examples every time; tests that pin `max_examples` themselves keep their own count.
- `slow`: 10,000 examples per property test, the reliability state machine included, randomized
  (a failure prints the blob to reproduce it).

`HYPOTHESIS_PROFILE=slow python -m pytest -m slow tests/test_reliability_state_machine.py`."""

import os

import pytest
from hypothesis import settings

settings.register_profile(
    "default", max_examples=200, deadline=None, derandomize=True, database=None
)
settings.register_profile("slow", max_examples=10_000, deadline=None, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)


@pytest.fixture
def slow_run(request: pytest.FixtureRequest) -> None:
    """Skip a test that takes many minutes unless the run asked for them: the `slow` profile,
    or a `-m` expression naming the `slow` marker."""
    if PROFILE != "slow" and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("minutes long: run with HYPOTHESIS_PROFILE=slow or -m slow")

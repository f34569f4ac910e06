"""Hypothesis profiles, chosen by `HYPOTHESIS_PROFILE`:

- `default`: modest, deterministic (derandomized, no example database), so CI runs the same
  examples every time; tests that pin `max_examples` themselves keep their own count.
- `slow`: 10,000 examples per property test, the reliability state machine included, randomized
  (a failure prints the blob to reproduce it).

Tests marked `slow` are skipped unless the `slow` profile is active or `-m` names the marker:
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the long-running `slow` tests out of an ordinary run."""
    if PROFILE == "slow" or "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with HYPOTHESIS_PROFILE=slow or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

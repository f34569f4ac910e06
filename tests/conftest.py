"""Hypothesis profiles: `HYPOTHESIS_PROFILE=slow` runs property tests with 10,000 examples."""

import os

from hypothesis import settings

settings.register_profile("slow", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

"""reaper: a declarative, policy-driven reaper for runaway batch jobs."""

__version__ = "0.1.0"

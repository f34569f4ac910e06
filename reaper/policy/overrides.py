"""Per-job override tags owners can set without editing a policy (docs/policies.md, "Overrides").

`reaper:max-runtime=36h` raises the job's runtime limit under every policy with a `max_runtime`,
never beyond the limit plus the policy's `max_extension:` (default none: the tag is then shown
but changes nothing). A value below the limit changes nothing either: an owner can ask for more
time, not for an earlier cancel. `reaper:keep-until` is a protection and is applied with the
protect tag (reaper.jobs.kept_until)."""

from __future__ import annotations

from datetime import datetime, timedelta

from reaper.jobs import MAX_RUNTIME_TAG, Job
from reaper.policy.durations import DurationError, format_duration, parse_duration
from reaper.policy.selectors import Fact

OVERRIDE = "override"  # `selector` of the facts this module adds


def runtime_override(
    job: Job, limit: timedelta | None, max_extension: timedelta, now: datetime
) -> tuple[bool, Fact | None]:
    """(still matches, the fact to show) for a job a policy with runtime `limit` matched.
    Without the tag or a runtime limit: (True, None)."""
    value = job.tags.get(MAX_RUNTIME_TAG)
    runtime = job.runtime(now)
    if value is None or limit is None or runtime is None:
        return True, None
    shown = f"{MAX_RUNTIME_TAG}={value}"
    try:
        asked = parse_duration(value)
    except DurationError:
        return True, Fact(OVERRIDE, f"{shown} ignored: not a duration")
    allowed = min(asked, limit + max_extension)
    if allowed <= limit:
        why = "below the limit" if asked <= limit else "no max_extension allowed"
        return True, Fact(OVERRIDE, f"{shown} ignored: {why}")
    if runtime <= allowed:
        return False, None
    extension = format_duration(max_extension)
    capped = "" if allowed == asked else f" (capped by max_extension {extension})"
    measured, extended = format_duration(runtime), format_duration(allowed)
    return True, Fact(OVERRIDE, f"{shown}: runtime {measured} > extended limit {extended}{capped}")

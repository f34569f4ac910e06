"""Time windows and per-job override tags, through the CLI against the emulators (issue 14):
`plan --now` decides as a sweep at that time would, `run --once` under a replaced clock acts;
windows across midnight and across both daylight-saving changes of Europe/Berlin; the
`reaper:keep-until` and `reaper:max-runtime` tags with `max_extension`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from reaper.emulators.world import World, emulated_world
from reaper.engine import runtime
from reaper.policy.windows import compile_window
from tests.e2e_support import audit_records, job_keys, run_cli, run_once, running

BERLIN = ZoneInfo("Europe/Berlin")
CAP = """\
policies:
  - name: night-cap
    names: ["long-*"]
    statuses: [running]
    max_runtime: 2h
{extra}
"""
NIGHTS = (
    '    window: {days: [mon, tue, wed, thu, fri], hours: "20:00-07:00", timezone: Europe/Berlin}'
)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def world(tmp_path: Path, extra: str, jobs: list[Any] | None = None) -> Any:
    now = time.time()
    seeds = {"batch": jobs or [running("batch", "long-1", 5, now)]}
    return emulated_world(tmp_path, seeds=seeds, policies_yaml=CAP.format(extra=extra),
                          config={"limits": {"max_match_fraction": 1.0}})  # fmt: skip


def plan_at(w: World, at: datetime) -> dict[str, Any]:
    result = run_cli("plan", "--json", "--now", at.isoformat(), "--config", str(w.config_path))
    assert result.code == 0, result.err
    body: dict[str, Any] = json.loads(result.out)
    return body


def action_at(w: World, at: datetime) -> str:
    [decision] = plan_at(w, at)["decisions"]
    return str(decision["action"] if decision["action"] != "skip" else decision["cause"])


# -- windows ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (berlin(2026, 12, 4, 21, 0), "cancel"),  # Friday night
        (berlin(2026, 12, 5, 6, 59), "cancel"),  # Saturday morning: the Friday opening
        (berlin(2026, 12, 5, 7, 0), "outside_window"),  # the end is excluded
        (berlin(2026, 12, 5, 21, 0), "outside_window"),  # Saturday night: not a listed day
        (berlin(2026, 12, 7, 3, 0), "outside_window"),  # Monday 03:00: Sunday's night
        (berlin(2026, 12, 7, 12, 0), "outside_window"),  # Monday midday
        (berlin(2026, 12, 8, 0, 30), "cancel"),  # after midnight, Monday's opening
    ],
)
def test_a_window_across_midnight_through_plan(
    tmp_path: Path, moment: datetime, expected: str
) -> None:
    with world(tmp_path, NIGHTS) as w:
        assert action_at(w, moment) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Spring, 2027-03-28: 02:00 CET becomes 03:00 CEST, so 01:00-04:00 lasts two hours.
        (datetime(2027, 3, 28, 1, 30, tzinfo=UTC), "cancel"),  # 03:30 CEST
        (datetime(2027, 3, 28, 2, 30, tzinfo=UTC), "outside_window"),  # 04:30 CEST (+1: 03:30)
        # Autumn, 2027-10-31: 03:00 CEST becomes 02:00 CET, so 01:00-04:00 lasts four hours.
        (datetime(2027, 10, 30, 23, 30, tzinfo=UTC), "cancel"),  # 01:30 CEST
        (datetime(2027, 10, 31, 2, 30, tzinfo=UTC), "cancel"),  # 03:30 CET (+2: 04:30)
        (datetime(2027, 10, 31, 3, 30, tzinfo=UTC), "outside_window"),  # 04:30 CET
    ],
)
def test_a_window_across_a_daylight_saving_change(
    tmp_path: Path, moment: datetime, expected: str
) -> None:
    extra = '    window: {hours: "01:00-04:00", timezone: Europe/Berlin}'
    with world(tmp_path, extra) as w:
        assert action_at(w, moment) == expected


def test_a_due_time_outside_the_window_waits_for_the_next_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saturday = berlin(2026, 12, 5, 10, 0)
    monkeypatch.setattr(runtime, "utc_now", lambda: saturday)
    with world(tmp_path, NIGHTS + "\n    grace: 1h") as w:
        assert run_once(w).code == 0  # warnings are given any time
        [warned] = [r for r in audit_records(w) if r["event"] == "warned"]
        assert datetime.fromisoformat(warned["due"]) == berlin(2026, 12, 7, 20, 0)
        monkeypatch.setattr(runtime, "utc_now", lambda: berlin(2026, 12, 7, 19, 59))
        assert run_once(w).code == 0
        assert job_keys(audit_records(w), "result") == set()
        monkeypatch.setattr(runtime, "utc_now", lambda: berlin(2026, 12, 7, 20, 1))
        assert run_once(w).code == 0
        assert job_keys(audit_records(w), "result", outcome="cancelled") == {
            ("batch", "batch-long-1")}  # fmt: skip


def test_run_outside_the_window_cancels_nothing_and_audits_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "utc_now", lambda: berlin(2026, 12, 7, 12, 0))
    with world(tmp_path, NIGHTS) as w:
        assert run_once(w).code == 0
        [skipped] = [r for r in audit_records(w) if r["event"] == "skipped"]
        assert skipped["cause"] == "outside_window"
        assert datetime.fromisoformat(skipped["due"]) == berlin(2026, 12, 7, 20, 0)


def test_window_validation_reports_a_bad_zone_and_bad_hours(tmp_path: Path) -> None:
    extra = '    window: {hours: "25:00-07:00", timezone: Mars/Olympus}'
    with world(tmp_path, extra) as w:
        result = run_cli("validate", "--config", str(w.config_path))
        assert result.code == 78
        assert "hours" in result.err and "Mars/Olympus" in result.err


def test_next_opening_is_the_start_of_the_next_listed_day() -> None:
    window = compile_window({"days": ["mon"], "hours": "20:00-07:00", "timezone": "UTC"}, [])
    assert window is not None
    friday = datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert window.next_opening(friday) == datetime(2026, 12, 7, 20, tzinfo=UTC)
    inside = datetime(2026, 12, 8, 6, tzinfo=UTC)
    assert window.next_opening(inside) == inside


# -- override tags -------------------------------------------------------------------------------
def tagged(hours: float, **tags: str) -> list[Any]:
    return [running("batch", "long-1", hours, time.time(), **tags)]


def test_keep_until_protects_until_its_time_and_shows_in_the_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    until = datetime.now(UTC) + timedelta(days=3)
    jobs = tagged(5, **{"reaper:keep-until": until.isoformat()})
    with world(tmp_path, "", jobs) as w:
        assert action_at(w, datetime.now(UTC) + timedelta(days=1)) == "protected"
        assert action_at(w, until + timedelta(minutes=1)) == "cancel"
        assert run_once(w).code == 0
        [skipped] = [r for r in audit_records(w) if r["event"] == "skipped"]
        assert skipped["cause"] == "protected"
        assert skipped["override"] == f"reaper:keep-until={until.isoformat()}"


def test_an_unreadable_keep_until_protects(tmp_path: Path) -> None:
    with world(tmp_path, "", tagged(5, **{"reaper:keep-until": "after christmas"})) as w:
        assert action_at(w, datetime.now(UTC) + timedelta(days=400)) == "protected"


def test_max_runtime_tag_raises_the_limit_within_max_extension(tmp_path: Path) -> None:
    jobs = tagged(14, **{"reaper:max-runtime": "36h"})
    extra = "    max_runtime: 12h\n    max_extension: 1d"
    with world(tmp_path, "", jobs) as w:
        w.config_path.parent.joinpath("policies", "policies.yaml").write_text(
            CAP.format(extra="").replace("max_runtime: 2h", extra.strip()), encoding="utf-8"
        )
        soon = datetime.now(UTC) + timedelta(minutes=1)
        assert plan_at(w, soon)["decisions"] == []  # 14h < 36h: the owner's limit holds
        [decision] = plan_at(w, soon + timedelta(hours=23))["decisions"]  # 37h > 36h
        assert any("reaper:max-runtime=36h" in fact for fact in decision["facts"])
        assert "reaper:max-runtime=36h" in decision["reason"]


def test_max_runtime_tag_is_capped_by_max_extension_and_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tagged(14, **{"reaper:max-runtime": "36h"})
    with world(tmp_path, "", jobs) as w:
        w.config_path.parent.joinpath("policies", "policies.yaml").write_text(
            CAP.format(extra="    max_extension: 1h").replace(
                "max_runtime: 2h", "max_runtime: 12h"
            ),
            encoding="utf-8",
        )
        assert run_once(w).code == 0  # 14h > 12h + 1h: cancelled despite asking for 36h
        [result] = [r for r in audit_records(w) if r["event"] == "result"]
        assert result["outcome"] == "cancelled"
        fact = next(f for f in result["facts"] if "max-runtime" in f)
        assert "extended limit 13h" in fact and "capped by max_extension 1h" in fact
        assert "capped by max_extension" in result["reason"]


def test_max_runtime_tag_changes_nothing_without_max_extension(tmp_path: Path) -> None:
    jobs = tagged(14, **{"reaper:max-runtime": "36h"})
    with world(tmp_path, "", jobs) as w:
        [decision] = plan_at(w, datetime.now(UTC) + timedelta(minutes=1))["decisions"]
        assert decision["action"] == "cancel"
        assert any("ignored: no max_extension allowed" in f for f in decision["facts"])


def test_explain_names_the_override_clause_and_agrees_with_evaluate() -> None:
    from reaper.jobs import Job, Phase
    from reaper.policy.explain import explain_policy
    from reaper.policy.model import PolicySource, compile_policy

    source = PolicySource("p.yaml", "0" * 64, None, 0)
    policy = compile_policy(
        {"name": "cap", "max_runtime": "12h", "max_extension": "1d"}, source, {"sutro"}
    )
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for hours, matches in ((14, False), (40, True)):
        job = Job("s", "sutro", "j", "j", "", "RUNNING", Phase.RUNNING,
                  now - timedelta(hours=hours + 1), now - timedelta(hours=hours),
                  tags={"reaper:max-runtime": "36h"})  # fmt: skip
        explained = explain_policy(policy, job, now)
        assert explained.matches is matches
        assert explained.clauses_hold is matches
        [override] = [c for c in explained.clauses if c.name == "override"]
        assert override.holds is matches


def test_the_longest_wait_of_a_weeknight_window_is_the_weekend() -> None:
    window = compile_window(
        {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "20:00-07:00",
         "timezone": "Europe/Berlin"}, [],
    )  # fmt: skip
    assert window is not None
    # Saturday 07:00 to Monday 20:00, and an hour of margin for a daylight-saving change.
    assert window.longest_wait() == timedelta(hours=61 + 1)

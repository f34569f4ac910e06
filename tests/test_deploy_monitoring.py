"""The Grafana dashboard and the Prometheus rules in deploy/ name only series reaper exports
(reaper/service/metrics.py), and the rules pass `promtool check rules` and their unit tests
(`promtool test rules`). .ci/run installs promtool (Debian's `prometheus` package), so in CI
the promtool tests run; on a machine without it they are skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from reaper.service.metrics import BackendSweepStats, Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "reaper.json"
RULES = DEPLOY / "prometheus" / "reaper-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "reaper-rules.test.yml"
PROMTOOL = shutil.which("promtool")
SERIES = re.compile(r"\breaper_[a-z0-9_]+\b")
# Referenced before reaper exports it: the stuck-cancel counter (audit `stuck` records) is
# being added separately; until then its panel is empty and its alert matches nothing.
PENDING = frozenset({"reaper_cancels_stuck_total"})

# .ci/run sets REAPER_CI_TOOLS=1 after installing promtool: there, a missing one fails.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("REAPER_CI_TOOLS"), reason="promtool is not installed"
)


def exported_series() -> set[str]:
    """Every sample name a daemon's registry exposes once each kind of series has a value."""
    metrics = Metrics(CollectorRegistry())
    metrics.declare_backends(["b"])
    stats = BackendSweepStats("b", 1, {"p": 1}, {"cancelled": 1}, {"limit": 1}, None, 0.5)
    metrics.record_backend_sweep(stats)
    metrics.record_backend_sweep(BackendSweepStats("b", error="down"))
    metrics.record_reload(False, 1)
    metrics.set_schedule_interval(300)
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_dashboard_names_only_exported_series():
    names = {
        n
        for expr in dashboard_exprs(json.loads(DASHBOARD.read_text()))
        for n in SERIES.findall(expr)
    }
    assert names - exported_series() <= PENDING, names - exported_series() - PENDING


def test_the_dashboard_shows_what_an_operator_needs():
    names = {
        n
        for expr in dashboard_exprs(json.loads(DASHBOARD.read_text()))
        for n in SERIES.findall(expr)
    }
    wanted = {
        "reaper_cancels_total", "reaper_jobs_matched_total", "reaper_jobs_skipped_total",
        "reaper_backend_errors_total", "reaper_sweep_duration_seconds_bucket",
        "reaper_last_successful_sweep_timestamp_seconds", "reaper_config_last_reload_successful",
    }  # fmt: skip
    assert wanted <= names


def test_dashboard_panels_have_unique_ids_and_a_query_each():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}


def test_the_rules_name_only_exported_series_and_cover_the_failure_modes():
    found = rules()
    names = {n for rule in found for n in SERIES.findall(rule["expr"])}
    assert names - exported_series() <= PENDING, names - exported_series() - PENDING
    alerts = {rule["alert"] for rule in found}
    assert {
        "ReaperNoSuccessfulSweep", "ReaperBackendFailing", "ReaperReloadFailed",
        "ReaperGuardRefusing", "ReaperCancelsStuck",
    } <= alerts  # fmt: skip
    assert all(rule["labels"]["severity"] in ("warning", "critical") for rule in found)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is not installed (Debian package prometheus)"
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


@needs_promtool
def test_promtool_check_rules():
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_test_rules():
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_rule_tests_fail_when_a_threshold_moves(tmp_path):
    """The unit tests are not vacuous: three periods becoming four breaks them."""
    text = RULES.read_text().replace(
        "(3 * reaper_schedule_interval_seconds)", "(4 * reaper_schedule_interval_seconds)"
    )
    assert text != RULES.read_text()
    (tmp_path / RULES.name).write_text(text)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ReaperNoSuccessfulSweep" in result.stdout + result.stderr

"""Metrics tell the same story as the audit log of the same run: the daemon's /metrics endpoint
and the textfile `run --once` writes, against the emulators seeded with the demo mix (cancels,
protected jobs, per-policy limits)."""

from __future__ import annotations

import signal
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from reaper.cli import main as cli_main
from reaper.emulators.world import BACKENDS, DEMO_POLICIES, emulated_world
from reaper.errors import ExitCode
from tests.daemon_support import (
    NotifyListener,
    daemon_process,
    events,
    free_port,
    read_records,
    wait_for,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_exposition(text: str) -> Samples:
    """Prometheus text format → {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_labels(samples: Samples, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    """The non-zero values of series `name`, keyed by the values of `labels`."""
    counts: Counter[tuple[str, ...]] = Counter()
    for (sample, label_set), value in samples.items():
        if sample == name and value:
            found = dict(label_set)
            counts[tuple(found[label] for label in labels)] += int(value)
    return counts


def audit_counts(records: list[dict[str, Any]]) -> dict[str, Counter[tuple[str, ...]]]:
    """What the audit log says, shaped like the metric series."""
    seen: Counter[tuple[str, ...]] = Counter()
    for end in (r for r in records if r["event"] == "sweep_end"):
        for backend, totals in end["backends"].items():
            seen[(backend,)] += totals["active"]
    decided = [r for r in records if r["event"] in ("intent", "skipped", "warned")]
    return {
        "reaper_cancels_total": Counter(
            (r["backend"], r["outcome"]) for r in records if r["event"] == "result"
        ),
        "reaper_jobs_skipped_total": Counter(
            (r["backend"], r["cause"]) for r in records if r["event"] == "skipped"
        ),
        "reaper_jobs_matched_total": Counter((r["backend"], r["policy"]) for r in decided),
        "reaper_jobs_seen_total": seen,
    }


LABELS = {
    "reaper_cancels_total": ("backend", "outcome"),
    "reaper_jobs_skipped_total": ("backend", "cause"),
    "reaper_jobs_matched_total": ("backend", "policy"),
    "reaper_jobs_seen_total": ("backend",),
}


def assert_metrics_match_audit(samples: Samples, audit_path: Path) -> None:
    expected = audit_counts(read_records(audit_path))
    assert expected["reaper_cancels_total"][("batch", "cancelled")] > 0  # the run did act
    assert expected["reaper_jobs_skipped_total"][("batch", "protected")] > 0
    for name, labels in LABELS.items():
        assert by_labels(samples, name, *labels) == expected[name], name
    for backend in BACKENDS:
        label = frozenset({("backend", backend)})
        assert samples[("reaper_backend_errors_total", label)] == 0
        assert samples[("reaper_last_successful_sweep_timestamp_seconds", label)] > 0
    demo_policies = yaml.safe_load(DEMO_POLICIES.read_text(encoding="utf-8"))["policies"]
    assert samples[("reaper_policies_loaded", frozenset())] == len(demo_policies)


def counted(text: str) -> Samples | None:
    """The samples, once every backend's start-up sweep is in them; else None."""
    samples = parse_exposition(text)
    metric = "reaper_last_successful_sweep_timestamp_seconds"
    stamps = [samples.get((metric, frozenset({("backend", b)})), 0) for b in BACKENDS]
    return samples if all(stamps) else None


def test_daemon_metrics_endpoint_matches_its_audit_log(tmp_path: Path) -> None:
    port = free_port()
    config = {"schedule": {"every": "1h"}, "metrics": {"listen": f"127.0.0.1:{port}"}}
    notify = NotifyListener()
    try:
        with emulated_world(tmp_path, config=config) as world:
            env = {"NOTIFY_SOCKET": notify.address}
            with daemon_process(world, tmp_path / "daemon.log", env=env) as daemon:
                notify.wait_for("READY=1", 20)
                # every backend sweeps once at start-up, then not for an hour
                wait_for(lambda: len(events(world.audit_path, "sweep_end")) == len(BACKENDS),
                         20, "the start-up sweeps")  # fmt: skip
                # The daemon counts a sweep once it has returned, just after its sweep_end
                # record: scrape until every backend's sweep is counted (the timestamp of its last
                # success is set last).
                url = f"http://127.0.0.1:{port}/metrics"
                samples = wait_for(lambda: counted(scrape(url)), 20, "the sweeps in the metrics")
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(30) == 0
            assert_metrics_match_audit(samples, world.audit_path)
    finally:
        notify.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback, our own listener
        return str(response.read().decode("utf-8"))


def test_run_once_writes_a_textfile_that_matches_its_audit_log(tmp_path: Path) -> None:
    config = {"metrics": {"textfile": "reaper.prom"}}
    with emulated_world(tmp_path, config=config) as world:
        assert cli_main(["run", "--once", "--config", str(world.config_path)]) == ExitCode.OK
        textfile = tmp_path / "reaper.prom"
        assert_metrics_match_audit(parse_exposition(textfile.read_text("utf-8")), world.audit_path)
        assert oct(textfile.stat().st_mode & 0o777) == "0o644"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("reaper.prom.")]

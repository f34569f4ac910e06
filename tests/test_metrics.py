"""reaper.service.metrics, read back through the text exposition of a fresh registry per test."""

from __future__ import annotations

import os
import threading
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from reaper.service.metrics import (
    BackendSweepStats,
    Metrics,
    parse_listen,
    serve,
    write_textfile,
)

ALLOWED_LABELS = {"backend", "policy", "outcome", "cause", "version", "le"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def scrape_text(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, keyed by (name, labels)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(registry: CollectorRegistry):
    return scrape_text(generate_latest(registry).decode())


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def sweep(**overrides) -> BackendSweepStats:
    fields = {
        "backend": "batch-prod",
        "active": 40,
        "matched": {"gpu-runtime-cap": 3, "dev-queue-expiry": 1},
        "outcomes": {"cancelled": 2, "already_terminal": 1},
        "skipped": {"limit": 1},
        "duration_s": 1.5,
    }
    return BackendSweepStats(**{**fields, **overrides})


def test_a_backend_sweep_is_counted_by_backend_policy_outcome_and_cause(registry):
    metrics = Metrics(registry, clock=lambda: 1_700_000_000.0)
    metrics.record_backend_sweep(sweep())
    metrics.record_backend_sweep(sweep(active=10, outcomes={"cancelled": 1}, skipped={}))
    samples = scrape(registry)
    assert value(samples, "reaper_jobs_seen_total", backend="batch-prod") == 50
    assert value(samples, "reaper_active_jobs", backend="batch-prod") == 10
    assert value(samples, "reaper_jobs_matched_total", backend="batch-prod",
                 policy="gpu-runtime-cap") == 6  # fmt: skip
    assert value(samples, "reaper_cancels_total", backend="batch-prod", outcome="cancelled") == 3
    assert value(samples, "reaper_cancels_total", backend="batch-prod",
                 outcome="already_terminal") == 1  # fmt: skip
    assert value(samples, "reaper_jobs_skipped_total", backend="batch-prod", cause="limit") == 1
    assert value(samples, "reaper_sweep_duration_seconds_count", backend="batch-prod") == 2
    assert value(samples, "reaper_sweep_duration_seconds_sum", backend="batch-prod") == 3.0
    assert value(samples, "reaper_last_successful_sweep_timestamp_seconds",
                 backend="batch-prod") == 1_700_000_000.0  # fmt: skip
    assert value(samples, "reaper_backend_errors_total", backend="batch-prod") == 0


def test_a_failed_backend_counts_an_error_and_keeps_the_last_success_time(registry):
    metrics = Metrics(registry)
    metrics.record_backend_sweep(sweep(backend="tacc"), finished_at=100.0)
    metrics.record_backend_sweep(sweep(backend="tacc", error="401 from Tapis"), finished_at=200.0)
    samples = scrape(registry)
    assert value(samples, "reaper_backend_errors_total", backend="tacc") == 1
    assert value(samples, "reaper_last_successful_sweep_timestamp_seconds", backend="tacc") == 100


def test_backends_are_isolated_by_label(registry):
    metrics = Metrics(registry)
    metrics.record_backend_sweep(sweep(backend="a", active=5))
    metrics.record_backend_sweep(sweep(backend="b", active=7, error="boom"))
    samples = scrape(registry)
    assert value(samples, "reaper_jobs_seen_total", backend="a") == 5
    assert value(samples, "reaper_jobs_seen_total", backend="b") == 7
    assert value(samples, "reaper_backend_errors_total", backend="a") == 0


def test_declared_backends_exist_at_zero_before_any_sweep(registry):
    Metrics(registry).declare_backends(["batch-prod", "sutro"])
    samples = scrape(registry)
    for backend in ("batch-prod", "sutro"):
        assert value(samples, "reaper_jobs_seen_total", backend=backend) == 0
        assert value(samples, "reaper_backend_errors_total", backend=backend) == 0
        assert value(samples, "reaper_sweep_duration_seconds_count", backend=backend) == 0


def test_reloads_and_failures_and_policies_loaded(registry):
    metrics = Metrics(registry)
    metrics.set_policies_loaded(4)
    metrics.record_reload(ok=True, policies=5)
    metrics.record_reload(ok=False, policies=5)
    samples = scrape(registry)
    assert value(samples, "reaper_reloads_total") == 2
    assert value(samples, "reaper_reload_failures_total") == 1
    assert value(samples, "reaper_policies_loaded") == 5
    assert value(samples, "reaper_config_last_reload_successful") == 0
    metrics.record_reload(ok=True, policies=6)
    assert value(scrape(registry), "reaper_config_last_reload_successful") == 1


def test_naming_rules_hold_for_every_series(registry):
    metrics = Metrics(registry)
    metrics.record_backend_sweep(sweep())
    metrics.record_reload(ok=True, policies=1)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        assert family.name.startswith("reaper_"), family.name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name


def test_build_info_carries_the_version(registry):
    Metrics(registry)
    samples = scrape(registry)
    assert [key for key in samples if key[0] == "reaper_build_info"]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_listen_defaults_to_loopback(listen, expected):
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:", "127.0.0.1:99999", "host:x"])
def test_parse_listen_rejects_a_bad_port(listen):
    with pytest.raises(ValueError, match="expected host:port"):
        parse_listen(listen)


def test_serve_exposes_the_registry_on_loopback_and_stops(registry):
    Metrics(registry).record_backend_sweep(sweep())
    server = serve(registry, "127.0.0.1:0")
    try:
        assert server.server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            samples = scrape_text(response.read().decode())
    finally:
        server.stop()
    assert value(samples, "reaper_jobs_seen_total", backend="batch-prod") == 40
    assert not server.thread.is_alive()


def test_serve_binds_loopback_when_no_host_is_given(registry):
    server = serve(registry, ":0")
    try:
        assert server.server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_write_textfile_replaces_the_file_by_rename_and_leaves_no_temporary(registry, tmp_path):
    metrics = Metrics(registry)
    path = tmp_path / "reaper.prom"
    path.write_text("# old\n")
    old_inode = path.stat().st_ino
    metrics.record_backend_sweep(sweep())
    write_textfile(registry, path)
    assert path.stat().st_ino != old_inode  # a new file renamed over the old, not rewritten
    assert os.listdir(tmp_path) == ["reaper.prom"]
    assert path.stat().st_mode & 0o777 == 0o644
    assert (
        value(scrape_text(path.read_text()), "reaper_jobs_seen_total", backend="batch-prod") == 40
    )


class BrokenCollector(Collector):
    def collect(self):
        raise RuntimeError("collector failed")


def test_a_failed_textfile_write_keeps_the_old_file_and_no_temporary(tmp_path):
    registry = CollectorRegistry()
    Metrics(registry)
    path = tmp_path / "reaper.prom"
    write_textfile(registry, path)
    before = path.read_bytes()
    registry.register(BrokenCollector())
    with pytest.raises(RuntimeError, match="collector failed"):
        write_textfile(registry, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["reaper.prom"]


def test_readers_never_see_a_partial_textfile(registry, tmp_path):
    metrics = Metrics(registry)
    path = tmp_path / "reaper.prom"
    write_textfile(registry, path)
    done = threading.Event()
    torn: list[str] = []

    def read_until_done() -> None:
        while not done.is_set():
            text = path.read_text()
            if not text.endswith("\n") or "reaper_build_info" not in text:
                torn.append(text)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(100):
            metrics.record_backend_sweep(sweep(backend=f"backend-{i % 3}"))
            write_textfile(registry, path)
    finally:
        done.set()
        reader.join()
    assert torn == []

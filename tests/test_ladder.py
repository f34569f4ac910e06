"""Warn, wait, then cancel, through the CLI against the emulators (issue 14): grace periods
recorded in the audit log, notices batched per sweep/notifier/event through apprise to a local
JSON webhook and a local SMTP server, `cleared` for a job that stopped matching, notifiers that
fail or hang, `require_notice`, and no notifier secret anywhere.

Time: the sweeps' clock is `reaper.engine.runtime.utc_now`, replaced per sweep (no sleeping);
the emulators' jobs carry wall-clock times, so "two hours later" makes them two hours older."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reaper.audit.writer import AuditLog
from reaper.emulators.world import World, emulated_world
from reaper.engine import runtime
from reaper.engine.notices import format_due
from reaper.engine.sender import NoticeSender
from reaper.engine.sweep import run_sweep
from reaper.policy.config import load_all
from tests.e2e_support import (
    CANCELLED,
    audit_records,
    job_id,
    job_keys,
    mutating_calls,
    run_cli,
    run_once,
    running,
    status_of,
)
from tests.notify_support import JsonReceiver, body_text, json_receiver, smtp_receiver, wait_until

SECRET = "hunter2-Zq8xWv3kTT"  # the webhook's password: must never be seen anywhere
HOOK_ENV = "REAPER_TEST_HOOK_URL"
GRACE = timedelta(hours=2)

POLICY = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    statuses: [running]
    max_runtime: 2h
    grace: 2h
    notify: [hook, mail]
    notify_on: [warned, cancelled, cleared]
{extra}
"""


def seeds(now: float) -> dict[str, list[Any]]:
    return {
        "batch": [running("batch", "long-1", 5, now), running("batch", "long-2", 3, now),
                  running("batch", "other-1", 9, now)],
        "hpc": [running("hpc", "long-1", 5, now), running("hpc", "long-3", 4, now)],
    }  # fmt: skip


WARNED = {("batch", "batch-long-1"), ("batch", "batch-long-2"), ("hpc", "hpc-long-1"),
          ("hpc", "hpc-long-3")}  # fmt: skip
STILL_MATCHING = WARNED - {("hpc", "hpc-long-3")}


class Clock:
    """The sweeps' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(runtime, "utc_now", fake)
    return fake


def notifier_config(hook: JsonReceiver, mail_url: str, **hook_options: Any) -> dict[str, Any]:
    return {
        "notifiers": {
            "hook": {"url_env": HOOK_ENV, **hook_options},
            "mail": {"url": mail_url},
        },
        "limits": {"max_cancels_per_sweep": 100, "max_match_fraction": 1.0},
    }


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[JsonReceiver, Any]]:
    with json_receiver() as hook, smtp_receiver() as mail:
        monkeypatch.setenv(HOOK_ENV, hook.url(secret=SECRET))
        yield hook, mail


def world_with(tmp_path: Path, config: dict[str, Any], extra: str = "") -> Any:
    return emulated_world(
        tmp_path, seeds=seeds(time.time()), policies_yaml=POLICY.format(extra=extra), config=config
    )


def keys_of(world: World, event: str, **where: Any) -> set[tuple[str, str]]:
    return job_keys(audit_records(world), event, **where)


def notices(world: World, event: str, **where: Any) -> list[dict[str, Any]]:
    return [
        r for r in audit_records(world)
        if r["event"] == event and all(r.get(k) == v for k, v in where.items())
    ]  # fmt: skip


# -- acceptance 1 -------------------------------------------------------------------------------
def test_sweep_one_warns_in_one_batched_message_per_notifier_and_cancels_nothing_then_sweep_two_cancels_and_clears(  # noqa: E501
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    hook, mail = receivers
    with world_with(tmp_path, notifier_config(hook, mail.url("owner@example.com"))) as world:
        first = run_once(world)
        assert first.code == 0, first.err
        assert keys_of(world, "warned") == WARNED
        assert keys_of(world, "intent") == set() and keys_of(world, "result") == set()
        assert sum(mutating_calls(world).values()) == 0
        due = format_due(clock.now + GRACE)
        [post] = hook.wait_for(1)
        [email] = mail.wait_for(1)
        assert post["title"] == email["Subject"] == "reaper: 4 job(s) will be cancelled"
        for text in (post["message"], body_text(email)):
            for _, job in WARNED:  # each job named, with its due time
                assert any(job in line and due in line for line in text.splitlines()), job
        for record in notices(world, "warned"):
            recorded = datetime.fromisoformat(record["due"])
            assert abs(recorded - (clock.now + GRACE)) < timedelta(milliseconds=1)
        assert {r["notifier"] for r in notices(world, "notified", notice="warned")} == {
            "hook", "mail"}  # fmt: skip

        world.emulators["hpc"].set_status(job_id("hpc", "long-3"), "FINISHED")
        clock.advance(GRACE + timedelta(minutes=1))
        second = run_once(world)
        assert second.code == 0, second.err
        assert keys_of(world, "result", outcome="cancelled") == STILL_MATCHING
        for backend, job in STILL_MATCHING:
            assert status_of(world, backend, job.split("-", 1)[1]) == CANCELLED[backend]
        assert keys_of(world, "cleared") == {("hpc", "hpc-long-3")}
        assert status_of(world, "hpc", "long-3") == "FINISHED"
        posts = hook.wait_for(3)
        titles = sorted(p["title"] for p in posts[1:])
        assert titles == ["reaper: 1 warning(s) withdrawn, no cancel", "reaper: 3 job(s) cancelled"]
        cancelled = next(p for p in posts[1:] if "cancelled" in p["title"])
        assert all(job in cancelled["message"] for _, job in STILL_MATCHING)
        assert "hpc-long-3" not in cancelled["message"]
        assert len(mail.wait_for(3)) == 3


def test_a_warned_job_is_not_cancelled_before_its_due_time(
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    hook, mail = receivers
    with world_with(tmp_path, notifier_config(hook, mail.url())) as world:
        assert run_once(world).code == 0
        clock.advance(GRACE - timedelta(minutes=1))
        assert run_once(world).code == 0
        assert keys_of(world, "result") == set()
        held = notices(world, "skipped", cause="grace")
        assert {(r["backend"], r["job_id"]) for r in held} == WARNED
        assert len(hook.wait_for(1)) == 1  # no second warning: warned once
        assert len(notices(world, "warned")) == 4


# -- acceptance 2 -------------------------------------------------------------------------------
def sweep_env_for(world: World, sender: NoticeSender, audit: AuditLog, clock: Clock) -> Any:
    from reaper.engine.runtime import open_backends, routing_from, sweep_env

    config, policies = load_all(world.config_path)
    opened = open_backends(config)
    routing = routing_from(config, os.environ)
    env = sweep_env(config, policies, opened.backends, audit, clock=clock, routing=routing,
                    sender=sender)  # fmt: skip
    return env, opened


def test_a_hanging_notifier_never_delays_the_cancels_and_is_audited_notify_failed(
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    _, mail = receivers
    with json_receiver("hang") as hanging:
        # 60 s per attempt, one retry: a sweep that waited for it would take minutes.
        config = notifier_config(hanging, mail.url(), timeout="60s", retries=1)
        config["notifiers"]["hook"] = {"url": hanging.url(), "timeout": "60s", "retries": 1}
        with world_with(tmp_path, config) as world, AuditLog(world.audit_path) as audit:
            sender = NoticeSender(audit)
            env, opened = sweep_env_for(world, sender, audit, clock)
            try:
                run_sweep(env)  # warns; the warned notice hangs in the notifier thread
                assert wait_until(lambda: hanging.attempts >= 1, 15)
                clock.advance(GRACE + timedelta(minutes=1))
                started = time.monotonic()
                report = run_sweep(env)
                elapsed = time.monotonic() - started
            finally:
                opened.close()
            assert sum(r.outcomes["cancelled"] for r in report.backends.values()) == 4
            assert elapsed < 30, f"the sweep waited {elapsed:.0f}s for a notifier"
            assert not notices(world, "notified", notifier="hook")  # still hanging
            hanging.release.set()  # the hung requests end without an answer
            assert sender.flush(60)
            sender.close()
        failed = notices(world, "notify_failed", notifier="hook")
        assert {r["notice"] for r in failed} >= {"warned"}
        assert all(r["attempts"] == 2 for r in failed)
        assert sender.failures["hook"] == len(failed)
        assert len(notices(world, "notified", notifier="mail")) >= 2  # the other one is fine


def test_a_notifier_answering_500_is_retried_audited_and_counted(
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    hook, mail = receivers
    hook.mode = "fail"
    with world_with(tmp_path, notifier_config(hook, mail.url(), retries=2)) as world:
        result = run_once(world)
        assert result.code == 0
        [failed] = notices(world, "notify_failed", notifier="hook")
        assert failed["notice"] == "warned" and failed["attempts"] == 3
        assert {tuple(job) for job in failed["jobs"]} == WARNED
        assert hook.attempts == 3
        assert "notice warned to hook" in result.err  # logged, by notifier name


def test_require_notice_holds_the_cancel_until_a_warned_notice_is_delivered(
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    hook, mail = receivers
    hook.mode = "fail"
    config = notifier_config(hook, mail.url(), retries=0)
    policy = POLICY.replace("notify: [hook, mail]", "notify: [hook]").format(
        extra="    require_notice: true"
    )
    with emulated_world(tmp_path, seeds=seeds(time.time()), policies_yaml=policy,
                        config=config) as world:  # fmt: skip
        assert run_once(world).code == 0  # warns; the notice fails
        clock.advance(GRACE + timedelta(minutes=1))
        assert run_once(world).code == 0  # due, but nobody has heard: held, warned again
        assert keys_of(world, "result") == set()
        assert {(r["backend"], r["job_id"]) for r in notices(world, "skipped",
                cause="notice_pending")} == WARNED  # fmt: skip
        assert len(notices(world, "notify_failed", notice="warned")) == 2
        hook.mode = "ok"
        clock.advance(timedelta(minutes=5))
        assert run_once(world).code == 0  # the warned notice gets through now
        assert keys_of(world, "result") == set()
        assert notices(world, "notified", notice="warned")
        clock.advance(timedelta(minutes=5))
        assert run_once(world).code == 0
        assert keys_of(world, "result", outcome="cancelled") == WARNED


# -- acceptance 5 -------------------------------------------------------------------------------
def test_no_notifier_secret_in_logs_audit_plan_json_or_validate(
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    hook, mail = receivers
    with world_with(tmp_path, notifier_config(hook, mail.url())) as world:
        config = str(world.config_path)
        outputs = [
            run_cli("--log-level", "DEBUG", "validate", "--config", config),
            run_cli("--log-level", "DEBUG", "plan", "--json", "--config", config),
            run_cli("--log-level", "DEBUG", "run", "--once", "--config", config),
        ]
        hook.mode = "fail"  # failures are logged and audited too
        clock.advance(GRACE + timedelta(minutes=1))
        outputs.append(run_cli("--log-level", "DEBUG", "run", "--once", "--config", config))
        assert [o.code for o in outputs] == [0, 0, 0, 0], [o.err for o in outputs]
        assert notices(world, "notify_failed", notifier="hook")
        assert json.loads(outputs[1].out)["decisions"]  # the plan did show the warnings
        texts = [o.out + o.err for o in outputs] + [world.audit_path.read_text(encoding="utf-8")]
        for text in texts:
            assert SECRET not in text
            assert hook.url(secret=SECRET) not in text
        assert hook.attempts >= 1  # the secret URL was used, just never shown


# -- explain and plan show the ladder --------------------------------------------------------------
def test_explain_and_plan_show_the_pending_warning_and_its_due_time(
    tmp_path: Path, clock: Clock, receivers: tuple[JsonReceiver, Any]
) -> None:
    hook, mail = receivers
    with world_with(tmp_path, notifier_config(hook, mail.url())) as world:
        config = str(world.config_path)
        before = json.loads(run_cli("explain", "batch", "batch-long-1", "--json",
                                    "--config", config).out)  # fmt: skip
        assert before["decision"]["action"] == "warn"
        grace = next(c for c in before["guards"] if c["clause"] == "grace")
        assert grace["observed"].startswith("not warned yet") and not grace["holds"]
        assert run_once(world).code == 0
        due = clock.now + GRACE
        clock.advance(timedelta(hours=1))
        after = json.loads(run_cli("explain", "batch", "batch-long-1", "--json",
                                   "--config", config).out)  # fmt: skip
        assert after["decision"]["cause"] == "grace"
        assert datetime.fromisoformat(after["decision"]["due"]) == due.replace(
            microsecond=due.microsecond // 1000 * 1000
        )  # the audit keeps milliseconds
        grace = next(c for c in after["guards"] if c["clause"] == "grace")
        assert grace["observed"] == f"warned, due {format_due(due)}"
        planned = json.loads(run_cli("plan", "--json", "--config", config).out)
        assert {d["cause"] for d in planned["decisions"]} == {"grace"}
        assert {d["due"] for d in planned["decisions"]} == {after["decision"]["due"]}

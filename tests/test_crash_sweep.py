"""Crash consistency of `reaper run --once` under SIGKILL (docs/architecture.md, docs/audit.md,
sweep step 6).

Two lanes run side by side, each with its own emulated world (AWS Batch, Tapis and Sutro on
loopback, 20-50 ms per request) and its own audit log. Each lane starts `reaper run --once` over
and over and kills it with SIGKILL at a seeded random moment: during start-up, just after its
first record (reconciliation), while it lists, and mostly inside the intent → cancel → result
window. Doomed jobs are topped up before every round so kills keep landing during cancels.

After every kill: every line of the log is a record (a torn last line is reported by the reader
and recovered by the next writer), `reaper audit verify` exits 0, the open intents are at most
one sweep's cancels in flight, and every intent a later start-up has had the chance to reconcile
is resolved. Throughout: every cancel request that reaches an emulator finds its intent already
in the audit file. At the end, after one uninterrupted run: every intent has exactly one result
(the original, or a reconciled `unconfirmed→…` that says truthfully whether the cancel reached
the backend), every doomed job is gone, no spared job was touched, and a flipped byte is named
by line.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reaper import cli
from reaper.audit.reader import AuditReadResult, Record, decode_line, read_audit, unresolved_intents
from reaper.backends.aws_batch import TERMINATE_CHUNK
from reaper.emulators.base import Knobs
from reaper.emulators.world import BACKENDS, World, emulated_world
from reaper.engine.sweep import DEFAULT_CONCURRENCY
from tests.crash_support import (
    ENDING,
    POLICIES_YAML,
    AuditTail,
    CancelCall,
    JobPool,
    KillPhase,
    Round,
    pick_kill,
    run_and_kill,
    run_to_completion,
    spy_on_cancels,
)

LANES = 2
KILLS_PER_LANE = 25
MAX_ROUNDS_PER_LANE = 45  # rounds whose child finished before the kill do not count
LATENCY_S = {"batch": 0.02, "hpc": 0.03, "inference": 0.05}
# Cancels take effect at once (cancel_delay_s 0): with asynchronous cancels a job whose cancel
# reached the backend is still running when the next start-up looks it up, reconciliation
# records `unconfirmed→failed`, and `assert_reconciled_truthfully` could not hold.
UNCONFIRMED = "unconfirmed→"
# What a reconciled result must carry over from its intent, so that it explains itself.
EXPLAINED = ("policy", "policy_file", "policy_sha256", "job_name", "queue", "reason", "type")


@dataclass
class Lane:
    """One world, its audit log and what was observed in it."""

    world: World
    tail: AuditTail
    calls: list[CancelCall]
    pool: JobPool
    rounds: list[Round] = field(default_factory=list)
    torn_lines: set[int] = field(default_factory=set)  # torn last lines seen after kills
    reconciled_before: int = 0  # lines before the latest child that got past reconciliation

    @property
    def kills(self) -> int:
        return sum(r.killed for r in self.rounds)


@pytest.mark.slow  # about 30 s: 50 kills of a real `reaper run --once` subprocess
def test_sigkill_anywhere_in_a_sweep_leaves_an_explainable_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    folders = [tmp_path / f"lane{i}" for i in range(LANES)]
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        lanes = list(pool.map(run_lane, folders, range(LANES)))
    for lane, seed in zip(lanes, range(LANES), strict=True):
        assert_tampering_is_named(lane.world.audit_path, tmp_path, random.Random(seed), capsys)
    phases = Counter(r.phase for lane in lanes for r in lane.rounds)
    kills = sum(lane.kills for lane in lanes)
    assert kills >= LANES * KILLS_PER_LANE
    assert phases[KillPhase.WINDOW] >= 10
    assert phases[KillPhase.STARTUP] + phases[KillPhase.RECONCILE] >= 1
    with capsys.disabled():
        print_summary(lanes, phases, time.monotonic() - started)


def run_lane(folder: Path, seed: int) -> Lane:
    """Kill `reaper run --once` until KILLS_PER_LANE kills landed, checking the log after each;
    then run it to completion and check the whole story."""
    folder.mkdir()
    knobs = {name: Knobs(latency_s=LATENCY_S[name]) for name in BACKENDS}
    with emulated_world(
        folder, seeds={}, policies_yaml=POLICIES_YAML, knobs=knobs, apply_env=False
    ) as world:
        tail = AuditTail(world.audit_path)
        lane = Lane(world, tail, spy_on_cancels(world, tail), JobPool(world))
        lane.pool.seed_spared()
        rng = random.Random(seed)
        while lane.kills < KILLS_PER_LANE and len(lane.rounds) < MAX_ROUNDS_PER_LANE:
            lane.pool.top_up()
            anchor, delay = pick_kill(rng)
            done = run_and_kill(world, tail, anchor, delay, folder / "stderr.txt")
            lane.rounds.append(done)
            check_after_kill(lane, done, folder / "stderr.txt")
        finish_and_check(lane)
    return lane


def check_after_kill(lane: Lane, done: Round, stderr: Path) -> None:
    assert done.killed or done.returncode == 0, stderr.read_text(errors="replace")
    path = lane.world.audit_path
    assert_every_cancel_announced(lane.calls)
    if not path.exists():  # killed before it opened the log: nothing may have happened yet
        assert lane.calls == []
        return
    log = read_complete_log(path, lane.torn_lines)
    assert cli.main(["audit", "verify", "--file", str(path)]) == 0
    if done.reached_sweep:  # its start-up reconciled every intent written before it started
        lane.reconciled_before = done.start_line
    unresolved = unresolved_with_lines(log)
    open_lines = [line for line, _ in unresolved]
    assert all(line > lane.reconciled_before for line in open_lines), (
        f"intents on lines {open_lines} survived the start-up reconciliation of a later run "
        f"(lines up to {lane.reconciled_before})"
    )
    # Only the cancels in flight when the kill landed can be open: the intent window is bounded,
    # per backend, by the calls in flight and the jobs one call carries (AWS TerminateJobs).
    open_per_backend = Counter(str(record["backend"]) for _, record in unresolved)
    for name, kind in BACKENDS.items():
        per_call = TERMINATE_CHUNK if kind == "aws_batch" else 1
        assert open_per_backend[name] <= DEFAULT_CONCURRENCY * per_call


def read_complete_log(path: Path, torn_lines: set[int]) -> AuditReadResult:
    """Every line is a record, except a torn last line (reported by the reader, remembered in
    `torn_lines`) or an earlier torn last line that a later writer ended and skipped."""
    log = read_audit(path)
    count = path.read_bytes().count(b"\n") + (not path.read_bytes().endswith(b"\n"))
    assert log.errors == []
    assert set(log.recovered_lines) <= torn_lines
    unexplained = set(range(1, count + 1)) - set(log.line_numbers) - set(log.recovered_lines)
    if log.torn_line is not None:
        assert unexplained == {log.torn_line} == {count}
        torn_lines.add(count)
    else:
        assert unexplained == set()
    return log


def unresolved_with_lines(log: AuditReadResult) -> list[tuple[int, Record]]:
    lines = {id(record): line for record, line in zip(log.records, log.line_numbers, strict=True)}
    return [(lines[id(record)], record) for record in unresolved_intents(log.records)]


def assert_every_cancel_announced(calls: list[CancelCall]) -> None:
    unannounced = [c for c in calls if not c.announced]
    assert not unannounced, (
        f"{len(unannounced)} cancel requests came before their intent, e.g. "
        + (f"{unannounced[:3]}")
    )


def finish_and_check(lane: Lane) -> None:
    """One uninterrupted run, then the whole log and the emulators' job tables."""
    finished = run_to_completion(lane.world)
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")
    lane.tail.refresh()
    path = lane.world.audit_path
    log = read_complete_log(path, lane.torn_lines)
    assert log.torn_line is None
    assert cli.main(["audit", "verify", "--file", str(path)]) == 0
    assert unresolved_intents(log.records) == []
    assert_one_result_per_intent(log)
    assert_reconciled_truthfully(log, lane.calls)
    assert_every_cancel_announced(lane.calls)
    assert_job_tables(lane)


def key_of(record: Record) -> tuple[str, str, str]:
    return (str(record["sweep_id"]), str(record["backend"]), str(record["job_id"]))


def assert_one_result_per_intent(log: AuditReadResult) -> None:
    """Each non-dry-run intent is followed by exactly one result for its (sweep, backend, job),
    and no such result comes without an intent before it."""
    intents: set[tuple[str, str, str]] = set()
    results: Counter[tuple[str, str, str]] = Counter()
    for record in log.records:
        if record.get("dry_run"):
            continue
        if record["event"] == "intent":
            intents.add(key_of(record))
        elif record["event"] == "result":
            assert key_of(record) in intents, f"result without an intent before it: {record}"
            results[key_of(record)] += 1
    assert set(results) == intents
    assert set(results.values()) == {1}


def assert_reconciled_truthfully(log: AuditReadResult, calls: list[CancelCall]) -> None:
    """A reconciled result says `unconfirmed→cancelled` exactly when a cancel request for the job
    reached the backend between the intent and the reconciliation, else `unconfirmed→failed`
    (the job was still running; the next sweep decides afresh)."""
    intents: dict[tuple[str, str, str], tuple[int, Record]] = {}
    for line, record in zip(log.line_numbers, log.records, strict=True):
        if record["event"] == "intent" and not record.get("dry_run"):
            intents[key_of(record)] = (line, record)
        outcome = str(record.get("outcome", ""))
        if record["event"] != "result" or not outcome.startswith(UNCONFIRMED):
            continue
        since, intent = intents[key_of(record)]
        assert {k: record[k] for k in EXPLAINED} == {k: intent[k] for k in EXPLAINED}
        reached = any(
            (c.backend, c.job_id) == key_of(record)[1:]
            and c.operation in ENDING[c.backend]
            and since <= c.line < line
            for c in calls
        )
        expected = UNCONFIRMED + ("cancelled" if reached else "failed")
        assert outcome == expected, f"line {line}: {record}"


def assert_job_tables(lane: Lane) -> None:
    """Every doomed job was cancelled in the end, except those the re-cancel window holds
    because start-up reconciled their interrupted cancel while they were still active (an
    asynchronous cancel may be winding them down); no spared job was touched; every job that a
    cancel request reached had a non-dry-run intent."""
    pool = lane.pool
    held = {
        (r["backend"], r["job_id"])
        for r in read_audit(lane.world.audit_path).records
        if r["event"] == "result" and r.get("outcome") == UNCONFIRMED + "failed"
    }
    for backend in BACKENDS:
        still = [j for j in pool.doomed[backend] if pool.is_active(backend, j)]
        unheld = [j for j in still if (backend, j) not in held]
        assert unheld == [], f"{backend}: doomed jobs survived the final run"
        touched = [j for j in pool.spared[backend] if not pool.is_active(backend, j)]
        assert touched == [], f"{backend}: spared jobs were cancelled"
        reached = {c.job_id for c in lane.calls if c.backend == backend}
        assert not reached & set(pool.spared[backend])
        assert all(lane.tail.has_intent(backend, j) for j in reached)


def assert_tampering_is_named(
    path: Path, folder: Path, rng: random.Random, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flip one byte of one record (not the newest, which nothing after it protects) in a copy:
    `reaper audit verify` exits 1 and names that line."""
    copy = folder / f"tampered-{path.parent.name}.jsonl"
    shutil.copyfile(path, copy)
    line = flip_one_byte(copy, rng)
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--file", str(copy)]) == 1
    assert f"{copy}:{line}:" in capsys.readouterr().out


def flip_one_byte(path: Path, rng: random.Random) -> int:
    """Flip the lowest bit of one byte of a random record other than the last; returns its
    1-based line number. The byte never becomes a newline, so the line count stays."""
    lines = path.read_bytes().split(b"\n")[:-1]
    index = rng.choice([i for i, raw in enumerate(lines[:-1]) if decode_line(raw) is not None])
    data = bytearray(lines[index])
    position = rng.randrange(len(data))
    data[position] ^= 0x01 if data[position] != 0x0B else 0x02
    lines[index] = bytes(data)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return index + 1


def print_summary(lanes: list[Lane], phases: Counter[KillPhase], wall_s: float) -> None:
    """For the report: where the kills landed and what reconciliation recorded."""
    outcomes: Counter[str] = Counter()
    for lane in lanes:
        for record in read_audit(lane.world.audit_path).records:
            if str(record.get("outcome", "")).startswith(UNCONFIRMED):
                outcomes[record["outcome"]] += 1
    rounds = sum(len(lane.rounds) for lane in lanes)
    calls = sum(len(lane.calls) for lane in lanes)
    torn = sum(len(lane.torn_lines) for lane in lanes)
    kills = sum(lane.kills for lane in lanes)
    print(f"\ncrash sweep: {rounds} rounds, {kills} kills, {wall_s:.1f} s")
    by_anchor = Counter((r.anchor, r.phase) for lane in lanes for r in lane.rounds)
    for phase in KillPhase:
        anchors = ", ".join(f"{a}: {n}" for (a, p), n in sorted(by_anchor.items()) if p is phase)
        print(f"  {phase}: {phases[phase]} ({anchors or '-'})")
    print(f"  mutating requests: {calls}; torn last lines: {torn}; reconciled: {dict(outcomes)}")

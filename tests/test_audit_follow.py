"""The writer follows its file (docs/audit.md, "The writer follows its file"): an audit log
deleted or renamed while a sweep is cancelling is reopened at the path before the next record,
so every later cancel call has its intent in the file at the path, and the chain verifies across
the old file and the new one."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reaper.audit.reader import decode_line, read_audit
from reaper.audit.verify import verify_audit
from reaper.emulators.base import JobSpec, Request, Response
from reaper.emulators.world import World
from tests.crash_support import MUTATING, job_ids_of
from tests.e2e_support import NAMES, run_once, running, same_knobs, standard_world

DOOMED = 20  # per backend
HEALTHY = 25  # keeps the doomed under the fraction guard
TRIGGER_AT = 5  # the cancel call at which the file is taken away


def seeds() -> dict[str, list[JobSpec]]:
    now = time.time()
    return {
        backend: [running(backend, f"long-{n}", 5, now) for n in range(DOOMED)]
        + [running(backend, f"other-{n}", 9, now) for n in range(HEALTHY)]
        for backend in NAMES
    }


class Saboteur:
    """At the TRIGGER_AT-th cancel call, keeps a descriptor on the audit file and takes the path
    away (`action`); then notes, for each later cancel call, whether its intent is in the file
    now at the path."""

    def __init__(self, world: World, action: Callable[[Path], None]) -> None:
        self.world, self.action = world, action
        self.lock = threading.Lock()
        self.calls = 0
        self.old_fd: int | None = None
        self.old_size = 0
        self.late: list[tuple[str, str, bool]] = []  # (backend, job, intent at the path)
        for name, emulator in world.emulators.items():
            emulator.dispatch = self.wrap(name, emulator.route, emulator.dispatch)  # type: ignore[method-assign]

    def wrap(self, name: str, route, dispatch):  # type: ignore[no-untyped-def]
        def spy(request: Request) -> Response:
            operation = route(request)[0]
            if operation in MUTATING[name] and operation != "sendEvent":
                self.observe(name, job_ids_of(name, request))
            return dispatch(request)

        return spy

    def observe(self, backend: str, jobs: list[str]) -> None:
        with self.lock:
            self.calls += 1
            if self.old_fd is None and self.calls == TRIGGER_AT:
                path = self.world.audit_path
                self.old_fd = os.open(path, os.O_RDONLY)
                self.action(path)
                # Measured once the path is gone: appends that landed before, while the file
                # was still at the path, were right to (group commit makes them quick enough
                # to fit between an earlier measurement and the action).
                self.old_size = os.fstat(self.old_fd).st_size
                return
            if self.old_fd is None:
                return
            at_path = intents_at(self.world.audit_path)
            self.late.extend((backend, job, (backend, job) in at_path) for job in jobs)

    def old_lines(self) -> list[bytes]:
        assert self.old_fd is not None
        with os.fdopen(os.dup(self.old_fd), "rb") as file:
            file.seek(0)
            return file.read().splitlines()


def intents_at(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    found = set()
    for raw in path.read_bytes().splitlines():
        record = decode_line(raw)
        if record is not None and record.get("event") == "intent":
            found.add((record["backend"], record["job_id"]))
    return found


def check_follows(tmp_path: Path, action: Callable[[Path], None]) -> None:
    knobs = same_knobs(latency_s=0.02)
    with standard_world(tmp_path, seeds=seeds(), config={"dry_run": False}, knobs=knobs) as world:
        saboteur = Saboteur(world, action)
        result = run_once(world)
        assert result.code == 0, result.out + result.err
        assert saboteur.old_fd is not None, "the sweep made fewer cancel calls than expected"
        old = saboteur.old_lines()
        # Records the old file got after the moment: at most the one append that had already
        # checked the path when it was taken away (appends are serialised).
        after = [line for line in old if line][len(old_records_before(old, saboteur.old_size)) :]
        assert len(after) <= 1, [json.loads(line)["event"] for line in after]
        # From then on every cancel call found its intent in the file at the path, but the
        # calls whose intents were written before the moment (at most the calls in flight).
        missing = [(b, j) for b, j, found in saboteur.late if not found]
        announced_before = intents_in(old)
        assert all(key in announced_before for key in missing), missing
        assert saboteur.late and any(found for _, _, found in saboteur.late)
        # The chain verifies across the old file and the new one.
        copy = tmp_path / "old.jsonl"
        copy.write_bytes(b"".join(line + b"\n" for line in old))
        verdict = verify_audit([copy, world.audit_path])
        assert verdict.ok, verdict.message
        everything = intents_in(old) | intents_at(world.audit_path)
        assert len(everything) == DOOMED * len(NAMES)
        assert not read_audit(world.audit_path).errors


def old_records_before(lines: list[bytes], size: int) -> list[bytes]:
    kept, total = [], 0
    for line in lines:
        total += len(line) + 1
        if total > size:
            break
        kept.append(line)
    return kept


def intents_in(lines: list[bytes]) -> set[tuple[str, str]]:
    records = [decode_line(line) for line in lines]
    return {
        (r["backend"], r["job_id"]) for r in records if r is not None and r["event"] == "intent"
    }


@pytest.mark.parametrize("how", ["unlink", "rename"])
def test_the_writer_follows_its_file_while_a_sweep_cancels(tmp_path: Path, how: str) -> None:
    """Acceptance 2: unlink (and rename) the audit file while a sweep is cancelling."""

    def take_away(path: Path) -> None:
        if how == "unlink":
            path.unlink()
        else:
            path.rename(path.with_name(path.name + ".1"))

    check_follows(tmp_path, take_away)

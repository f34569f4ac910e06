"""The writer under SIGKILL, and under simulated power loss (a torn or NUL-filled tail).

A child process appends intent/result pairs as fast as it can and prints the number of each pair
once `append` has returned; the test kills it at a random moment, checks the file, sometimes
tears its last line the way power loss would, and starts the next child on the same file. Some
records are large so that SIGKILL can land inside a write (Linux stops a large write between
pages when a fatal signal is pending).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from reaper.audit.writer import AuditLog, read_audit, unresolved_intents, verify_audit

REPO = Path(__file__).resolve().parent.parent
KILLS = 60

CHILD = """
import random, sys
from pathlib import Path
from reaper.audit.writer import AuditLog
log = AuditLog(Path(sys.argv[1]), host="crash")
rng = random.Random(int(sys.argv[2]))
print("ready", flush=True)
pair = 0
while True:
    pair += 1
    job = {"sweep_id": sys.argv[2], "backend": "b", "job_id": str(pair)}
    log.append("intent", **job, reason="x" * (65536 if rng.random() < 0.05 else 10))
    log.append("result", **job, outcome="cancelled")
    print(pair, flush=True)
"""


def run_child_and_kill(path: Path, seed: int, rng: random.Random) -> int:
    """Start a writer, SIGKILL it after a random moment (a third of the time maybe before or
    while it opens the file); the last pair it acknowledged."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", CHILD, str(path), str(seed)]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        if rng.random() < 1 / 3:
            time.sleep(rng.uniform(0, 0.1))
        else:
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        acknowledged = [int(word) for word in child.stdout.read().split() if word != "ready"]
        child.wait()
    return acknowledged[-1] if acknowledged else 0


def simulate_power_loss(path: Path, rng: random.Random) -> None:
    """Cut the last line short, or turn its end into NULs (data blocks not yet written)."""
    data = path.read_bytes()
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    if len(data) - start < 3:  # a line of one byte (a fragment the writer ended) has no shorter cut
        return
    cut = rng.randrange(start + 1, len(data) - 1)
    tail = b"" if rng.random() < 0.5 else b"\x00" * (len(data) - cut)
    path.write_bytes(data[:cut] + tail)


def check_after_kill(path: Path, seed: int, acknowledged: int) -> None:
    """Every line is a record, a torn write a later record skipped, or the torn end."""
    result = read_audit(path)
    assert result.errors == []
    data = path.read_bytes()
    last_line = data.count(b"\n") + (not data.endswith(b"\n"))
    torn_end = range(result.torn_line or last_line + 1, last_line + 1)
    explained = set(result.line_numbers) | set(result.recovered_lines) | set(torn_end)
    assert explained == set(range(1, last_line + 1))
    assert len(torn_end) <= 2  # a fragment ended by the reopening writer, then a torn write
    verdict = verify_audit(path)
    assert verdict.ok, verdict.message
    if acknowledged:
        done = {(r["sweep_id"], r["job_id"]) for r in result.records if r["event"] == "result"}
        assert (str(seed), str(acknowledged)) in done


def test_sigkill_and_power_loss_never_break_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    rng = random.Random(20240501)
    torn = 0
    for seed in range(KILLS):
        acknowledged = run_child_and_kill(path, seed, rng)
        check_after_kill(path, seed, acknowledged)
        if rng.random() < 0.3:
            simulate_power_loss(path, rng)
            torn += 1
            assert verify_audit(path).ok
    with AuditLog(path, host="test") as log:
        log.append("sweep_start", sweep_id="after")
    final = read_audit(path)
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == len(final.records) and final.errors == []
    assert final.torn_line is None and torn > 0
    # Each kill or tear leaves at most one intent without its result, for reconciliation.
    assert len(unresolved_intents(final.records)) <= KILLS

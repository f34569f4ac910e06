"""`reaper demo`: the three emulators seeded with a realistic mix of jobs, then `plan` and one
sweep with the demo policies through the real clients, the audit chain verified. Needs no
credentials and no network beyond loopback."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from reaper.emulators.base import EmulatorServer
from reaper.emulators.seed import seed

POLICIES = Path(__file__).parent / "emulators" / "demo-policies.yaml"


@dataclass(frozen=True)
class DemoWorld:
    config_path: Path
    audit_path: Path
    emulators: Mapping[str, EmulatorServer]  # backend name → emulator


@contextmanager
def demo_world(folder: Path) -> Iterator[DemoWorld]:
    """Start and seed the emulators, write reaper.yaml and the policies into `folder`, and set
    the demo credentials in this process's environment (the SDK chains read them there)."""
    from reaper.emulators.aws_batch import ACCESS_KEY_ID, SECRET_ACCESS_KEY, AwsBatchEmulator
    from reaper.emulators.sutro import SutroEmulator
    from reaper.emulators.tapis import TapisEmulator

    with ExitStack() as stack:
        emulators: dict[str, EmulatorServer] = {
            "batch": AwsBatchEmulator(),
            "hpc": TapisEmulator(),
            "inference": SutroEmulator(),
        }
        for emulator in emulators.values():
            stack.enter_context(emulator)
        now = time.time()
        for name, kind in (("batch", "aws_batch"), ("hpc", "tapis"), ("inference", "sutro")):
            seed(emulators[name], kind, now)
        stack.enter_context(_environment({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
            "REAPER_DEMO_TAPIS_TOKEN": emulators["hpc"].token,  # type: ignore[attr-defined]
            "REAPER_DEMO_SUTRO_KEY": emulators["inference"].api_key,  # type: ignore[attr-defined]
        }))  # fmt: skip
        config_path = _write_config(folder, emulators)
        yield DemoWorld(config_path, folder / "audit.jsonl", emulators)


def _write_config(folder: Path, emulators: Mapping[str, EmulatorServer]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policies").mkdir(exist_ok=True)
    shutil.copyfile(POLICIES, folder / "policies" / "demo.yaml")
    config = folder / "reaper.yaml"
    config.write_text(
        f"""# Written by `reaper demo`: the emulators on loopback, acting for real on fake jobs.
policies: policies/
audit_log: audit.jsonl
dry_run: false
limits:
  max_cancels_per_sweep: 100
  max_match_fraction: 0.5
backends:
  batch:
    type: aws_batch
    region: us-east-1
    endpoint_url: {emulators["batch"].url}
  hpc:
    type: tapis
    base_url: {emulators["hpc"].url}
    token_env: REAPER_DEMO_TAPIS_TOKEN
  inference:
    type: sutro
    api_url: {emulators["inference"].url}
    api_key_env: REAPER_DEMO_SUTRO_KEY
""",
        encoding="utf-8",
    )
    return config


@contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(saved)


def _apply(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

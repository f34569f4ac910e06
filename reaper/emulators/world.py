"""A ready-made world for the demo, the tests and the benchmarks: the three emulators on
loopback, seeded, plus a `reaper.yaml` and policies in a folder that point at them.

The credentials the clients need (AWS keys, Tapis token, Sutro key) are emulator values; they are
returned in `World.environ` for a subprocess and, with `apply_env=True`, set in this process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reaper.emulators.base import EmulatorServer, JobSpec, Knobs
from reaper.emulators.seed import SEEDS

DEMO_POLICIES = Path(__file__).parent / "demo-policies.yaml"
# Backend name in the generated reaper.yaml → its type.
BACKENDS = {"batch": "aws_batch", "hpc": "tapis", "inference": "sutro"}


@dataclass(frozen=True)
class World:
    folder: Path
    config_path: Path
    audit_path: Path
    emulators: Mapping[str, EmulatorServer]  # backend name → emulator
    environ: Mapping[str, str | None]  # what a process needs to reach the emulators (None = unset)


def start_emulator(backend_type: str, knobs: Knobs | None = None) -> EmulatorServer:
    """Build and start the emulator of `backend_type`."""
    if backend_type == "aws_batch":
        from reaper.emulators.aws_batch import AwsBatchEmulator

        return AwsBatchEmulator(knobs).start()
    if backend_type == "tapis":
        from reaper.emulators.tapis import TapisEmulator

        return TapisEmulator(knobs).start()
    from reaper.emulators.sutro import SutroEmulator

    return SutroEmulator(knobs).start()


@contextmanager
def emulated_world(
    folder: Path,
    *,
    seeds: Mapping[str, Iterable[JobSpec]] | None = None,
    policies_yaml: str | None = None,
    config: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Knobs] | None = None,
    apply_env: bool = True,
) -> Iterator[World]:
    """Start the emulators of `BACKENDS`, seed them (default: the demo mix of
    `reaper.emulators.seed`), write `reaper.yaml` (top-level keys of `config` override the
    defaults: dry_run false, audit.jsonl in `folder`) and the policies (default: the demo's)."""
    knobs = knobs or {}
    with ExitStack() as stack:
        emulators = {name: start_emulator(kind, knobs.get(name)) for name, kind in BACKENDS.items()}
        for emulator in emulators.values():
            stack.callback(emulator.stop)
        now = time.time()
        for name, kind in BACKENDS.items():
            specs = SEEDS[kind](now) if seeds is None else seeds.get(name, ())
            for spec in specs:
                emulators[name].add_job(spec)
        environ = _credentials(emulators)
        if apply_env:
            stack.enter_context(patched_environ(environ))
        config_path = write_config(folder, emulators, policies_yaml, config or {})
        yield World(folder, config_path, folder / "audit.jsonl", emulators, environ)


def write_config(
    folder: Path,
    emulators: Mapping[str, EmulatorServer],
    policies_yaml: str | None,
    overrides: Mapping[str, Any],
) -> Path:
    """Write `folder/reaper.yaml` and `folder/policies/policies.yaml`; returns the config path."""
    (folder / "policies").mkdir(parents=True, exist_ok=True)
    text = DEMO_POLICIES.read_text(encoding="utf-8") if policies_yaml is None else policies_yaml
    (folder / "policies" / "policies.yaml").write_text(text, encoding="utf-8")
    config: dict[str, Any] = {
        "policies": "policies/",
        "audit_log": "audit.jsonl",
        "dry_run": False,
        "limits": {"max_cancels_per_sweep": 100, "max_match_fraction": 0.5},
        "backends": {
            "batch": {"type": "aws_batch", "region": "us-east-1",
                      "endpoint_url": emulators["batch"].url},
            "hpc": {"type": "tapis", "base_url": emulators["hpc"].url,
                    "token_env": "REAPER_DEMO_TAPIS_TOKEN"},
            "inference": {"type": "sutro", "api_url": emulators["inference"].url,
                          "api_key_env": "REAPER_DEMO_SUTRO_KEY"},
        },
    }  # fmt: skip
    config.update(overrides)
    path = folder / "reaper.yaml"
    header = "# Written for the emulators on loopback: real clients, make-believe jobs.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _credentials(emulators: Mapping[str, EmulatorServer]) -> dict[str, str | None]:
    from reaper.emulators.aws_batch import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
        "REAPER_DEMO_TAPIS_TOKEN": emulators["hpc"].token,  # type: ignore[attr-defined]
        "REAPER_DEMO_SUTRO_KEY": emulators["inference"].api_key,  # type: ignore[attr-defined]
    }  # fmt: skip


def child_environ(world: World, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) with the world's credentials applied, for a subprocess."""
    env = dict(os.environ if base is None else base)
    for key, value in world.environ.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or unset, for None) environment variables, restoring them afterwards."""
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

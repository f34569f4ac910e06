"""The backends: one module per job service behind the `Backend` protocol (`base`), and the
registry from the YAML `type` string to the class, imported only when configured, so that
`reaper validate` never pays for importing boto3 or tapipy. Calls, permissions and limits:
docs/backends.md.

May import: the ground (`reaper.jobs`, `reaper.errors`, `reaper.redact`) and the SDKs; the only
part that imports boto3, botocore, tapipy or requests."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reaper.backends.base import Backend

REGISTRY: Mapping[str, str] = {
    "aws_batch": "reaper.backends.aws_batch:AwsBatchBackend",
    "tapis": "reaper.backends.tapis:TapisBackend",
    "sutro": "reaper.backends.sutro:SutroBackend",
}


def backend_class(type_name: str) -> Any:
    """Import and return the backend class registered for `type_name`."""
    module_name, _, class_name = REGISTRY[type_name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_backend(name: str, section: Mapping[str, Any], base_dir: Path) -> Backend:
    """Build the backend named `name` from its `reaper.yaml` section (which holds `type`)."""
    cls = backend_class(section["type"])
    backend: Backend = cls.from_config(name, section, base_dir)
    return backend

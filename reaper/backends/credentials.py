"""Secrets named in a backend section: an environment variable or a file (a systemd
`LoadCredential=` path, say). Never the secret itself in YAML, never the secret in an error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reaper.errors import BackendError
from reaper.redact import register_secret
from reaper.untrusted import RefusedFile, read_bounded

MAX_SECRET_BYTES = 64 * 1024  # a token or key is a few kB at most


def read_secret(
    name: str,
    section: Mapping[str, Any],
    base_dir: Path,
    environ: Mapping[str, str],
    *,
    env_key: str,
    file_key: str,
) -> str | None:
    """The secret from the variable named by `section[env_key]` or the file `section[file_key]`
    (relative to `base_dir`), stripped and registered for log redaction; None when neither key
    is set. Raises BackendError naming the variable or file, never the value, when the source
    is unset, unreadable or empty."""
    if env := section.get(env_key):
        secret = environ.get(str(env), "").strip()
        if not secret:
            raise BackendError(name, f"environment variable {env} ({env_key}) is empty or unset")
    elif file := section.get(file_key):
        path = base_dir / str(file)
        secret = _read_secret_file(name, file_key, path)
        if not secret:
            raise BackendError(name, f"{file_key} {path} is empty")
    else:
        return None
    register_secret(secret)
    return secret


def _read_secret_file(name: str, file_key: str, path: Path) -> str:
    """The file's text, stripped. A FIFO, a device, a huge file or bytes that are not UTF-8
    fail this backend only, with a BackendError that names the file (never its content)."""
    try:
        raw = read_bounded(path, MAX_SECRET_BYTES)
    except OSError as exc:
        raise BackendError(name, f"cannot read {file_key} {path}: {exc.strerror}") from None
    except RefusedFile as exc:
        raise BackendError(name, f"cannot read {file_key} {path}: {exc}") from None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        message = f"{file_key} {path} is not UTF-8 text (byte {exc.start + 1}): save it as UTF-8"
        raise BackendError(name, message) from None

"""What protects the newest records (docs/audit.md, "The head and the key"): the head file
`<audit_log>.head`, and with `audit_key_file:` an HMAC-SHA256 `mac` on every record and on the
head.

The hash chain alone cannot tell a log whose last lines were cut from a shorter log, nor a
forged record appended with a correct `prev` from a true one. The head file names the newest
record the writer knew of (its sha256) and how many records the file held then, replaced
atomically after every sweep and at exit: a log that ends before it was cut. The key makes both
unforgeable by anyone who can write the log but not read the key.

`mac` is always the last key of a line: `…,"prev":"…","mac":"<64 hex>"}`, computed over the
line as it would be without it (`…,"prev":"…"}`), so a reader strips it textually and needs no
canonical re-encoding. `prev` of the next record hashes the whole line, mac included."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reaper.errors import ReaperError

HEAD_SUFFIX = ".head"
HEAD_MODE = 0o640
MIN_KEY_BYTES = 16
_MAC_TAIL = re.compile(rb',"mac":"([0-9a-f]{64})"\}$')


class AuditKeyError(ReaperError):
    """The audit key file cannot be read or is too short to be a key."""


def head_path(audit_log: Path) -> Path:
    """`<audit_log>.head`."""
    return audit_log.with_name(audit_log.name + HEAD_SUFFIX)


def load_key(path: Path) -> bytes:
    """The key's bytes, surrounding whitespace stripped (a trailing newline is not part of a
    key). Raises AuditKeyError if the file cannot be read or holds fewer than 16 bytes."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise AuditKeyError(f"cannot read audit_key_file {path}: {exc.strerror or exc}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(f"audit_key_file {path}: a key needs at least {MIN_KEY_BYTES} bytes")
    return key


def compute_mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def seal_line(key: bytes, line: bytes) -> bytes:
    """A record's line (ending in `}` and a newline) with its `mac` appended as the last key."""
    body = line.rstrip(b"\n")
    mac = compute_mac(key, body)
    return body[:-1] + b',"mac":"' + mac.encode("ascii") + b'"}\n'


def check_line_mac(key: bytes, raw: bytes) -> str | None:
    """None if the line (without its newline) carries a correct `mac`; else what is wrong."""
    found = _MAC_TAIL.search(raw)
    if found is None:
        return "no `mac` (every record needs one when a key is configured)"
    body = raw[: found.start()] + b"}"
    if not hmac.compare_digest(found.group(1).decode("ascii"), compute_mac(key, body)):
        return "wrong `mac`: the record was not written with this key"
    return None


@dataclass(frozen=True, slots=True)
class Head:
    """The newest record a writer knew of: `records` records in the file, the last hashing to
    `sha256`."""

    records: int
    sha256: str
    ts: str


def encode_head(head: Head, key: bytes | None) -> bytes:
    body = json.dumps(
        {"records": head.records, "sha256": head.sha256, "ts": head.ts}, separators=(",", ":")
    ).encode("ascii")
    return seal_line(key, body + b"\n") if key is not None else body + b"\n"


def write_head(path: Path, head: Head, key: bytes | None) -> None:
    """Replace the head file atomically (temporary file, fsync, rename, fsync the folder), mode
    0640 whatever the umask. Raises OSError."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, HEAD_MODE)
    try:
        os.fchmod(fd, HEAD_MODE)
        os.write(fd, encode_head(head, key))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_head(path: Path, key: bytes | None) -> Head:
    """The head file's contents. Raises FileNotFoundError when there is none, ValueError when it
    is malformed or (with a key) its mac is wrong."""
    raw = path.read_bytes().rstrip(b"\n")
    if key is not None:
        problem = check_line_mac(key, raw)
        if problem is not None:
            raise ValueError(f"head file {path}: {problem}")
    data: Any = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"head file {path}: not a JSON object")
    records, sha, ts = data.get("records"), data.get("sha256"), data.get("ts")
    if not isinstance(records, int) or not isinstance(sha, str) or len(sha) != 64:
        raise ValueError(f"head file {path}: needs `records` (an integer) and `sha256`")
    return Head(records, sha, str(ts))

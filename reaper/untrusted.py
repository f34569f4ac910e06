"""Input reaper does not control: files a pull request can plant (policy folders, token files)
and strings a backend reports (job names, tags, ids, error bodies).

- `read_bounded` reads a regular file of bounded size without ever blocking: a FIFO, `/dev/zero`
  or a 10 GB file is refused, not waited on or read whole.
- `clean` makes a backend string safe to print: terminal escape sequences (`ESC[2J`, OSC titles,
  BEL), other C0/C1 controls and line breaks are shown escaped (`\\x1b`, `\\n`), so they can neither
  drive the terminal nor forge a log line, and the text is cut to a length.

Both parts of reaper that print (engine's reports, service's logs) and both that read files
(policy, backends) use these, so they live in the ground (docs/architecture.md)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

MAX_TEXT = 256  # characters of one backend string in a table or a log line
ELLIPSIS = "…"


class RefusedFile(Exception):
    """A file that is not a regular file, or is larger than the limit; the message says which."""


def read_bounded(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` bytes. Opens with O_NONBLOCK (a FIFO
    opens at once) and checks the opened file with fstat before reading; reads at most
    limit + 1 bytes. Raises RefusedFile, or OSError when the file cannot be opened or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RefusedFile(f"not a regular file ({_file_kind(mode)})")
        os.set_blocking(fd, True)  # a regular file: plain reads from here on
        data = _read_at_most(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RefusedFile(f"larger than {_size_text(limit)}")
    return data


def _read_at_most(fd: int, count: int) -> bytes:
    chunks, size = [], 0
    while size < count:
        chunk = os.read(fd, min(count - size, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")]  # fmt: skip
    return next((word for test, word in kinds if test(mode)), "a special file")


def _size_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit and limit % (1 << 20) == 0 else f"{limit} bytes"


# C0 controls (tab and line breaks included), DEL, C1 controls, and the Unicode line and
# paragraph separators and bidi overrides that also reorder or break what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object, limit: int | None = MAX_TEXT) -> str:
    """`text` as one safe line: controls escaped visibly, then cut to `limit` characters with an
    ellipsis (None: no cut). The audit log keeps the full value (JSON-escaped) instead."""
    shown = str(text)
    if limit is not None and len(shown) > limit * 4:  # a 1 MB name: cut before escaping it all
        shown = shown[: limit * 4]
    shown = _UNSAFE.sub(_escape, shown)
    return clip(shown, limit)


def clip(text: str, limit: int | None) -> str:
    """`text` cut to `limit` characters, the last one an ellipsis when anything was cut."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS if limit > 0 else ""

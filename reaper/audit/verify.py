"""`reaper audit verify`: check the hash chain of one audit file or of rotated files in order.

What the chain proves, and what it cannot: altering, inserting or deleting any record except the
newest breaks a link and is found here, named by line. The newest records are protected by the
head file and the key (reaper/audit/seal.py, docs/audit.md "The head and the key"), checked here
when given; `VerifyResult.head` (the sha256 of the last record) is printed as well. Fragments
are accepted exactly as `reaper/audit_read.py`
describes (a torn write that the next record skips, or a torn end of file) and reported.

Rotation: the first record of the first file given may continue a chain from an older file that
is no longer there (reported, since rotated files get deleted), unless fragments precede it: a
writer that finds only fragments starts at GENESIS. Each later file's first record
must chain to the previous file's last record. A later file that starts a new chain at GENESIS
(a writer that never saw the older file: a one-shot run after log rotation, or simply an
unrelated file) breaks the sequence, and fails unless the operator says that is expected
(`new_chain_ok`, `reaper audit verify --new-chain-ok`); it is then reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reaper.audit.reader import GENESIS, Line, hash_line, is_valid_prev, iter_lines
from reaper.audit.seal import Head, check_line_mac


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a chain check. On failure, `file`:`first_bad_line` is the line to look at."""

    ok: bool
    records: int  # records whose link was checked (up to the failure)
    first_bad_line: int | None
    message: str
    file: Path | None = None
    head: str | None = None  # sha256 of the last record accepted


@dataclass(frozen=True, slots=True)
class _At:
    path: Path
    index: int  # position of the file in the list (a path may be given twice)
    line: Line


@dataclass(slots=True)
class _Chain:
    files: int
    new_chain_ok: bool = False
    expected: str | None = None  # sha256 of the last accepted record
    last: _At | None = None
    records: int = 0
    notes: list[str] = field(default_factory=list)
    fragments: list[_At] = field(default_factory=list)  # since the last record, in this file
    key: bytes | None = None  # every record must carry a correct `mac`
    head: Head | None = None  # the newest record the writer knew of must be in the files
    head_seen: bool = False


def verify_audit(
    paths: Path | Sequence[Path],
    *,
    new_chain_ok: bool = False,
    head: Head | None = None,
    key: bytes | None = None,
) -> VerifyResult:
    """Check every line's JSON and every `prev` link, over `paths` in order (oldest first).
    With `new_chain_ok`, a later file may start a new chain instead of continuing the one
    before. With `head` (the head file, reaper/audit/seal.py), also fail when the files end
    before the record it names; with `key`, when a record's `mac` is missing or wrong. Raises
    OSError if a file cannot be read."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    chain = _Chain(files=len(files), new_chain_ok=new_chain_ok, key=key, head=head)
    stream = _iter_all(files)
    last: _At | None = None
    for at in stream:
        if at.line.number == 1:
            _close_file(chain)
        failure = _check(chain, at, stream)
        if failure is not None:
            return failure
        last = at
    _close_file(chain)
    if head is not None and head.records > 0 and not chain.head_seen:
        return _ends_before_head(chain, head, last, files)
    return VerifyResult(True, chain.records, None, _summary(chain), None, chain.expected)


def _ends_before_head(
    chain: _Chain, head: Head, last: _At | None, files: list[Path]
) -> VerifyResult:
    message = (
        f"the log ends before its head: the head file names a record ({head.records} records "
        f"in the file, sha256 {head.sha256[:12]}…, written {head.ts}) that is not in the "
        "files: records were cut from the end, or give the rotated files as well, oldest first"
    )
    line = last.line.number if last is not None else 0
    where = last.path if last is not None else files[-1]
    return VerifyResult(False, chain.records, line, message, where, chain.expected)


def _iter_all(files: list[Path]) -> Iterator[_At]:
    for index, path in enumerate(files):
        for line in iter_lines(path):
            yield _At(path, index, line)


def _close_file(chain: _Chain) -> None:
    """Fragments left at the end of a file are its torn last line."""
    if chain.fragments:
        first = chain.fragments[0]
        chain.notes.append(f"torn last line at {_name(first, chain)} (a write cut short)")
        chain.fragments = []


def _check(chain: _Chain, at: _At, stream: Iterator[_At]) -> VerifyResult | None:
    record = at.line.record
    if record is None:
        chain.fragments.append(at)
        return None
    prev = record.get("prev")
    if not is_valid_prev(prev):
        return _fail(chain, at, "not an audit record: `prev` is missing or not 64 hex digits")
    if chain.key is not None and (problem := check_line_mac(chain.key, at.line.raw)):
        return _fail(chain, at, problem)
    if _starts_unexpected_chain(chain, at, str(prev)):
        assert chain.last is not None
        message = (
            f"starts a new chain instead of continuing {_name(chain.last, chain)}: the files are "
            "unrelated, out of order or one is missing; if this file really starts a new chain "
            "(a one-shot run after rotation), give --new-chain-ok"
        )
        return _fail(chain, at, message)
    if not _links(chain, at, str(prev)):
        return _blame(chain, at, stream)
    if chain.head is not None and chain.head.sha256 in (prev, hash_line(at.line.raw)):
        chain.head_seen = True
    for fragment in chain.fragments:
        chain.notes.append(f"recovered torn write at {_name(fragment, chain)}")
    chain.fragments = []
    chain.expected, chain.last = hash_line(at.line.raw), at
    chain.records += 1
    return None


def _starts_unexpected_chain(chain: _Chain, at: _At, prev: str) -> bool:
    """A later file's first record at GENESIS, not allowed by the operator."""
    first_record_in_file = chain.last is not None and chain.last.index != at.index
    return first_record_in_file and prev == GENESIS and not chain.new_chain_ok


def _links(chain: _Chain, at: _At, prev: str) -> bool:
    """Does this record's `prev` continue the chain? Notes how each file's chain starts."""
    first_record_in_file = chain.last is None or chain.last.index != at.index
    if not first_record_in_file:
        return prev == chain.expected
    where = at.path.name if chain.files > 1 else "the file"
    last_file = chain.last.path.name if chain.last is not None else "the earlier file"
    if prev == GENESIS:
        if chain.expected is not None:
            chain.notes.append(f"{where} starts a new chain (its writer did not see {last_file})")
        return True
    if chain.expected is None and not chain.fragments:
        chain.notes.append(f"{where} continues a chain from an earlier file (prev {prev[:12]}…)")
        return True
    return prev == chain.expected


def _blame(chain: _Chain, at: _At, stream: Iterator[_At]) -> VerifyResult:
    """Name the line most likely altered when `at` does not link to the last record."""
    if chain.fragments:
        return _fail(
            chain, chain.fragments[0], "not a JSON object, and the next record does not skip it"
        )
    assert chain.last is not None  # the first record always links
    last, here = _name(chain.last, chain), _name(at, chain)
    if chain.last.index != at.index:
        return _fail(
            chain,
            at,
            f"does not continue {last} (nor start a new chain): give the files oldest first, "
            "none missing",
        )
    after = next(stream, None)
    if after is not None and _prev_of(after) == hash_line(at.line.raw):
        return _fail(
            chain,
            chain.last,
            f"does not hash to the prev of {here}: it was altered, or lines after it are missing",
        )
    if after is not None:
        return _fail(
            chain,
            at,
            f"altered: its prev does not match {last}, nor the next record's prev this line",
        )
    return _fail(
        chain,
        chain.last,
        f"does not hash to the prev of {here} (the last record): it was altered, "
        f"or {here} was, or lines between them are missing",
    )


def _prev_of(at: _At) -> object:
    return None if at.line.record is None else at.line.record.get("prev")


def _fail(chain: _Chain, at: _At, message: str) -> VerifyResult:
    return VerifyResult(False, chain.records, at.line.number, message, at.path, chain.expected)


def _name(at: _At, chain: _Chain) -> str:
    """`line N`, or `FILE:N` when several files are checked."""
    return f"{at.path.name}:{at.line.number}" if chain.files > 1 else f"line {at.line.number}"


def _summary(chain: _Chain) -> str:
    if chain.records == 0 and not chain.notes:
        return "no records"
    files = f" in {chain.files} files" if chain.files > 1 else ""
    parts = [f"chain intact: {chain.records} records{files}", *chain.notes]
    if chain.head is not None:
        parts.append(f"reaches its head ({chain.head.ts})")
    if chain.key is not None:
        parts.append("every mac correct")
    if chain.expected is not None:
        parts.append(f"head sha256 {chain.expected}")
    return "; ".join(parts)

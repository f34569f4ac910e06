"""Static shards (docs/scale.md): `shard: {index: i, count: n}` in reaper.yaml, or `--shard i/n`,
makes an instance sweep only the backends whose name hashes to shard `i` of `n`.

The hash is SHA-256 of the backend name, so every instance, on every host and Python version,
puts a backend in the same shard (Python's `hash()` is salted per process, PYTHONHASHSEED)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SHARDS = 1024


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` (0 ≤ index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 < self.count <= MAX_SHARDS:
            raise ValueError(f"shard count must be 1..{MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be 0..{self.count - 1}, got {self.index}")

    def owns(self, backend: str) -> bool:
        """True if `backend` hashes to this shard."""
        return shard_of(backend, self.count) == self.index

    def select(self, backends: Iterable[str]) -> list[str]:
        """The names in `backends` this shard owns, in their order."""
        return [name for name in backends if self.owns(name)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(backend: str, count: int) -> int:
    """The shard (0..count-1) that `backend` belongs to: the name's SHA-256, first 8 bytes as
    an unsigned big-endian integer, modulo `count`. Stable across processes and hosts."""
    digest = hashlib.sha256(backend.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """`"i/n"` → Shard(i, n). Raises ValueError for anything else."""
    index, sep, count = text.strip().partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ValueError(f"shard {text!r}: expected INDEX/COUNT, e.g. 0/3")
    return Shard(int(index), int(count))

"""Exit codes and the exception types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, the same for every command (docs/commands.md)."""

    OK = 0
    FAILED = 1  # a backend or a cancel failed, or `audit verify` found a broken chain
    USAGE = 2
    REFUSED = 3  # a safety guard refused to act
    TEMPFAIL = 75  # EX_TEMPFAIL: another reaper holds the audit log's lock; try again later
    CONFIG = 78  # EX_CONFIG from sysexits.h; the unit sets RestartPreventExitStatus=78


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in one input file, located as precisely as the loader allows."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ReaperError(Exception):
    """Base class of every error reaper raises on purpose."""


class ConfigError(ReaperError):
    """The config or the policies are invalid; carries every diagnostic, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class TemporaryError(ReaperError):
    """Nothing was done, and trying again later may succeed (exit 75, EX_TEMPFAIL)."""


class BackendError(ReaperError):
    """A backend could not be reached or answered wrongly (auth, network, 5xx after retries,
    malformed response). The message never contains a credential."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"backend {backend}: {message}")

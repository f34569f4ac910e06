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
    # Ended by a signal, after recording the cancels in flight: 128 + the signal number, as a
    # shell reports a process killed by it.
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


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


class ConfigNotFoundError(ReaperError):
    """No config file where reaper looked (exit 78, as for an invalid config: the service
    cannot start without one, and a restart would not help). `looked_at` names each place
    and how it was chosen, in the order tried."""

    def __init__(self, looked_at: list[str]) -> None:
        self.looked_at = looked_at
        super().__init__(
            f"no config found; looked at {', '.join(looked_at)}; give --config FILE or set "
            "$REAPER_CONFIG"
        )


class TemporaryError(ReaperError):
    """Nothing was done, and trying again later may succeed (exit 75, EX_TEMPFAIL)."""


class BackendError(ReaperError):
    """A backend could not be reached or answered wrongly (auth, network, 5xx after retries,
    malformed response). The message never contains a credential."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"backend {backend}: {message}")

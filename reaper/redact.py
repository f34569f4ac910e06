"""Secret redaction, shared by every part that writes text a person or a file keeps: log lines
(reaper.service.logs installs the filter), error messages and audit fields built from SDK errors,
and the secrets backends register as they load them.

botocore's and urllib3's DEBUG output includes request headers (`Authorization`,
`X-Amz-Security-Token`), tapipy's includes `X-Tapis-Token` (docs/architecture.md, "Secrets"). The
filter masks credential-shaped text (headers, AWS keys, bearer tokens, JWTs) plus every exact
secret a backend registered with `register_secret`, in the message, its arguments, extra fields
and exception text."""

from __future__ import annotations

import contextlib
import logging
import re
import resource
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[REDACTED]"


MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words; nothing that short is a key


# Keys whose value is a credential, in headers (`Key: v`), dicts (`'Key': b'v'`), JSON, INI
# (`key = v`) and query strings (`Key=v&`).
_SECRET_KEYS = (
    r"authorization|proxy-authorization|x-tapis-token|x-amz-security-token|x-amz-signature|"
    r"x-amz-credential|aws_secret_access_key|aws_session_token|secret_?access_?key|"
    r"session_?token|access_token|refresh_token|id_token|token|x-auth-token|api[-_]?key|"
    r"x-api-key|client_secret|client_key|password|passwd|secret"
)


# Not preceded by a letter or digit (`nextToken` is a page cursor) but may follow `_`
# (`SUTRO_API_KEY=...`); not followed by a word character (`token_file` is a path).
_KEY = rf"(?<![A-Za-z0-9-])(?:{_SECRET_KEYS})(?![\w-])"


_HEADER_KEY = r"(?<![\w-])(?:proxy-)?authorization(?![\w-])"


_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # 'Authorization': b'AWS4-HMAC-SHA256 Credential=..., Signature=...'  /  "token": "..."
    # (a quote left open by a truncated message runs to the end of the text)
    (re.compile(rf"({_KEY})([\"']?\s*[:=]\s*b?)([\"'])(?:(?!\3)[^\\]|\\[\s\S]?)*(?:\3|$)",
                re.I),
     rf"\1\2\3{REDACTED}\3"),
    # Authorization: Bearer abc  (a header value runs to the end of the line; `\r\n` escaped
    # in a bytes repr counts as the end too)
    (re.compile(rf"({_HEADER_KEY})(\s*[:=]\s*)(?!b?[\"'])(?:(?!\\[rn])[^\r\n])+", re.I),
     rf"\1\2{REDACTED}"),
    # aws_secret_access_key = abc   /   X-Amz-Security-Token=abc&...
    (re.compile(rf"({_KEY})([\"']?\s*[:=]\s*)(?!b?[\"'])[^\s,;&\"'<>)}}\]]+", re.I),
     rf"\1\2{REDACTED}"),
    (re.compile(r"\b(Bearer|Key|Token)(\s+)[A-Za-z0-9\-._~+/]{12,}=*"), rf"\1\2{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
)  # fmt: skip


# Every pattern above needs one of these words (any case) to match: a key of _SECRET_KEYS
# (each holds one), `authorization`, `Bearer|Key|Token`, `eyJ`, `AKIA|ASIA`. An ASCII text
# holding none of them is left as it is by every substitution, which a few substring tests tell:
# almost every audit field and log line (redaction runs on every string of every audit record).
# Non-ASCII text always takes the full path (IGNORECASE also folds e.g. the Kelvin sign to k).
_TRIGGERS = re.compile("auth|token|signature|credential|secret|key|passw|bearer|eyj|akia|asia")


def _may_hold_secret(text: str) -> bool:
    return not text.isascii() or _TRIGGERS.search(text.lower()) is not None


def redact_patterns(text: str) -> str:
    """`text` with credential-shaped substrings replaced by [REDACTED]."""
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record with secrets masked. Thread-safe.

    It renders `msg % args` and the exception text itself (so the formatter uses the masked
    copies) and masks string extra fields. It never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.register_secret(secret)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def register_secret(self, value: str) -> bool:
        """Mask `value` (and its whitespace-stripped form) literally from now on. Returns False
        for values too short to mask without destroying ordinary text."""
        candidates = {v for v in (value, value.strip()) if len(v) >= MIN_SECRET_CHARS}
        with self._lock:
            merged = set(self._secrets) | candidates
            # Longest first, so a secret that contains another is masked whole.
            self._secrets = tuple(sorted(merged, key=lambda s: (-len(s), s)))
        return bool(candidates)

    def redact(self, text: str) -> str:
        """`text` with registered secrets and credential-shaped substrings masked."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact_patterns(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(render_message(record))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


def render_message(record: logging.LogRecord) -> str:
    """`msg % args`, or a readable stand-in when they do not fit: a filter runs outside the
    handler's error handling, so raising here would raise into the code that logged."""
    try:
        return record.getMessage()
    except (TypeError, ValueError, KeyError):
        return f"{record.msg!r} % {record.args!r} (log call arguments do not fit)"


_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with `extra=`, in the order given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and k[0] != "_"}


def installed_redactors() -> list[RedactingFilter]:
    """The redacting filters on the root logger's handlers."""
    handlers = logging.getLogger().handlers
    return [f for h in handlers for f in h.filters if isinstance(f, RedactingFilter)]


def register_secret(value: str) -> bool:
    """Mask `value` literally in every log line from now on (backends call this with each
    token or key they load). Returns False when logging is not configured or the value is too
    short to mask; the value itself is never logged."""
    return any([redactor.register_secret(value) for redactor in installed_redactors()])


def redact(text: str) -> str:
    """`text` masked as log lines are: for error messages and audit fields built from SDK
    errors. Uses the registered secrets when logging is configured, else the patterns only."""
    return masker()(text)


def masker() -> Callable[[str], str]:
    """`redact` as it is now, looked up once: for masking many strings (an audit record's)."""
    redactors = installed_redactors()
    return redactors[0].redact if redactors else redact_patterns


# prctl(2) option numbers, <linux/prctl.h>.
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> None:
    """Keep the credentials this process is about to load out of core files: RLIMIT_CORE 0
    (soft and hard, so nothing later raises it) and, on Linux, PR_SET_DUMPABLE 0, which also
    stops core dumps a `core_pattern` pipe would take whatever the limit, and ptrace and
    /proc/PID/mem reads by other processes of the same user. A watchdog's SIGABRT then leaves
    no core holding a token (docs/systemd.md). Best effort: where a sandbox refuses the calls
    (systemd's `SystemCallFilter=~@resources` forbids setrlimit; the units set `LimitCORE=0`
    instead) the process carries on."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes  # here: only the commands that load credentials need it

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def is_dumpable() -> bool | None:
    """PR_GET_DUMPABLE of this process on Linux, None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))

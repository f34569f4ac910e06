"""Logging: one line per event on a stream (stderr), as text or JSON, with secrets redacted.

Under systemd, stderr goes to journald, which adds the timestamp, unit and PID: when the stream
is the journal's (`$JOURNAL_STREAM`, systemd.exec(5)) text lines drop their own timestamp and
carry a `<N>` syslog priority prefix so `journalctl -p err` works. `--log-format json` emits
one JSON object per line for log shippers.

Secrets. botocore's and urllib3's DEBUG output includes request headers (`Authorization`,
`X-Amz-Security-Token`), tapipy's includes `X-Tapis-Token` (DESIGN.md §6). Two layers keep them
out: the SDK loggers are held at INFO or above whatever the root level, and a filter on the
handler drops their sub-INFO records anyway and masks credential-shaped text (headers, AWS
keys, bearer tokens, JWTs) plus every exact secret a backend registered with
`register_secret`, in the message, its arguments, extra fields and exception text."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

REDACTED = "[REDACTED]"
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "tapipy", "requests", "s3transfer")
SDK_FLOOR = logging.INFO
# APScheduler: INFO is chatter ("Running job ...") and its WARNINGs (a run skipped or missed)
# are logged again, with the backend's name, by reaper.scheduler's listener. Its ERRORs (a job
# raised, with the traceback) still show; everything shows when the root is at DEBUG.
QUIET_LOGGERS = ("apscheduler",)
QUIET_FLOOR = logging.ERROR
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}  # fmt: skip
# sd-daemon(3) priority prefixes, read by journald from a stream (SyslogLevelPrefix=yes).
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                   logging.CRITICAL: 2}  # fmt: skip
MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words; nothing that short is a key

# Keys whose value is a credential, in headers (`Key: v`), dicts (`'Key': b'v'`), JSON, INI
# (`key = v`) and query strings (`Key=v&`).
_SECRET_KEYS = (
    r"authorization|proxy-authorization|x-tapis-token|x-amz-security-token|x-amz-signature|"
    r"x-amz-credential|aws_secret_access_key|aws_session_token|secret_?access_?key|"
    r"session_?token|access_token|refresh_token|id_token|token|x-auth-token|api[-_]?key|"
    r"x-api-key|client_secret|password|passwd|secret"
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


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def redact_patterns(text: str) -> str:
    """`text` with credential-shaped substrings replaced by [REDACTED]."""
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


class SdkFloorFilter(logging.Filter):
    """Drops records below INFO from the SDK loggers even if someone lowered their level after
    `configure_logging` (e.g. `boto3.set_stream_logger`): their DEBUG output carries headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= SDK_FLOOR or not is_sdk_logger(record.name)


def is_sdk_logger(name: str) -> bool:
    return any(name == sdk or name.startswith(sdk + ".") for sdk in SDK_LOGGERS)


_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with `extra=`, in the order given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and k[0] != "_"}


def iso_utc(created: float) -> str:
    """`created` (Unix seconds) as ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def text_value(value: object) -> str:
    """A value for `key=value`: bare when it is one plain word, JSON-quoted otherwise."""
    text = str(value)
    plain = text and not any(c.isspace() or c in '="\\' for c in text)
    return text if plain else json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`[ts ]LEVEL logger: message key=value ...`, newlines escaped: one line per event."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        parts = [record.levelname, f"{record.name}:", record.getMessage()]
        if not self.journal:
            parts.insert(0, iso_utc(record.created))
        parts += [f"{key}={text_value(value)}" for key, value in extra_fields(record).items()]
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for extra in (record.exc_text, record.stack_info):
            if extra:
                line += " | " + extra
        line = line.replace("\r", "\\r").replace("\n", "\\n")
        return syslog_prefix(record) + line if self.journal else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extra fields, exc, stack."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = dict(extra_fields(record))
        event.update(ts=iso_utc(record.created), level=record.levelname, logger=record.name,
                     message=record.getMessage())  # fmt: skip
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = record.stack_info
        line = json.dumps(event, ensure_ascii=False, default=str)
        return syslog_prefix(record) + line if self.journal else line


def syslog_prefix(record: logging.LogRecord) -> str:
    level = max((lv for lv in SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
    return f"<{SYSLOG_PRIORITY[level]}>"


class ReaperHandler(logging.StreamHandler[TextIO]):
    """The one handler `configure_logging` installs (marked so a second call replaces it).

    Without a stream it writes to whatever `sys.stderr` is at each record, not the one of the
    moment it was built: `cli.main` runs in-process in tests, whose captured stderr is replaced
    (and closed) between tests."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr  # Handler.handle holds the handler lock here
        super().emit(record)


def is_journal_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True when `stream` is the journald stream systemd connected (`$JOURNAL_STREAM` holds
    its `device:inode`, systemd.exec(5))."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # StringIO and closed streams
        return False
    return f"{stat.st_dev}:{stat.st_ino}" == f"{device}:{inode}"


def parse_level(level: str) -> int:
    """A level name (any case) → its number. Raises ValueError for anything else."""
    try:
        return LEVELS[level.upper()]
    except KeyError:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}") from None


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat | str = LogFormat.TEXT,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> RedactingFilter:
    """Send every log record to `stream` (default stderr), one line each, secrets masked.

    Replaces a handler installed by an earlier call (keeping its registered secrets) and leaves
    other handlers alone. Returns the redacting filter. Raises ValueError for an unknown level
    or format."""
    root_level, log_format = parse_level(level), LogFormat(fmt)
    target = sys.stderr if stream is None else stream
    journal = is_journal_stream(target, os.environ if env is None else env)
    root = logging.getLogger()
    redactor = RedactingFilter(secrets=remove_reaper_handlers(root))
    handler = ReaperHandler(stream)
    handler.addFilter(SdkFloorFilter())
    handler.addFilter(redactor)
    formatter = JsonFormatter(journal) if log_format is LogFormat.JSON else TextFormatter(journal)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(root_level)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(max(SDK_FLOOR, root_level))
    for name in QUIET_LOGGERS:
        quiet = root_level if root_level == logging.DEBUG else max(QUIET_FLOOR, root_level)
        logging.getLogger(name).setLevel(quiet)
    return redactor


def remove_reaper_handlers(logger: logging.Logger) -> list[str]:
    """Detach and close the handlers `configure_logging` installed; returns their secrets."""
    secrets: list[str] = []
    for handler in [h for h in logger.handlers if isinstance(h, ReaperHandler)]:
        secrets += [s for f in handler.filters if isinstance(f, RedactingFilter) for s in f.secrets]
        logger.removeHandler(handler)
        handler.close()
    return secrets


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
    redactors = installed_redactors()
    return redactors[0].redact(text) if redactors else redact_patterns(text)

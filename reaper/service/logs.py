"""Logging: one line per event on a stream (stderr), as text or JSON, with secrets redacted.

Under systemd, stderr goes to journald, which adds the timestamp, unit and PID: when the stream
is the journal's (`$JOURNAL_STREAM`, systemd.exec(5)) text lines drop their own timestamp and
carry a `<N>` syslog priority prefix so `journalctl -p err` works. `--log-format json` emits
one JSON object per line for log shippers.

Secrets. botocore's and urllib3's DEBUG output includes request headers (`Authorization`,
`X-Amz-Security-Token`), tapipy's includes `X-Tapis-Token`. Two layers keep them
out: the SDK loggers are held at INFO or above whatever the root level, and a filter on the
handler drops their sub-INFO records anyway and masks credential-shaped text (headers, AWS
keys, bearer tokens, JWTs) plus every exact secret a backend registered with
`register_secret` (reaper.redact), in the message, its arguments, extra fields and exception
text."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from reaper.redact import RedactingFilter, extra_fields
from reaper.untrusted import clean

SDK_LOGGERS = ("botocore", "boto3", "urllib3", "tapipy", "requests", "s3transfer")
SDK_FLOOR = logging.INFO
# APScheduler: INFO is chatter ("Running job ...") and its WARNINGs (a run skipped or missed)
# are logged again, with the backend's name, by reaper.service.scheduler's listener. Its ERRORs
# (a job raised, with the traceback) still show; everything shows when the root is at DEBUG.
# botocore.credentials logs "Found credentials in environment variables." at INFO on every run.
CHATTY_LOGGERS = ("botocore.credentials",)
CHATTY_FLOOR = logging.WARNING
MAX_LINE = 64 * 1024  # characters of one text log line; a 1 MB job name must not make one
QUIET_LOGGERS = ("apscheduler",)
QUIET_FLOOR = logging.ERROR
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}  # fmt: skip
# sd-daemon(3) priority prefixes, read by journald from a stream (SyslogLevelPrefix=yes).
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                   logging.CRITICAL: 2}  # fmt: skip


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class SdkFloorFilter(logging.Filter):
    """Drops records below INFO from the SDK loggers even if someone lowered their level after
    `configure_logging` (e.g. `boto3.set_stream_logger`): their DEBUG output carries headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= SDK_FLOOR or not is_sdk_logger(record.name)


def is_sdk_logger(name: str) -> bool:
    return any(name == sdk or name.startswith(sdk + ".") for sdk in SDK_LOGGERS)


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
        line = clean(line, MAX_LINE)  # escape sequences and newlines from a job name, say
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
        line = _C1.sub(_json_escape, json.dumps(event, ensure_ascii=False, default=str))
        return syslog_prefix(record) + line if self.journal else line


# json.dumps escapes C0 controls but, with ensure_ascii=False, leaves DEL, C1 controls and the
# line separators raw; some terminals act on C1 (0x9b is CSI). Escaped, they stay valid JSON.
_C1 = re.compile("[\x7f-\x9f\u2028\u2029]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


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
    for name in CHATTY_LOGGERS:
        chatty = root_level if root_level == logging.DEBUG else max(CHATTY_FLOOR, root_level)
        logging.getLogger(name).setLevel(chatty)
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

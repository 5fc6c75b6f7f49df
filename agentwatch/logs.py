"""Structured logging: one JSON object per line on stderr (or plain text for people).

Call sites pass context as ``extra={...}``; every extra key becomes a field of the
JSON line, so logs can be filtered by agent, partition or offset without parsing text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # timestamps in UTC, for this formatter only

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        text = f"{base} {extras}" if extras else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger once, for the CLI; libraries only call getLogger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RateLimitFilter(KAFKA_LOG_INTERVAL_S))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO about every connection; keep its warnings, each
    # kind at most once a minute (a broker outage would otherwise print one per retry).
    logging.getLogger(LIBRARY).setLevel(max(logging.WARNING, root.level))


def current_setup() -> tuple[str, str]:
    """The (level, format) ``setup_logging`` was given, read back from the root logger,
    for a process spawned from this one to log as it does."""
    root = logging.getLogger()
    text = any(isinstance(h.formatter, TextFormatter) for h in root.handlers)
    return logging.getLevelName(root.level).lower(), "text" if text else "json"


KAFKA_LOG_INTERVAL_S = 60.0
LIBRARY = "kafka"
# A record's kind is its message's shape: some kafka-python lines arrive formatted
# already ("Task <... at 0x7f09...> ran for 0.103s"), each one different.
_SHAPE = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


class RateLimitFilter(logging.Filter):
    """Pass each kind of kafka-python record (logger, message template) once per interval.

    The next record of a kind after its interval carries ``suppressed``: how many of
    that kind were dropped meanwhile. ``quiet`` drops everything (while the caller
    reports the situation itself, e.g. while first connecting).
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self.quiet = False
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != LIBRARY and not record.name.startswith(LIBRARY + "."):
            return True
        if self.quiet:
            return False
        kind = (record.name, _SHAPE.sub("#", str(record.msg)))
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                return False
            self._last[kind] = now
            dropped = self._dropped.pop(kind, 0)
        if dropped:
            record.suppressed = dropped
        return True


@contextlib.contextmanager
def quiet_library_logs() -> Iterator[None]:
    """Silence kafka-python's own lines for a while (the caller logs what matters)."""
    filters = [
        f
        for handler in logging.getLogger().handlers
        for f in handler.filters
        if isinstance(f, RateLimitFilter)
    ]
    for f in filters:
        f.quiet = True
    try:
        yield
    finally:
        for f in filters:
            f.quiet = False

"""Logging for every command: one line per record (or JSON with IS_TELEMETRY_LOG_FORMAT=json), and a filter
that keeps a repeated error from flooding the disk.

`RepeatFilter`: the same message template from the same logger at the same level passes at most `burst` times
per `window_s`; the rest are counted, and the next one that passes after the window says how many were
suppressed. So an error repeated a million times a minute costs a handful of lines a minute.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import orjson

LOG_FORMAT_ENV = "IS_TELEMETRY_LOG_FORMAT"  # "json": one JSON object per line (inherited by the stack's children)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class RepeatFilter(logging.Filter):
    """Let each (logger, level, message template) through at most `burst` times per `window_s` seconds."""

    def __init__(self, burst: int = 10, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        super().__init__()
        self.burst, self.window_s, self.max_keys = burst, window_s, max_keys
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [window start, passed, suppressed]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.window_s:
                suppressed = int(state[2]) if state is not None else 0
                if len(self._seen) >= self.max_keys:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                if suppressed:
                    record.msg = (
                        f"{record.msg} (and {suppressed} more like it in the previous {self.window_s:g}s, not logged)"
                    )
                return True
            if state[1] < self.burst:
                state[1] += 1
                return True
            state[2] += 1
            return False


#: Libraries whose logs are only useful when debugging: at a command's default level (warning; `produce`: info) they
#: are cut to what is shown here. kafka-python logs each failed connection attempt (dozens a second while a broker is
#: unreachable) and a "blocking the event loop" warning at start-up, urllib3 each retried connection; the project's
#: own messages say what went wrong.
QUIET_LIBRARIES = {"kafka": logging.CRITICAL, "clickhouse_connect": logging.ERROR, "urllib3": logging.ERROR}


def setup_logging(level: str, default: str = "warning") -> None:
    """Every command's logging: `level` on stderr, in the format IS_TELEMETRY_LOG_FORMAT asks for. `default` is the
    command's default level: at it or above, the QUIET_LIBRARIES are quiet; below it (asking to see more), they
    log everything too."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(LOG_FORMAT_ENV, "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if logging.getLogger().getEffectiveLevel() >= logging.getLevelName(default.upper()):
        handler.addFilter(quiet_libraries)  # on the handler: libraries that set their loggers' levels on import too


def quiet_libraries(record: logging.LogRecord) -> bool:
    """False for a record of a QUIET_LIBRARIES logger below that library's level."""
    top = record.name.split(".", 1)[0]
    quiet = QUIET_LIBRARIES.get(top)
    return quiet is None or record.levelno >= quiet

"""Where `up` writes its console: stdout (stderr for errors). The reader may be gone (`make run | tee log`: Ctrl-C
ends tee first, then a write fails with EPIPE; a closed terminal: EIO): the stream is then pointed at /dev/null and
`up` goes on. A failed write never cuts a stop short, and nothing later (a library's log line, the interpreter's
last flush) fails on it either."""

from __future__ import annotations

import os
import sys
from typing import TextIO


def say(text: str = "", *, err: bool = False, end: str = "\n") -> None:
    """Write one piece of the console and flush it; if the reader is gone, silence that stream for good."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(text + end)
        stream.flush()
    except (OSError, ValueError):  # EPIPE, EIO, ... or a stream already closed
        silence(stream)


def silence(stream: TextIO) -> None:
    """Point `stream`'s descriptor at /dev/null (what is buffered is flushed there, harmlessly)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    try:
        stream.flush()
    except (OSError, ValueError):
        pass

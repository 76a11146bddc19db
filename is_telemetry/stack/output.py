"""Where `up` writes its console: stdout (stderr for errors).

- The reader may be gone (`make run | tee log`: Ctrl-C ends tee first, then a write fails with EPIPE; a closed
  terminal: EIO): the stream is then pointed at /dev/null and `up` goes on. A failed write never cuts a stop
  short, and nothing later (a library's log line, the interpreter's last flush) fails on it either.
- On a terminal the progress line is rewritten in place (`rewrite`); the next line said ends it first, so that no
  message starts in the middle of it and none is preceded by an empty line it did not ask for."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

_midline = False  # a progress line is on the terminal, not ended yet
_blank = False  # the console's last line is empty: another empty one would double it


def say(text: str = "", *, err: bool = False, end: str = "\n") -> None:
    """Write one piece of the console and flush it; if the reader is gone, silence that stream for good. An empty
    line right after an empty line is not written."""
    global _midline, _blank
    if _midline:
        _midline = False
        _write(sys.stdout, "\n")
    elif _blank and not text and end == "\n":
        return
    _write(sys.stderr if err else sys.stdout, text + end)
    _blank = (text + end).endswith("\n\n") or (not text and end == "\n")


def rewrite(line: str) -> None:
    """A terminal's progress line, in place (cut to the terminal's width: a wrapped line cannot be rewritten)."""
    global _midline, _blank
    width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
    _write(sys.stdout, "\r" + line[:width].ljust(width))
    _midline = True
    _blank = False


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
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

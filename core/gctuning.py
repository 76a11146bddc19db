"""The garbage collector's settings for the long-running processes (docs/benchmarks.md has the figures).

Reference counting frees the pipeline's rows; the cyclic collector only finds work in the libraries' own cycles.
Left at its defaults it scans the young generation every 700 allocations, and a batch keeps every row it builds
alive until the batch is written: each pass scans them again. So:
- `tune()` and `freeze()`: a young generation of 50,000 objects, and everything alive after start-up (modules,
  faust's and aiokafka's objects) frozen out of the scans;
- `paused()`: no cyclic collection during a batch's pure-Python work (validation and the roll-up), which builds a
  few hundred thousand objects that all stay alive; the collector catches up once afterwards. Nested and threaded
  pauses are counted: it resumes when the last one ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_paused = 0


def tune() -> None:
    gc.set_threshold(50_000, 20, 10)
    gc.freeze()


def freeze() -> None:
    """Again once started: what start-up built (consumers, producers, the API) stays for the process's life."""
    gc.collect()
    gc.freeze()


@contextmanager
def paused() -> Iterator[None]:
    global _paused
    with _lock:
        _paused += 1
        if _paused == 1:
            gc.disable()
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            if _paused == 0:
                gc.enable()

"""`is-telemetry up`: the whole pipeline on one machine (see `up` for the order of start, watch and stop).

One module per idea:
- `up`: `Stack`, the composition: start in order, watch (progress, child exits, broker loss), stop in reverse.
- `supervisor`: the children (worker, collector): started and waited for, restarted within a budget, stopped.
- `broker_recovery`: when the embedded broker's memory is gone, what was lost with it (the loss ledger), a new broker.
- `rotation`: the generations of the raw topic on the embedded broker, so that it holds a bounded amount.
- `simulation`: the simulated fleet's thread (backfill, then live) and the record of a stored backfill.
- `readings`: what the pipeline says about itself (SQL through the API, /metrics counters).
- `console`: the progress line and the fleet summary.
- `preflight`: what is checked before anything starts (`PreflightFailed`: exit code 2, every problem at once), and
  the wait for what a killed `up` left running.
- `drain`: before the embedded broker stops, the wait for the worker to store what it holds.
- `state`: the state file (data_dir/stack.json) read by `is-telemetry sql` and `status`; stale ones recognised.
- `output`: the console's writes (a reader that is gone never stops `up`).
- `options`: `StackOptions`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from is_telemetry.stack.options import StackOptions
    from is_telemetry.stack.preflight import PreflightFailed
    from is_telemetry.stack.state import STATE_FILE, read_state
    from is_telemetry.stack.up import Stack

__all__ = ["STATE_FILE", "PreflightFailed", "Stack", "StackOptions", "read_state"]
_WHERE = {
    "STATE_FILE": "state",
    "PreflightFailed": "preflight",
    "Stack": "up",
    "StackOptions": "options",
    "read_state": "state",
}


def __getattr__(name: str) -> Any:
    """Imported on first use: every command imports `stack.options` (for `up`'s defaults in its help), and only
    `up` needs the rest (a worker started again by `up` starts that much sooner)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)

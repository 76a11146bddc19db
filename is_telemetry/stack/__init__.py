"""`is-telemetry up`: the whole pipeline on one machine (see `up` for the order of start, watch and stop).

One module per idea:
- `up`: `Stack`, the composition: start in order, watch (progress, child exits, broker loss), stop in reverse.
- `supervisor`: the children (worker, collector): started and waited for, restarted within a budget, stopped.
- `broker_recovery`: when the embedded broker's memory is gone, what was lost with it, a new broker.
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

from is_telemetry.stack.options import StackOptions
from is_telemetry.stack.preflight import PreflightFailed
from is_telemetry.stack.state import STATE_FILE, read_state
from is_telemetry.stack.up import Stack

__all__ = ["STATE_FILE", "PreflightFailed", "Stack", "StackOptions", "read_state"]

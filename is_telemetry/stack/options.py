"""What `is-telemetry up` is asked to run beyond the settings: the simulated fleet, the console's pace, the
restart budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class StackOptions:
    config: Path | None = None
    simulate: bool = True
    deployments: int = 300
    cli_installs: int = 100
    days: int = 30
    seed: int = 1
    log_level: str = "warning"
    summary_every_s: float = 15.0
    broker_restarts_max: int = 5  # embedded broker restarts within broker_restarts_window_s before giving up
    broker_restarts_window_s: float = 600.0

"""What `is-telemetry up` is asked to run beyond the settings: the simulated fleet, the console's pace, the
restart budget. Validated on construction (pydantic): `up` reports every wrong flag at once, with the settings'."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from producers.simulator.deliveries import DEFAULT_CLI_INSTALLS, DEFAULT_DAYS, DEFAULT_DEPLOYMENTS, DEFAULT_SEED

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass
class StackOptions:
    config: Path | None = None
    simulate: bool = True
    deployments: Annotated[int, Field(ge=0, le=1_000_000)] = DEFAULT_DEPLOYMENTS
    cli_installs: Annotated[int, Field(ge=0, le=1_000_000)] = DEFAULT_CLI_INSTALLS
    days: Annotated[int, Field(ge=0, le=3650)] = DEFAULT_DAYS  # of history backfilled; 0: only the live feed
    seed: int = DEFAULT_SEED
    log_level: LogLevel = "warning"
    summary_every_s: float = 15.0
    broker_restarts_max: int = 5  # embedded broker restarts within broker_restarts_window_s before giving up
    broker_restarts_window_s: float = 600.0

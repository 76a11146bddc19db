"""python -m producers.simulator ... (same options as `is-telemetry simulate`)."""

import typer

from producers.simulator.command import command

typer.run(command)

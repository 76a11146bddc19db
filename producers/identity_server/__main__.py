"""python -m producers.identity_server ... (same options as `is-telemetry produce`)."""

import typer

from producers.identity_server.command import command

typer.run(command)

"""Identity Server telemetry pipeline for The Things Stack: the composition (the `is-telemetry` command, the stack
it runs, status, the SQL client, the worker and sink processes), on top of the stages and the ground (core).
docs/architecture.md."""

from core import __version__

__all__ = ["__version__"]

"""Identity Server telemetry pipeline for The Things Stack."""

__version__ = "0.1.0"

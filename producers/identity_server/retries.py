"""Retrying a step with exponential backoff: the project's one retry helper (is_telemetry/retry.py) and its stop /
give-up errors (is_telemetry/errors.py), under the names this producer has always used."""

from __future__ import annotations

from is_telemetry.errors import GaveUp, Stopped
from is_telemetry.retry import RetryPolicy, with_retries

__all__ = ["GaveUp", "RetryPolicy", "Stopped", "with_retries"]

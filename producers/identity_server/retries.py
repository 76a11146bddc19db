"""Retrying a step with exponential backoff: the project's one retry helper (core/retry.py) and its stop /
give-up errors (core/errors.py), under the names this producer has always used."""

from __future__ import annotations

from core.errors import GaveUp, Stopped
from core.retry import RetryPolicy, with_retries

__all__ = ["GaveUp", "RetryPolicy", "Stopped", "with_retries"]

"""Retrying a step with exponential backoff until it succeeds, gives up or is stopped, each failure logged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from producers.identity_server.durations import format_seconds
from producers.identity_server.logs import log


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: initial, 2x, 4x, ... capped at maximum. max_retries None = keep trying."""

    initial_s: float = 1.0
    maximum_s: float = 60.0
    max_retries: int | None = None

    def delay(self, failures: int) -> float:
        return min(self.maximum_s, self.initial_s * (2 ** max(0, failures - 1)))


class Stopped(Exception):
    """A stop was requested (Ctrl-C / SIGTERM)."""


class GaveUp(Exception):
    """The retries were exhausted, or the failure cannot be retried."""


T = TypeVar("T")


def with_retries(
    what: Callable[[], T],
    policy: RetryPolicy,
    stop: threading.Event,
    retriable: Callable[[BaseException], str | None],
) -> T:
    """Run `what` until it succeeds. `retriable(exc)` returns the failure line for a retriable error, else
    None (the error propagates). Each failure is logged with the wait; raises GaveUp or Stopped."""
    failures = 0
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            return what()
        except Exception as exc:  # noqa: BLE001
            line = retriable(exc)
            if line is None:
                raise
            failures += 1
            if policy.max_retries is not None and failures > policy.max_retries:
                tries = failures
                log.error("%s; giving up after %d %s", line, tries, "try" if tries == 1 else "tries")
                raise GaveUp(line) from exc
            wait = policy.delay(failures)
            left = "" if policy.max_retries is None else f" (retry {failures} of {policy.max_retries})"
            log.warning("%s; retrying in %s%s", line, format_seconds(wait), left)
            if stop.wait(wait):
                raise Stopped() from exc

"""The one retry/backoff helper: exponential backoff, a stop event, a retry budget (count or seconds).

    policy = RetryPolicy(initial_s=0.5, maximum_s=5.0)                  # 0.5, 1, 2, 4, 5, 5, ...
    with_retries(connect, policy, stop, retry_on(KafkaError, what="Kafka connect"))

`with_retries` raises `Stopped` when the stop event is set (before an attempt or during a wait) and `GaveUp`
when the budget is spent (`max_retries` failures after the first, or `deadline_s` seconds); an error its
`retriable` callback does not recognise propagates at once. Async callers that schedule their own waits
(call_later) use `RetryPolicy.delay` alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from core.errors import GaveUp, Stopped

log = logging.getLogger(__name__)

T = TypeVar("T")


class Waiter(Protocol):
    """What a stop event needs to be: threading.Event, or a test double recording the waits."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: initial, 2x, 4x, ... capped at maximum. max_retries None = no count limit."""

    initial_s: float = 1.0
    maximum_s: float = 60.0
    max_retries: int | None = None
    deadline_s: float | None = None  # give up once the next wait would end past this many seconds from the start

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1 = the first)."""
        return min(self.maximum_s, self.initial_s * (2 ** max(0, failures - 1)))


def format_seconds(seconds: float) -> str:
    """A short human duration: 0.5s, 12s, 1m30s, 24h."""
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not (h or m) else "")


def retry_on(*types: type[BaseException], what: str) -> Callable[[BaseException], str | None]:
    """A `retriable` callback: errors of `types` are retried (the line is "<what> failed: <error>"), others raised."""

    def retriable(exc: BaseException) -> str | None:
        if not isinstance(exc, types):
            return None
        reason = str(exc).splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return f"{what} failed: {reason}"

    return retriable


def with_retries(
    what: Callable[[], T],
    policy: RetryPolicy,
    stop: Waiter | None,
    retriable: Callable[[BaseException], str | None],
    level: Callable[[int], int] = lambda failures: logging.WARNING,
) -> T:
    """Run `what` until it succeeds. `retriable(exc)` returns the failure line for a retriable error, else None
    (the error propagates). Each failure is logged with the wait (at `level(failures)`); raises GaveUp or Stopped."""
    stop = stop if stop is not None else threading.Event()
    failures, started = 0, time.monotonic()
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            return what()
        except Exception as exc:  # `retriable` decides; what it does not know is raised again
            line = retriable(exc)
            if line is None:
                raise
            failures += 1
            wait = policy.delay(failures)
            if _spent(policy, failures, time.monotonic() - started + wait):
                log.error("%s; giving up after %d %s", line, failures, "try" if failures == 1 else "tries")
                raise GaveUp(line, failures=failures, seconds=time.monotonic() - started) from exc
            left = "" if policy.max_retries is None else f" (retry {failures} of {policy.max_retries})"
            log.log(level(failures), "%s; retrying in %s%s", line, format_seconds(wait), left)
            if stop.wait(wait):
                raise Stopped() from exc


def _spent(policy: RetryPolicy, failures: int, seconds_after_wait: float) -> bool:
    if policy.max_retries is not None and failures > policy.max_retries:
        return True
    return policy.deadline_s is not None and seconds_after_wait > policy.deadline_s

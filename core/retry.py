"""The one retry/backoff helper: exponential backoff, a stop event, a retry budget (count or seconds).

    policy = RetryPolicy(initial_s=0.5, maximum_s=5.0)                  # 0.5, 1, 2, 4, 5, 5, ...
    with_retries(connect, policy, stop, retry_on(KafkaError, what="Kafka connect"))

`with_retries` raises `Stopped` when the stop event is set (before an attempt or during a wait) and `GaveUp`
when the budget is spent (`max_retries` failures after the first, or `deadline_s` seconds); an error its
`retriable` callback does not recognise propagates at once. With `last_try=True` a stop ends the retries after
one more attempt instead, whose error is raised as it is (a writer that must try its final flush). What a loop
says (each retry, the giving up, the recovery) is its `report`: by default log lines of this module
(`LogReport`); a caller with lines of its own, or counters, passes a `Report`. Async callers that schedule their
own waits (call_later) use `RetryPolicy.delay` alone.
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


class Report(Protocol):
    """What a retry loop says: each failure it retries (before the wait), its giving up, a success after failures."""

    def retrying(self, line: str, failures: int, wait: float) -> None: ...

    def gave_up(self, line: str, failures: int) -> None: ...

    def recovered(self, failures: int) -> None: ...


@dataclass(frozen=True)
class LogReport:
    """The default report: each retry logged at `level(failures)` with the wait (and the count left, with a
    `max_retries`), the giving up at ERROR; a recovery is not logged."""

    level: Callable[[int], int] = lambda failures: logging.WARNING
    max_retries: int | None = None

    def retrying(self, line: str, failures: int, wait: float) -> None:
        left = "" if self.max_retries is None else f" (retry {failures} of {self.max_retries})"
        log.log(self.level(failures), "%s; retrying in %s%s", line, format_seconds(wait), left)

    def gave_up(self, line: str, failures: int) -> None:
        log.error("%s; giving up after %d %s", line, failures, "try" if failures == 1 else "tries")

    def recovered(self, failures: int) -> None:
        return None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """What an error says, in one line of at most `limit` characters (its type's name when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def retry_on(*types: type[BaseException], what: str) -> Callable[[BaseException], str | None]:
    """A `retriable` callback: errors of `types` are retried (the line is "<what> failed: <error>"), others raised."""

    def retriable(exc: BaseException) -> str | None:
        if not isinstance(exc, types):
            return None
        return f"{what} failed: {first_line(exc)}"

    return retriable


def with_retries(
    what: Callable[[], T],
    policy: RetryPolicy,
    stop: Waiter | None,
    retriable: Callable[[BaseException], str | None],
    level: Callable[[int], int] = lambda failures: logging.WARNING,
    *,
    report: Report | None = None,
    last_try: bool = False,
) -> T:
    """Run `what` until it succeeds. `retriable(exc)` returns the failure line for a retriable error, else None
    (the error propagates). Each failure is reported with the wait (by default logged at `level(failures)`); raises
    GaveUp or Stopped (with `last_try`, a stop raises the error of the attempt after it instead)."""
    stop = stop if stop is not None else threading.Event()
    report = report if report is not None else LogReport(level, policy.max_retries)
    failures, started = 0, time.monotonic()
    while True:
        if stop.is_set() and not last_try:
            raise Stopped()
        try:
            result = what()
        except Exception as exc:  # `retriable` decides; what it does not know is raised again
            line = retriable(exc)
            if line is None or (last_try and stop.is_set()):
                raise
            failures += 1
            wait = policy.delay(failures)
            if _spent(policy, failures, time.monotonic() - started + wait):
                report.gave_up(line, failures)
                raise GaveUp(line, failures=failures, seconds=time.monotonic() - started) from exc
            report.retrying(line, failures, wait)
            if stop.wait(wait) and not last_try:
                raise Stopped() from exc
        else:
            if failures:
                report.recovered(failures)
            return result


def _spent(policy: RetryPolicy, failures: int, seconds_after_wait: float) -> bool:
    if policy.max_retries is not None and failures > policy.max_retries:
        return True
    return policy.deadline_s is not None and seconds_after_wait > policy.deadline_s

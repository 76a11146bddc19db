"""The one retry helper (core/retry.py): its waits, its budget, its stop, and what it reports."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import GaveUp, Stopped
from core.retry import RetryPolicy, first_line, retry_on, with_retries


class Said:
    """A Report that records what the loop says; it sets `stop` at the `stop_at`-th retry (before that wait)."""

    def __init__(self, stop: threading.Event | None = None, stop_at: int = 0) -> None:
        self.lines: list[tuple[Any, ...]] = []
        self.stop, self.stop_at = stop, stop_at

    @property
    def waits(self) -> list[float]:
        return [line[3] for line in self.lines if line[0] == "retrying"]

    def retrying(self, line: str, failures: int, wait: float) -> None:
        self.lines.append(("retrying", line, failures, wait))
        if self.stop is not None and failures == self.stop_at:
            self.stop.set()

    def gave_up(self, line: str, failures: int) -> None:
        self.lines.append(("gave_up", line, failures))

    def recovered(self, failures: int) -> None:
        self.lines.append(("recovered", failures))


def failing(times: int, error: Callable[[], Exception] = lambda: OSError("refused")) -> Callable[[], str]:
    calls = [0]

    def what() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise error()
        return f"done after {calls[0]}"

    return what


RETRIABLE = retry_on(OSError, what="the thing")


def test_the_waits_double_up_to_the_cap_and_the_report_hears_each_retry_and_the_recovery() -> None:
    said = Said()
    policy = RetryPolicy(initial_s=0.001, maximum_s=0.003)
    assert with_retries(failing(4), policy, threading.Event(), RETRIABLE, report=said) == "done after 5"
    assert said.waits == [0.001, 0.002, 0.003, 0.003]
    assert said.lines[-1] == ("recovered", 4)
    assert [line[2] for line in said.lines[:-1]] == [1, 2, 3, 4]
    assert said.lines[0][1] == "the thing failed: refused"


def test_the_budget_gives_up_with_the_line_and_the_count() -> None:
    said = Said()
    with pytest.raises(GaveUp) as raised:
        with_retries(failing(10), RetryPolicy(0.001, 0.001, max_retries=2), None, RETRIABLE, report=said)
    assert (str(raised.value), raised.value.failures) == ("the thing failed: refused", 3)
    assert said.lines[-1] == ("gave_up", "the thing failed: refused", 3)
    assert isinstance(raised.value.__cause__, OSError)


def test_a_stop_ends_the_retries_with_stopped() -> None:
    stop = threading.Event()
    said = Said(stop, stop_at=2)
    with pytest.raises(Stopped):
        with_retries(failing(10), RetryPolicy(0.001, 0.001), stop, RETRIABLE, report=said)
    assert said.waits == [0.001, 0.001]
    calls = failing(0)
    with pytest.raises(Stopped):
        with_retries(calls, RetryPolicy(), stop, RETRIABLE, report=Said())  # already stopped: not even tried


def test_last_try_tries_once_more_after_a_stop_and_raises_its_error() -> None:
    """A writer's final flush: stopping, it is still tried, and its own error is what the caller sees."""
    stop = threading.Event()
    stop.set()
    said = Said()
    assert with_retries(failing(0), RetryPolicy(), stop, RETRIABLE, report=said, last_try=True) == "done after 1"
    with pytest.raises(OSError):
        with_retries(failing(1), RetryPolicy(), stop, RETRIABLE, report=said, last_try=True)
    assert said.lines == []  # no wait, no retry
    stop = threading.Event()
    said = Said(stop, stop_at=3)  # set at the third retry: that wait ends at once, one more attempt, its error
    with pytest.raises(OSError):
        with_retries(failing(10), RetryPolicy(0.001, 0.004), stop, RETRIABLE, report=said, last_try=True)
    assert said.waits == [0.001, 0.002, 0.004]


def test_an_error_the_callback_does_not_know_is_raised_at_once() -> None:
    said = Said()
    with pytest.raises(KeyError):
        with_retries(failing(1, lambda: KeyError("ours")), RetryPolicy(), None, RETRIABLE, report=said)
    assert said.lines == []


@pytest.mark.parametrize(
    ("error", "line"),
    [(OSError("\nfirst\nsecond"), "first"), (OSError(""), "OSError"), (OSError("x" * 400), "x" * 300)],
)
def test_first_line_says_an_error_in_one_bounded_line(error: Exception, line: str) -> None:
    assert first_line(error) == line

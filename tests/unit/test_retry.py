"""The one retry helper (core/retry.py): its waits, its budget, its stop, and what it reports."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import GaveUp, Stopped
from core.retry import RetryPolicy, first_line, retry_on, with_retries


class Waits(threading.Event):
    """A stop event that records each wait instead of sleeping, and sets itself after `stop_after` waits."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


class Said:
    """A Report that records what the loop says."""

    def __init__(self) -> None:
        self.lines: list[tuple[Any, ...]] = []

    def retrying(self, line: str, failures: int, wait: float) -> None:
        self.lines.append(("retrying", line, failures, wait))

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
    stop, said = Waits(), Said()
    result = with_retries(failing(4), RetryPolicy(initial_s=0.5, maximum_s=1.5), stop, RETRIABLE, report=said)
    assert result == "done after 5"
    assert stop.waits == [0.5, 1.0, 1.5, 1.5]
    assert said.lines[-1] == ("recovered", 4)
    assert [line[2] for line in said.lines[:-1]] == [1, 2, 3, 4]
    assert said.lines[0][1] == "the thing failed: refused"


def test_the_budget_gives_up_with_the_line_and_the_count() -> None:
    said = Said()
    with pytest.raises(GaveUp) as raised:
        with_retries(failing(10), RetryPolicy(0.1, 0.1, max_retries=2), Waits(), RETRIABLE, report=said)
    assert (str(raised.value), raised.value.failures) == ("the thing failed: refused", 3)
    assert said.lines[-1] == ("gave_up", "the thing failed: refused", 3)
    assert isinstance(raised.value.__cause__, OSError)


def test_a_stop_ends_the_retries_with_stopped() -> None:
    stop = Waits(stop_after=2)
    with pytest.raises(Stopped):
        with_retries(failing(10), RetryPolicy(0.1, 0.1), stop, RETRIABLE, report=Said())
    assert stop.waits == [0.1, 0.1]
    stop = Waits()
    stop.set()
    calls = failing(0)
    with pytest.raises(Stopped):
        with_retries(calls, RetryPolicy(0.1, 0.1), stop, RETRIABLE, report=Said())  # not even tried


def test_last_try_tries_once_more_after_a_stop_and_raises_its_error() -> None:
    """A writer's final flush: stopping, it is still tried, and its own error is what the caller sees."""
    stop = Waits()
    stop.set()
    assert with_retries(failing(0), RetryPolicy(0.1, 0.1), stop, RETRIABLE, report=Said(), last_try=True) == (
        "done after 1"
    )
    with pytest.raises(OSError):
        with_retries(failing(1), RetryPolicy(0.1, 0.1), stop, RETRIABLE, report=Said(), last_try=True)
    assert stop.waits == []
    stop = Waits(stop_after=3)  # set during the third wait: one more attempt, then its error
    with pytest.raises(OSError):
        with_retries(failing(10), RetryPolicy(0.5, 2.0), stop, RETRIABLE, report=Said(), last_try=True)
    assert stop.waits == [0.5, 1.0, 2.0]


def test_an_error_the_callback_does_not_know_is_raised_at_once() -> None:
    stop = Waits()
    with pytest.raises(KeyError):
        with_retries(failing(1, lambda: KeyError("ours")), RetryPolicy(), stop, RETRIABLE, report=Said())
    assert stop.waits == []


@pytest.mark.parametrize(
    ("error", "line"),
    [(OSError("\nfirst\nsecond"), "first"), (OSError(""), "OSError"), (OSError("x" * 400), "x" * 300)],
)
def test_first_line_says_an_error_in_one_bounded_line(error: Exception, line: str) -> None:
    assert first_line(error) == line

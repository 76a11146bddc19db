"""The two tiers of the tests, by what a test starts (pytest hooks; tests/conftest.py installs them).

A test is in the integration tier when it carries the `integration` marker: its module declares
`pytestmark = pytest.mark.integration`, the test is decorated `@pytest.mark.integration`, or it uses a fixture of
`STARTING` (marked here, at collection). Every other test is in the unit tier (`pytest -m "not integration"`,
`make check`): pure logic, seconds for all of them. The tiers cannot drift: while a unit-tier test runs (its
fixtures included) starting a process, opening a socket or opening chDB raises `StartsSomething`, and the test fails
even if it caught that.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import chdb  # loaded here (0.2 s) so that the guard can close its one door, `_chdb.connect`
import pytest

#: Fixtures that start processes, servers or chDB: a test using one (directly or through another fixture) is marked
#: `integration`.
STARTING = frozenset({"stack"})

#: What a unit-tier test may not do: (owner, attribute, what it is).
_DOORS: list[tuple[Any, str, str]] = [
    (subprocess.Popen, "_execute_child", "started a process"),
    (os, "fork", "forked"),
    (os, "posix_spawn", "started a process"),
    (os, "posix_spawnp", "started a process"),
    (os, "system", "started a shell"),
    (socket.socket, "bind", "bound a socket"),
    (socket.socket, "connect", "connected a socket"),
    (socket.socket, "connect_ex", "connected a socket"),
    (chdb._chdb, "connect", "opened chDB"),
]

_VIOLATIONS = pytest.StashKey[list[str]]()


class StartsSomething(BaseException):
    """A unit-tier test started something. A BaseException, so that `except Exception` and
    `pytest.raises(Exception)` do not hide it."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use a starting fixture, before `-m` selects."""
    for item in items:
        if STARTING.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@contextmanager
def _closed_doors(item: pytest.Item) -> Iterator[None]:
    violations = item.stash.setdefault(_VIOLATIONS, [])

    def refuse(what: str) -> Callable[..., Any]:
        def door(*_args: Any, **_kwargs: Any) -> Any:
            message = (
                f"{item.nodeid} {what} in the unit tier: mark it `@pytest.mark.integration` (or its module "
                "`pytestmark = pytest.mark.integration`), or keep it pure (tests/tiers.py)"
            )
            violations.append(message)
            raise StartsSomething(message)

        return door

    with ExitStack() as doors:
        for owner, name, what in _DOORS:
            original = getattr(owner, name)
            setattr(owner, name, refuse(what))
            doors.callback(setattr, owner, name, original)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Setup, call and teardown of a unit-tier test run with the doors closed."""
    if item.get_closest_marker("integration"):
        return (yield)
    with _closed_doors(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A unit-tier test that caught `StartsSomething` still fails."""
    report: pytest.TestReport = yield
    violations = item.stash.get(_VIOLATIONS, [])
    if violations:
        if report.passed:
            report.outcome = "failed"
            report.longrepr = "\n".join(violations)
        violations.clear()  # reported once
    return report

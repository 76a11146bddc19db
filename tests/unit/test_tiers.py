"""The tiers cannot drift (tests/tiers.py): a test of the unit tier that starts a process, opens a socket or chDB
fails, even when it catches what stopped it, and so does a test whose fixture does; a marked test, and a test using a
starting fixture, are in the integration tier. The cases are one small test file run by an in-process pytest
(pytester) as `make check` runs the unit tier."""

from __future__ import annotations

import pytest

CONFTEST = """
import pytest
from tests.tiers import pytest_collection_modifyitems, pytest_runtest_makereport, pytest_runtest_protocol

@pytest.fixture
def stack():
    raise AssertionError("a starting fixture must not be set up in the unit tier")
"""

CASES = """
import os, socket, subprocess, sys
import chdb
import pytest

def test_process():
    subprocess.run([sys.executable, "-c", "pass"])

def test_shell():
    os.system("true")

def test_bind():
    socket.socket().bind(("127.0.0.1", 0))

def test_connect():
    socket.create_connection(("127.0.0.1", 9), timeout=1)

def test_chdb():
    chdb.connect(":memory:")

def test_caught():
    try:
        subprocess.run([sys.executable, "-c", "pass"])
    except BaseException:
        pass

@pytest.fixture(scope="module")
def server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s

def test_fixture(server):
    pass

def test_pure():
    assert 1 + 1 == 2

@pytest.mark.integration
def test_marked():
    raise AssertionError("not in the unit tier")

def test_uses_the_stack(stack):
    raise AssertionError("not in the unit tier")
"""


def test_the_unit_tier_refuses_what_starts_something(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts something\n")
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_inprocess("-m", "not integration", "-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=1, failed=6, errors=1, deselected=2)
    outcomes = {line.split()[1]: line.split()[0] for line in result.outlines if line.startswith(("FAILED", "ERROR"))}
    assert outcomes == {
        **{f"test_cases.py::test_{n}": "FAILED" for n in ("process", "shell", "bind", "connect", "chdb", "caught")},
        "test_cases.py::test_fixture": "ERROR",
    }, result.outlines
    for what in ("started a process", "started a shell", "bound a socket", "connected a socket", "opened chDB"):
        result.stdout.fnmatch_lines([f"*{what} in the unit tier: mark it `@pytest.mark.integration`*"])

"""The fixtures shared by test modules, and the two tiers (tests/tiers.py: `integration` starts something, the unit tier
may not)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import RunningStack, start_stack
from tests.tiers import (  # noqa: F401 (pytest's hooks, installed here)
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    s = start_stack(tmp_path / "stack", "--no-simulate")
    try:
        yield s
    finally:
        s.stop()

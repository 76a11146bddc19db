"""The fixtures shared by test modules, and the two tiers (tests/tiers.py: `integration` starts something, the unit tier
may not)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import RunningStack, start_stack
from tests.tiers import (  # noqa: F401 (pytest's hooks, installed here)
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
)

# Many tests send fixed days (2025), older than the default retention (core/config.py: 396 days for snapshots):
# every stack and store a test starts keeps everything, unless the test sets a retention itself
# (tests/test_privacy.py, the TTL tests of tests/test_sink.py).
for _ttl in ("SNAPSHOT_TTL_DAYS", "REJECTION_BODY_TTL_DAYS", "UID_STATE_TTL_DAYS"):
    os.environ.setdefault(f"IS_TELEMETRY_CLICKHOUSE__{_ttl}", "0")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    s = start_stack(tmp_path / "stack", "--no-simulate")
    try:
        yield s
    finally:
        s.stop()

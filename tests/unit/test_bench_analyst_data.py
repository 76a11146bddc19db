"""The analyst bench's synthetic fleet (bench/analyst_data.py) writes the columns of the one snapshot row declaration."""

from __future__ import annotations

import re

import pytest

from bench.analyst_data import CLI_COLUMNS, CLI_DAY_SQL, IS_COLUMNS, IS_DAY_SQL, insert_sql
from core.rows import SnapshotRow, columns


def _inserted(sql: str) -> list[str]:
    m = re.match(r"INSERT INTO snapshots \(([^)]*)\)", sql)
    assert m, sql[:80]
    return [c.strip() for c in m.group(1).split(",")]


def test_the_inserts_name_the_rows_columns_in_its_order() -> None:
    declared = columns(SnapshotRow)
    assert _inserted(IS_DAY_SQL) == [c for c in declared if c in IS_COLUMNS]
    assert _inserted(CLI_DAY_SQL) == [c for c in declared if c in CLI_COLUMNS]


def test_a_deployments_snapshot_has_every_column() -> None:
    """A column added to SnapshotRow (a migration) needs its expression here, or the bench fills it with defaults."""
    assert set(IS_COLUMNS) == set(columns(SnapshotRow))


def test_an_expression_for_a_column_the_row_does_not_have_stops_the_bench() -> None:
    with pytest.raises(ValueError, match=r"\['retired_column'\].*SnapshotRow"):
        insert_sql({**IS_COLUMNS, "retired_column": "1"}, "FROM numbers(1)")

"""The analyst views of migration 0002 (the fleet over time) equal an independent ground truth exactly.

One real chDB store per module (sinks.clickhouse.ClickHouseStore, as the worker writes it) is filled with a
simulated fleet through the pipeline's own batch path (validate, dedup, roll up, write); the analyst rows are
refreshed by ClickHouse's own refreshable view, then every view is compared with `producers.fleet_truth`,
which computes the same figures from the deliveries with its own code. Then the same input is written again
(re-split batches, reversed order, a fresh dedup state: what a replay or a restarted worker does), and after
forced merges: nothing may change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers import fleet_truth
from producers.simulator import Delivery, generate
from sinks.clickhouse import ClickHouseStore
from tests.test_sink import consume, opened, split, to_records

FLOAT_COLUMNS = {"share", "share_at_or_above", "retention", "factor"}
END = date(2025, 3, 31)
DAYS = 45
NAMED_VIEWS = [
    "fleet_daily_carried", "fleet_size_daily", "regions_daily", "version_adoption_daily", "version_adoption_speed",
    "versions_behind_daily", "cli_installs_active_daily", "cli_command_usage_daily", "data_quality_daily",
    "sender_jumps_daily", "sender_lifespans", "deployment_lifecycle_daily", "cli_lifecycle_daily", "retention_weekly",
    "retention_monthly",
]


def refresh(store: ClickHouseStore, attempts: int = 5) -> None:
    """Run the analyst refresh now (as its 5 s schedule would) until no day is pending."""
    for _ in range(attempts):
        store.client.command("SYSTEM REFRESH VIEW analyst_daily_refresh")
        store.client.command("SYSTEM WAIT VIEW analyst_daily_refresh")
        if not store.query("SELECT day FROM analyst_daily_pending")[1]:
            return
    raise AssertionError(f"analyst days still pending: {store.query('SELECT * FROM analyst_daily_pending')[1]}")


def cell(v: Any) -> Any:
    if isinstance(v, date):
        return v.isoformat()
    return v


def normalise(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    out = []
    for r in rows:
        out.append(tuple(round(float(r[c]), 6) if c in FLOAT_COLUMNS and r[c] is not None and not math.isnan(r[c])
                         else (bool(r[c]) if isinstance(r[c], bool) else cell(r[c])) for c in columns))
    return sorted(out, key=repr)


def view_rows(store: ClickHouseStore, source: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    names, rows = store.query(f"SELECT {', '.join(columns)} FROM {source}")
    return normalise([dict(zip(names, r)) for r in rows], columns)


def truth_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    return normalise(rows, columns)


def compare(store: ClickHouseStore, truth: dict[str, list[dict[str, Any]]]) -> None:
    for name in NAMED_VIEWS:
        expected = truth[name]
        assert expected, f"the simulation leaves {name} empty: it proves nothing"
        columns = list(expected[0])
        got, want = view_rows(store, name, columns), truth_rows(expected, columns)
        if got != want:
            missing = [r for r in want if r not in got][:5]
            extra = [r for r in got if r not in want][:5]
            pytest.fail(f"{name}: {len(got)} rows, truth {len(want)}\n  missing {missing}\n  extra {extra}")


def booleans(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (bool(v) if k == "seen_on_first_day" else v) for k, v in r.items()} for r in rows]


def fleet(deployments: int = 80, cli_installs: int = 30, seed: int = 21) -> list[Delivery]:
    sim = generate(deployments, cli_installs, DAYS, seed=seed, end_day=END, malformed_rate=0.02)
    return sim.deliveries


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClickHouseStore, list[Delivery]]]:
    deliveries = fleet()
    with opened(tmp_path_factory.mktemp("analyst") / "chdb") as store:
        consume(store, split(to_records(deliveries), [300, 41, 977]))
        refresh(store)
        yield store, deliveries


def test_every_view_equals_the_ground_truth(filled: tuple[ClickHouseStore, list[Delivery]]) -> None:
    store, deliveries = filled
    truth = fleet_truth.analyst_ground_truth(deliveries)
    truth["version_adoption_speed"] = booleans(truth["version_adoption_speed"])
    compare(store, truth)

"""The analyst views of the fleet over time (migrations 0002, 0006) equal an independent ground truth exactly.

One real chDB store per module (sinks.clickhouse.ClickHouseStore, as the worker writes it) is filled with a
simulated fleet through the pipeline's own batch path (validate, dedup, roll up, write); the analyst rows are
refreshed by ClickHouse's own refreshable view, then every view is compared with `producers.fleet_truth`,
which computes the same figures from the deliveries with its own code. Then the same input is written again
(re-split batches, reversed order, a fresh dedup state: what a replay or a restarted worker does), and after
forced merges: nothing may change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from producers import fleet_truth
from producers.simulator import Delivery
from sinks.clickhouse import ClickHouseStore
from tests.analyst_checks import NAMED_VIEWS, differences, normalise
from tests.chdb_store import consume, opened, refresh, split, store_reader, to_records
from tests.sink_samples import DAYS, END, fleet

pytestmark = pytest.mark.integration


def view_rows(store: ClickHouseStore, source: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    return normalise(store_reader(store)(source, columns), columns)


def truth_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    return normalise(rows, columns)


def compare(store: ClickHouseStore, truth: dict[str, list[dict[str, Any]]]) -> None:
    empty = [name for name in NAMED_VIEWS if not truth[name]]
    assert not empty, f"the simulation leaves {empty} empty: it proves nothing"
    assert differences(store_reader(store), truth) == {}


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
    compare(store, truth)
    # the CLI's cases are in the simulation: two reports of an install on a day, a report with nothing used (null
    # lists), installs new on a 2025 CLI (upgrades among them) and on an older one
    snaps = fleet_truth.Snapshots.of(deliveries)
    assert any(len(bodies) > 1 for bodies in snaps.reports.values())
    assert any(cli == {"commands": None, "aliases": None} for b in snaps.reports.values() for cli in b.values())
    new = truth["cli_lifecycle_daily"]
    assert sum(r["new_2025_cli"] for r in new) and sum(r["new_older_cli"] for r in new)


def test_parameterized_views_take_other_lookbacks_gaps_and_factors(
    filled: tuple[ClickHouseStore, list[Delivery]],
) -> None:
    store, deliveries = filled
    snaps = fleet_truth.Snapshots.of(deliveries)
    first, last = END - timedelta(days=DAYS - 1), END
    span = f"first = '{first}', last = '{last}'"
    # the defaults give the named views
    carried = fleet_truth.carried_fleet(snaps)
    columns = list(carried[0])
    assert view_rows(store, f"fleet_daily_carried_lookback(lookback = 7, {span})", columns) == truth_rows(
        carried, columns
    )
    for lookback in (1, 3, 14):
        want = fleet_truth.carried_fleet(snaps, lookback=lookback)
        got = view_rows(store, f"fleet_daily_carried_lookback(lookback = {lookback}, {span})", columns)
        assert got == truth_rows(want, columns), lookback
    # lookback 1 is the as-reported fleet
    one = view_rows(store, f"fleet_daily_carried_lookback(lookback = 1, {span})", ["day", "deployments"])
    assert one == truth_rows(
        [
            {"day": d, "deployments": n}
            for d, n in sorted(
                __import__("collections")
                .Counter(day.isoformat() for day, _uid in snaps.by_key if snaps.kind_of[_uid] == "is")
                .items()
            )
        ],
        ["day", "deployments"],
    )
    for kind in ("is", "cli"):
        for gap in (2, 7, 14):
            want = fleet_truth.lifecycle(snaps, kind, gap=gap, first=first + timedelta(days=5), last=last)
            columns = list(want[0])
            got = view_rows(
                store,
                f"lifecycle_daily(kind = '{kind}', gap = {gap}, first = '{first + timedelta(days=5)}', "
                f"last = '{last}')",
                columns,
            )
            assert got == truth_rows(want, columns), (kind, gap)
    for factor in (2, 3, 10):
        want = fleet_truth.jumps(snaps, factor=factor)
        assert want, factor
        columns = list(want[0])
        assert view_rows(store, f"sender_jumps(factor = {factor}, {span})", columns) == truth_rows(want, columns), (
            factor
        )
    # CLI command and alias usage: every report of the look-back (the defaults give the named views)
    for lookback in (1, 7, 30, 45):
        commands, aliases = fleet_truth.cli_usage(snaps, lookback=lookback, first=first + timedelta(days=3), last=last)
        assert commands and aliases, lookback
        cli_span = f"lookback = {lookback}, first = '{first + timedelta(days=3)}', last = '{last}'"
        for view, want in (("cli_command_usage", commands), ("cli_alias_usage", aliases)):
            columns = list(want[0])
            assert view_rows(store, f"{view}({cli_span})", columns) == truth_rows(want, columns), (view, lookback)
    named = fleet_truth.analyst_ground_truth(deliveries)
    for view in ("cli_command_usage", "cli_alias_usage"):
        want = named[f"{view}_daily"]
        assert view_rows(store, f"{view}(lookback = 30, {span})", list(want[0])) == truth_rows(want, list(want[0]))
    for min_behind in (0, 2, 5):
        want = fleet_truth.deployments_behind(snaps, END, min_behind)
        assert want, min_behind
        columns = list(want[0])
        got = view_rows(store, f"deployments_behind(day = '{END}', min_behind = {min_behind})", columns)
        assert got == truth_rows(want, columns), min_behind
    # the carried snapshots of one day: every UID once, with its latest day of the look-back
    day = END - timedelta(days=3)
    want_uids = sorted(
        (s.uid, s.day.isoformat()) for kind, lb in (("is", 7), ("cli", 30)) for s in snaps.carried(day, kind, lb)
    )
    got_uids = sorted(
        (u, d.isoformat())
        for u, d in store.query(
            f"SELECT uid, source_day FROM carried_snapshots(day = '{day}', lookback = 7, cli_lookback = 30)"
        )[1]
    )
    assert got_uids == want_uids


def everything(store: ClickHouseStore) -> dict[str, list[str]]:
    return {name: sorted(repr(r) for r in store.query(f"SELECT * FROM {name}")[1]) for name in NAMED_VIEWS}


def test_replays_resplits_and_merges_change_nothing(filled: tuple[ClickHouseStore, list[Delivery]]) -> None:
    store, deliveries = filled
    before = everything(store)
    records = to_records(deliveries)
    consume(store, list(reversed(split(records, [211, 9, 77]))))  # a replay, older batches last, fresh dedup
    consume(store, split(records[: len(records) // 3], [50]))  # a worker killed and restarted mid-way
    refresh(store)
    assert everything(store) == before
    for table in ("snapshots", "uid_activity", "snapshot_changes", "analyst_daily"):
        store.client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert everything(store) == before
    compare(store, fleet_truth.analyst_ground_truth(deliveries))

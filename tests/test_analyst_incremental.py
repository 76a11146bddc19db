"""The analysts' figures kept as per-UID events (migration 0009, sinks/analysts.py): the applier's queue survives a
crash, applying again changes nothing, a UID written during an apply stays queued, two writers' appliers take
disjoint UIDs, and a UID with no history left gives its frozen events to the anonymous key without changing a sum.

The figures themselves are checked against the independent ground truth by tests/test_analyst_views.py and
tests/test_analyst_scenarios.py, and against the whole-day recompute (analyst_compute) by
`python -m bench.bench_analyst_scaling`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.partitioning import partition_of
from producers import fleet_truth
from sinks import analysts
from sinks.clickhouse import ClickHouseStore
from tests.analyst_checks import differences
from tests.chdb_store import consume, opened, refresh, split, store_reader, to_records
from tests.sink_samples import fleet

pytestmark = pytest.mark.integration

PARTITIONS = 8


def events(store: ClickHouseStore) -> tuple[int, int]:
    """(rows stored, sum of every value): rows grow with every insert, the sum is what the figures read."""
    rows, total = store.query("SELECT count(), sum(value) FROM analyst_events")[1][0]
    return int(rows), int(total)


def day_sums(store: ClickHouseStore) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT kind, metric, label, label2, bucket, day, sum(value) AS v FROM analyst_events "
        "GROUP BY ALL HAVING v != 0 ORDER BY ALL"
    )[1]


def test_the_queue_survives_a_crash_and_applying_again_changes_nothing(tmp_path: Path) -> None:
    deliveries = fleet()
    records = to_records(deliveries)
    with opened(tmp_path / "chdb") as store:
        consume(store, split(records, [500]))
        queued = analysts.pending(store.client)
        assert queued > 100
    # the process ends before its applier ran (kill -9 after the write): the queue is in ClickHouse
    with opened(tmp_path / "chdb") as store:
        assert analysts.pending(store.client) == queued
        refresh(store)  # applies the queue, then the refreshes
        assert analysts.pending(store.client) == 0
        assert differences(store_reader(store), fleet_truth.analyst_ground_truth(deliveries)) == {}
        before = events(store)
        consume(store, split(records, [333]))  # a replay: its UIDs queued again
        requeued = analysts.pending(store.client)
        assert requeued > 50
        assert store.apply_analysts() == requeued
        assert events(store) == before  # not one row inserted: each UID's difference was nothing
        refresh(store)
        assert differences(store_reader(store), fleet_truth.analyst_ground_truth(deliveries)) == {}


def test_a_uid_written_during_its_apply_stays_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deliveries = fleet()
    records = to_records(deliveries)
    first, later = records[:400], records[400:]
    with opened(tmp_path / "chdb") as store:
        consume(store, [first])
        real: Callable[[Any, Any], None] = analysts._apply
        written: list[bool] = []

        def apply_while_writing(client: Any, uids: Any) -> None:
            real(client, uids)
            if not written:  # the worker writes later reports of the same UIDs meanwhile
                written.append(True)
                consume(store, [later])

        monkeypatch.setattr(analysts, "_apply", apply_while_writing)
        analysts.apply_queued(store.client, limit=1_000_000)
        monkeypatch.undo()
        again = {str(r[0]) for r in store.query("SELECT DISTINCT uid FROM analyst_dirty")[1]}
        assert again, "the UIDs written during the apply were taken off the queue unapplied"
        assert again <= {str(u) for (u,) in store.query("SELECT DISTINCT uid FROM snapshots")[1]}
        refresh(store)
        assert differences(store_reader(store), fleet_truth.analyst_ground_truth(deliveries)) == {}


def test_two_writers_appliers_take_disjoint_uids(tmp_path: Path) -> None:
    with opened(tmp_path / "chdb") as store:
        consume(store, [to_records(fleet())])
        everyone = {str(u) for (u,) in store.query("SELECT DISTINCT uid FROM analyst_dirty")[1]}
        halves = []
        for owned in ([0, 1, 2, 3], [4, 5, 6, 7]):
            taken = store.client.query(
                analysts.TAKE,
                parameters={"n": 1_000_000, "everyone": False, "total": PARTITIONS, "owned": owned},
            ).result_rows
            uids = {str(r[1]) for r in taken}
            assert all(partition_of(u.encode(), PARTITIONS) in owned for u in uids)  # Kafka's partitioner
            halves.append(uids)
        assert not halves[0] & halves[1] and halves[0] | halves[1] == everyone


def test_a_uid_with_no_history_left_gives_its_frozen_events_to_the_anonymous_key(tmp_path: Path) -> None:
    deliveries = fleet()  # 2025: every day is beyond a 30-day TTL, so every event is frozen
    own = (
        "SELECT count() FROM (SELECT sum(value) AS v FROM analyst_events WHERE key = sipHash128({u:String}) "
        "GROUP BY kind, metric, label, label2, bucket, day HAVING v != 0)"
    )
    with opened(tmp_path / "chdb") as store:
        consume(store, [to_records(deliveries)])
        refresh(store)
        sums = day_sums(store)
        (uid,) = store.query("SELECT uid FROM analyst_history WHERE kind = 'is' ORDER BY uid LIMIT 1")[1][0]
        assert store.query(own, {"u": uid})[1][0][0] > 0
    with opened(tmp_path / "chdb", snapshot_ttl_days=30) as store:
        # the TTL takes every snapshot and history row (2025); the UID is queued again (a late report would)
        store.client.command("OPTIMIZE TABLE analyst_history FINAL")
        assert store.query("SELECT count() FROM analyst_history")[1][0][0] == 0
        store.client.command(
            "INSERT INTO analyst_dirty SELECT sipHash128({u:String}), {u:String}, 1", parameters={"u": uid}
        )
        assert store.apply_analysts() == 1
        assert store.query(own, {"u": uid})[1][0][0] == 0  # nothing of it is left under its key
        anonymous = f"SELECT count() FROM analyst_events WHERE key = {analysts.ANONYMOUS} AND value != 0"
        assert store.query(anonymous)[1][0][0] > 0
        assert day_sums(store) == sums  # and every figure's sum is what it was

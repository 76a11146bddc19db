"""The processors' roll-up against ClickHouse (real chDB, no Kafka): the incremental rows equal a recompute from the
snapshots, whatever the order and batching; ownership passes between owners (rebalance) without a UID counting
twice; a stale owner cannot overwrite a newer one; a changed partition count is refused until `repartition`; the
checkpoint pauses and rewinds when ClickHouse does not take a write; each row type matches its table.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partition_of
from core.retry import RetryPolicy
from core.rows import MAP_COLUMNS, RejectionRow, RollupRow, SnapshotRow, columns
from is_telemetry.worker_app import RollupSink
from processors.pipeline import RawRecord, process
from processors.replay import Replayer
from processors.rollup import Rollups, preparer
from processors.worker import partition_batches
from producers.simulator import Delivery, generate, ground_truth
from sinks.checkpoint import Checkpoint
from sinks.clickhouse import ClickHouseStore, PartitionCountChanged
from tests.chdb_store import opened, split, truth_views
from tests.oracle_views import sorted_truth

pytestmark = pytest.mark.integration


TOPIC = "tts-telemetry-raw"
N = 8


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    with opened(tmp_path / "chdb") as s:
        yield s


def records_of(deliveries: Sequence[Delivery], partitions: int = N) -> list[RawRecord]:
    """As the collector produces them: keyed by UID, in the default partitioner's partition."""
    offsets = [0] * partitions
    out = []
    for received_at_ms, key, body in deliveries:
        p = partition_of(key, partitions) if key else 0
        out.append(
            RawRecord(
                TOPIC, p, offsets[p], received_at_ms, {HEADER_RECEIVED_AT: str(received_at_ms).encode()}, body, key
            )
        )
        offsets[p] += 1
    return out


def stored_rollups(store: ClickHouseStore) -> dict[tuple[date, int], RollupRow]:
    names = columns(RollupRow)
    _cols, rows = store.query(f"SELECT {', '.join(names)} FROM rollup_partitions FINAL")
    return {(r[0], int(r[1])): RollupRow(*r) for r in rows}


def recomputed(store: ClickHouseStore, partitions: int = N) -> dict[tuple[date, int], RollupRow]:
    days = [r[0] for r in store.query("SELECT DISTINCT day FROM rollup_partitions")[1]]
    out = {}
    for day in days:
        for p in range(partitions):
            out[(day, p)] = store.recompute(day, p, partitions, 0)
    return out


def figures(row: RollupRow) -> tuple[Any, ...]:
    """A row's figures (no version, no time); empty maps and zero rows compare equal to absent ones."""
    names = [c for c in columns(RollupRow) if c not in ("day", "source_partition", "version", "computed_at")]
    return tuple(dict(getattr(row, n)) if n in MAP_COLUMNS else getattr(row, n) for n in names)


def assert_rows_equal_recompute(store: ClickHouseStore, partitions: int = N) -> None:
    got, want = stored_rollups(store), recomputed(store, partitions)
    empty = figures(RollupRow(date(2000, 1, 1), 0, 0, None))  # type: ignore[arg-type]
    keys = set(got) | set(want)
    diff = {
        k: (figures(got[k]) if k in got else empty, figures(want[k]))
        for k in keys
        if (figures(got[k]) if k in got else empty) != figures(want[k])
    }
    assert not diff, list(diff.items())[:3]


def simulation(days: int = 6, seed: int = 3) -> list[Delivery]:
    return generate(deployments=120, cli_installs=30, days=days, seed=seed, end_day="2025-03-06").deliveries


# ------------------------------------------------------------------------------------ incremental == recompute


@pytest.mark.parametrize("order", ["in order", "shuffled batches", "partition by partition", "newest first"])
def test_incremental_rows_equal_a_recompute_from_the_snapshots(store: ClickHouseStore, order: str) -> None:
    deliveries = simulation()
    records = records_of(deliveries)
    rng = random.Random(order)
    if order == "shuffled batches":
        chunks = split(records, [37, 5, 120, 61])
        rng.shuffle(chunks)
    elif order == "partition by partition":
        chunks = [c for p in range(N) for c in split([r for r in records if r.partition == p], [50])]
    elif order == "newest first":
        chunks = list(reversed(split(records, [40])))
    else:
        chunks = split(records, [64])
    replayer = Replayer(store, N, state_days=2)  # a small window: many days leave it, many records are late
    for chunk in chunks:
        replayer.feed(chunk)
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    assert_rows_equal_recompute(store)


# ------------------------------------------------------------------------------------------ owners and handover


def feed(store: ClickHouseStore, rollups: Rollups, records: Sequence[RawRecord]) -> None:
    outcome = process(list(records), N)
    assert not outcome.rekey
    store.write(preparer(rollups, store)(partition_batches(records, outcome)))


def test_a_partition_changes_owner_while_records_flow(store: ClickHouseStore) -> None:
    """Worker A owns every partition; B joins and takes 4-7 (A drains and drops them), then B leaves and A takes
    them back: each taking-on rebuilds from ClickHouse under a new generation. Exact throughout."""
    deliveries = simulation(days=4, seed=11)
    chunks = split(records_of(deliveries), [90])
    a, b = Rollups(3, N), Rollups(3, N)
    moved = {4, 5, 6, 7}
    for i, chunk in enumerate(chunks):
        phase = "b joined" if len(chunks) // 3 <= i < 2 * len(chunks) // 3 else "a alone"
        if phase == "b joined":
            a.drop(moved)
            feed(store, a, [r for r in chunk if r.partition not in moved])
            feed(store, b, [r for r in chunk if r.partition in moved])
        else:
            b.drop(moved)
            feed(store, a, chunk)
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    assert_rows_equal_recompute(store)
    generations = {p: roll.generation for p, roll in a.parts.items()}
    assert min(generations[p] for p in moved) > max(generations[p] for p in range(4))  # taken back: newer


def test_a_stale_owner_cannot_overwrite_the_new_one(store: ClickHouseStore) -> None:
    deliveries = simulation(days=2, seed=5)
    records = records_of(deliveries)
    half = len(records) // 2
    old, new = Rollups(3, N), Rollups(3, N)
    feed(store, old, records[:half])
    feed(store, new, records[half:])  # the new owner rebuilt from ClickHouse and went on
    good = stored_rollups(store)
    # the old owner, not knowing it lost its partitions, writes rows from its stale state at higher positions
    stale = preparer(old, store)(partition_batches(records[half : half + 5], process(records[half : half + 5], N)))
    for row in stale.rollups:
        row.version = (row.version >> 64 << 64) | 10**9
    store.write(stale)
    assert {k: figures(v) for k, v in stored_rollups(store).items()} == {k: figures(v) for k, v in good.items()}
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)


# --------------------------------------------------------------------------------- the partition count changes


def test_a_changed_partition_count_is_refused_until_repartition(store: ClickHouseStore) -> None:
    """8 partitions, then 12: UIDs move to other partitions. A worker refuses 12 until `repartition` rewrote the
    day aggregates for 12; then UIDs that already reported today under 8 report again under 12, exactly once."""
    deliveries = simulation(days=3, seed=21)
    last_day = max(d.received_at_ms for d in deliveries) // 86_400_000
    before = [
        d for d in deliveries if d.received_at_ms // 86_400_000 < last_day or d.received_at_ms % 86_400_000 < 43_200_000
    ]
    after = [d for d in deliveries if d not in before]
    store.check_partitions(8, TOPIC)
    Replayer(store, 8).feed(records_of(before, 8))
    with pytest.raises(PartitionCountChanged, match="12 partitions.*built for 8.*is-telemetry rollup repartition"):
        store.check_partitions(12, TOPIC)
    store.repartition(12)
    store.check_partitions(12, TOPIC)  # accepted now
    truth_before = ground_truth(before)
    assert truth_views(store, truth_before) == sorted_truth(truth_before)
    assert_rows_equal_recompute(store, 12)
    Replayer(store, 12).feed(records_of(after, 12))  # a restarted worker: state rebuilt for 12 partitions
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    assert_rows_equal_recompute(store, 12)


# --------------------------------------------------------------------------------------- checkpoint and rewind


class FakeRewinder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.acked: list[list[Any]] = []

    async def ack(self, events: Sequence[Any], bodies: int) -> None:
        self.acked.append(list(events))

    def pause(self, partitions: set[int]) -> None:
        self.calls.append(("pause", sorted(partitions)))

    async def rewind(self, partition: int, position: int) -> None:
        self.calls.append(("rewind", (partition, position)))

    def resume(self, partitions: set[int]) -> None:
        self.calls.append(("resume", sorted(partitions)))

    def discard(self, events: list[Any]) -> None:
        self.calls.append(("discard", list(events)))


def test_a_write_clickhouse_does_not_take_pauses_and_rewinds(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliveries = simulation(days=2, seed=8)
    records = records_of(deliveries)
    chunks = split(records, [100])
    rollups = Rollups(3, N)
    rewinder = FakeRewinder()
    acked = rewinder.acked
    store.retry_s, store.retry_max_s = 0.3, 0.1
    store.stopping.clear()

    async def run() -> None:
        cp = Checkpoint(RollupSink(store, rollups), rewinder, deadline_s=5, backoff=RetryPolicy(0.05, 0.05))
        for r in records:
            cp.first_seen(r.partition, r.offset)
        client = store.client
        real_insert = client.raw_insert  # the sink inserts JSON columns (sinks/clickhouse.py)

        def failing(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError("Connection refused")

        # batch 0 is written; batch 1 fails (ClickHouse down for longer than retry_s); batch 2 was prepared meanwhile
        await cp.submit(partition_batches(chunks[0], process(chunks[0], N)), [0], [])
        await cp.drain()
        monkeypatch.setattr(client, "raw_insert", failing)
        await cp.submit(partition_batches(chunks[1], process(chunks[1], N)), [1], [])
        await cp.submit(partition_batches(chunks[2], process(chunks[2], N)), [2], [])
        await cp.drain()
        assert acked == [[0]]  # nothing of batches 1 and 2 acknowledged
        failed_parts = {r.partition for r in chunks[1] + chunks[2]}
        pauses = [c for c in rewinder.calls if c[0] == "pause"]
        assert pauses and set(pauses[0][1]) <= failed_parts
        rewinds = dict(c[1] for c in rewinder.calls if c[0] == "rewind")
        first_unwritten = {
            p: max(r.offset for r in chunks[0] if r.partition == p) + 1 for p in {r.partition for r in chunks[0]}
        }
        for p, position in rewinds.items():  # back to the first position not written
            assert position == first_unwritten.get(p, min(r.offset for r in records if r.partition == p))
        assert not any(p in rollups.parts for p in rewinds)  # their state is dropped, to be rebuilt
        await asyncio.sleep(0.2)
        assert ("resume", sorted(cp_paused_all(rewinder))) in rewinder.calls
        # ClickHouse is back: the consumer re-delivers from the rewind positions; the rest follows
        monkeypatch.setattr(client, "raw_insert", real_insert)
        rest = [
            r
            for r in records
            if r.offset >= rewinds.get(r.partition, first_unwritten.get(r.partition, 0)) and r not in chunks[0]
        ]
        for i, chunk in enumerate(split(rest, [100])):
            await cp.submit(partition_batches(chunk, process(chunk, N)), [10 + i], [])
        await cp.drain()

    asyncio.run(run())
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    assert_rows_equal_recompute(store)


def cp_paused_all(rewinder: FakeRewinder) -> set[int]:
    return {p for c in rewinder.calls if c[0] == "pause" for p in c[1]}


# ------------------------------------------------------------------------------------------------- typed rows


def test_each_row_type_matches_its_table(store: ClickHouseStore) -> None:
    """One store for the three row types (each DESCRIBE only reads: a store each cost two more chDB starts)."""
    python_types = {"day": "Date", "received_at": "DateTime64", "computed_at": "DateTime64", "version": "UInt128"}
    for row_type, table in ((SnapshotRow, "snapshots"), (RejectionRow, "rejections"), (RollupRow, "rollup_partitions")):
        _cols, described = store.query(f"DESCRIBE TABLE {table}")
        assert [r[0] for r in described] == columns(row_type), table
        types = {r[0]: r[1] for r in described}
        for name, ch_type in python_types.items():
            if name in types:
                assert types[name].startswith(ch_type), (table, name, types[name])

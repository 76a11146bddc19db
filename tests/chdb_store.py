"""A chDB store in a directory, filled the way the workers fill it (records, batches, partitions) and read back
(the views, the analyst refreshes)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partition_of
from processors.pipeline import RawRecord
from processors.replay import Replayer
from sinks.clickhouse import ClickHouseStore
from tests.store_names import EXTRA_VIEWS

PARTITIONS = 8
TOPIC = "tts-telemetry-raw"
DAY0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
H = 3_600_000


@contextmanager
def opened(path: Path, **kwargs: Any) -> Iterator[ClickHouseStore]:
    store = ClickHouseStore(f"chdb://{path.resolve()}", **kwargs).open()
    store.stopping.set()  # a failing write raises at once instead of retrying until the test times out
    try:
        yield store
    finally:
        store.close()  # releases the chDB engine so the next test can open its own directory


def partition_for(key: bytes | None) -> int:
    """The partition the collector's keyed produce gives a record (Kafka's default partitioner; no key: crc32)."""
    return partition_of(key, PARTITIONS) if key is not None else zlib.crc32(b"") % PARTITIONS


def to_records(deliveries: Sequence[Sequence[Any]]) -> list[RawRecord]:
    """Deliveries as the raw topic holds them: keyed partition, offsets increasing per partition."""
    next_offset = [0] * PARTITIONS
    out = []
    for received_at_ms, key, body in deliveries:
        p = partition_for(key)
        headers = {HEADER_RECEIVED_AT: str(received_at_ms).encode()}
        out.append(RawRecord(TOPIC, p, next_offset[p], received_at_ms, headers, body, key))
        next_offset[p] += 1
    return out


def split(records: Sequence[RawRecord], sizes: Sequence[int]) -> list[list[RawRecord]]:
    """Consecutive chunks of the given sizes (the last size repeats) covering every record."""
    out, i, k = [], 0, 0
    while i < len(records):
        n = sizes[min(k, len(sizes) - 1)]
        out.append(list(records[i : i + n]))
        i, k = i + n, k + 1
    return out


def consume(store: ClickHouseStore, chunks: Sequence[Sequence[RawRecord]], replayer: Replayer | None = None) -> None:
    """What the worker does per batch: validate, re-key, roll up, write (a fresh worker rebuilds its state from
    ClickHouse, as after a restart)."""
    replayer = replayer or Replayer(store, PARTITIONS)
    for chunk in chunks:
        replayer.feed(chunk)


def view(store: ClickHouseStore, name: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    got = rows(store, f"SELECT {', '.join(columns)} FROM {name}")
    return sorted(got, key=lambda r: tuple(str(r[c]) for c in columns))


def truth_views(store: ClickHouseStore, truth: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every view of the ground-truth dict, read with exactly the ground truth's columns."""
    out = {}
    for name in ("fleet_daily", "gateways_by_frequency_plan_daily", "deployments_by_version_daily", "rejected_daily"):
        expected = truth[name]
        columns = list(expected[0]) if expected else ["day"]
        out[name] = view(store, name, columns)
    return out


def extra_views(store: ClickHouseStore) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, (key, value) in EXTRA_VIEWS.items():
        out[name] = view(store, name, ["day", key, value])
    out["fleet_flags"] = view(store, "fleet_daily", ["day", "default_uid_deployments", "inconsistent_deployments"])
    return out


def refresh(store: ClickHouseStore, attempts: int = 5) -> None:
    """Apply the queued UIDs (as a writer's applier would), then run the analyst refreshes now (as their schedule
    would) until no day is pending."""
    store.apply_analysts()
    for _ in range(attempts):
        for view in ("analyst_daily_refresh", "retention_refresh"):
            store.client.command(f"SYSTEM REFRESH VIEW {view}")
            store.client.command(f"SYSTEM WAIT VIEW {view}")
        pending = store.query("SELECT day FROM analyst_daily_pending")[1]
        retention = store.query(
            "SELECT (SELECT sum(changes) FROM snapshot_changes) > (SELECT max(inputs_seen) FROM retention_cohorts)"
        )[1][0][0]
        if not pending and not retention:
            return
    raise AssertionError(f"analyst days still pending: {store.query('SELECT * FROM analyst_daily_pending')[1]}")


def store_reader(store: ClickHouseStore) -> Any:
    def read(source: str, columns: Sequence[str]) -> list[dict[str, Any]]:
        names, rows = store.query(f"SELECT {', '.join(columns)} FROM {source}")
        return [dict(zip(names, r)) for r in rows]

    return read


def rows(store: ClickHouseStore, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    columns, result = store.query(sql, parameters)
    return [{c: (v.isoformat() if isinstance(v, date) else v) for c, v in zip(columns, r)} for r in result]

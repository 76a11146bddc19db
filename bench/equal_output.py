"""What analysts query, exported in a canonical form, to check that a peer stores exactly what the worker stores.

The tables the dashboard and the analysts' SQL read, each as sorted TabSeparated text:
- `snapshots` FINAL, every column (the latest snapshot of each UID and day, with its receive time and position);
- `rejections` FINAL, every column but `message` (a peer's validation may word its reasons otherwise; the reason
  codes must be the same);
- `rollup_partitions` FINAL, the day aggregates of each source partition, without the columns that say when and in
  which generation a row was written (`version`, `computed_at`), the maps in key order (the worker builds them in the
  order it met the keys, ClickHouse's `sumMap` sorts them);
- `daily_rollup`, the day aggregates summed over partitions (what `fleet_daily`, `rejected_daily` and the other views
  of migrations 0001/0003 read), without `computed_at`.

`export(query, directory)` writes one file per table with any client's `query(sql) -> bytes`; `differences(a, b)`
says how two exports differ (nothing if they are equal), with a few of the differing rows of each table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.rows import MAP_COLUMNS

_MAPS_SORTED = ", ".join(f"mapSort({m}) AS {m}" for m in MAP_COLUMNS)

#: file name -> the canonical query of one table
QUERIES = {
    "snapshots.tsv": "SELECT * FROM snapshots FINAL ORDER BY day, uid",
    "rejections.tsv": (
        "SELECT * EXCEPT (message) FROM rejections FINAL "
        "ORDER BY day, source_topic, source_partition, source_offset, source_index, received_at"
    ),
    "rollup_partitions.tsv": (
        f"SELECT * EXCEPT (version, computed_at) REPLACE ({_MAPS_SORTED}) FROM rollup_partitions FINAL "
        "ORDER BY day, source_partition"
    ),
    "daily_rollup.tsv": "SELECT * EXCEPT (computed_at) FROM daily_rollup ORDER BY day",
}

#: what the tables are called in a line of the bench's output
TABLES = "snapshots, rejections (with reasons), day aggregates per partition and per day"


def export(query: Callable[[str], bytes], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in QUERIES.items():
        (directory / name).write_bytes(query(sql + " FORMAT TabSeparated"))
    return directory


def differences(reference: Path, other: Path, shown: int = 3) -> list[str]:
    """How `other`'s export differs from `reference`'s, a line per table that differs (empty: equal)."""
    found = []
    for name in QUERIES:
        a, b = (reference / name).read_bytes(), (other / name).read_bytes()
        if a == b:
            continue
        lines_a, lines_b = a.splitlines(), b.splitlines()
        set_a, set_b = set(lines_a), set(lines_b)
        only_a = [line for line in lines_a if line not in set_b][:shown]
        only_b = [line for line in lines_b if line not in set_a][:shown]
        found.append(
            f"{name.removesuffix('.tsv')}: {len(lines_a)} rows against {len(lines_b)}; only in the reference: "
            f"{[x[:300].decode('utf-8', 'replace') for x in only_a]}; only in the other: "
            f"{[x[:300].decode('utf-8', 'replace') for x in only_b]}"
        )
    return found


def export_store(dsn: str, directory: Path) -> Path:
    """Export the tables of a ClickHouse store (e.g. a stopped worker's chDB directory)."""
    from sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(dsn).open()
    try:
        return export(lambda sql: bytes(store.client.raw_query(sql)), directory)
    finally:
        store.close()

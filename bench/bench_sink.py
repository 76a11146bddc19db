"""ClickHouse sink throughput: ClickHouseStore.write against clickhouse-connect's raw insert, same rows, same engine.

    python -m bench.bench_sink [--rows N] [--batch B] [--days D] [--smoke]

Makes N snapshot rows (default 200,000): about 350 real rows from the simulator (bodies validated and rolled
up by processors.pipeline, as the worker does), stamped out into a fleet of N/D deployments that each report
on each of D days (default 40), in receive-time order. Then, in one run and one embedded chDB in a temporary
directory:

(a) raw: clickhouse-connect `client.insert` of the same rows (already converted to lists) into a fresh table
    with the schema and engine of `snapshots` (`CREATE TABLE ... AS snapshots`), in batches of B (default
    5000);
(b) store: the sink's write path in batches of B: the roll-up (`processors.rollup.roll_up`, per source partition:
    the day aggregate rows of the days the batch touches, no read of ClickHouse) and `ClickHouseStore.write`
    (snapshots and aggregate rows, converted from the typed rows); the roll-up's share is reported separately.
(a) and (b) alternate batch by batch, so both see the same background merges and the same load from other
processes (the machine may be shared). For reference, one single insert of all N rows into another fresh
table is timed at the end.

It prints rows/s of each and the ratio b/a, checks that the store holds N snapshots and that fleet_daily
adds up to N, and `main()` returns the figures as a dict; the last line is `store_vs_raw_insert=<b/a>`. `--smoke`:
2,000 rows over 4 days, batches of 500.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partition_of
from core.rows import PartitionBatch, SnapshotRow, columns, ms_to_datetime, values
from processors.pipeline import RawRecord, process
from processors.rollup import Rollups, roll_up
from processors.snapshot import day_of
from producers.simulator import DAY_MS, generate
from sinks.clickhouse import ClickHouseStore

PARTITIONS = 8
FIRST_DAY_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def template_rows(seed: int = 11) -> list[SnapshotRow]:
    """Real snapshot rows: one simulated day of 300 deployments and 60 CLI installs through the pipeline."""
    sim = generate(300, 60, 1, seed, end_day="2025-01-01", resend_rate=0.0, changed_rate=0.0, malformed_rate=0.0)
    records = [
        RawRecord(
            "raw",
            partition_of(d.key, PARTITIONS),
            i,
            d.received_at_ms,
            {HEADER_RECEIVED_AT: str(d.received_at_ms).encode()},
            d.body,
            d.key,
        )
        for i, d in enumerate(sim.deliveries)
        if d.key
    ]
    return process(records, PARTITIONS).snapshots


def make_rows(n: int, days: int) -> list[SnapshotRow]:
    """n rows: a fleet of ceil(n/days) UIDs, each reporting once a day, over `days` days, in receive-time order."""
    templates = template_rows()
    per_day = -(-n // days)
    uids = [base64.b64encode(hashlib.sha512(b"bench-%d" % j).digest()).decode() for j in range(per_day)]
    partitions = [partition_of(u.encode(), PARTITIONS) for u in uids]
    offsets = [0] * PARTITIONS
    rows: list[SnapshotRow] = []
    for i in range(n):
        day, j = divmod(i, per_day)
        t = templates[j % len(templates)]
        received = FIRST_DAY_MS + day * DAY_MS + (j * (DAY_MS - 1)) // per_day
        p = partitions[j]
        rows.append(
            replace(
                t,
                uid=uids[j],
                day=day_of(received),
                received_at=ms_to_datetime(received),
                version=(received << 64) | offsets[p],
                source_partition=p,
                source_offset=offsets[p],
            )
        )
        offsets[p] += 1
    return rows


def batches(rows: list[SnapshotRow]) -> list[PartitionBatch]:
    parts: dict[int, PartitionBatch] = {}
    for r in rows:
        part = parts.setdefault(r.source_partition, PartitionBatch(r.source_partition, r.source_offset))
        part.position = max(part.position, r.source_offset)
        part.snapshots.append(r)
        part.bodies.append(r.body.encode())
    return list(parts.values())


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1) if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_sink", description="ClickHouse sink throughput")
    ap.add_argument("--rows", type=int, default=200_000, help="snapshot rows to write")
    ap.add_argument("--batch", type=int, default=5000, help="rows per insert / per store write (the worker's batch)")
    ap.add_argument("--days", type=int, default=40, help="days the rows spread over (rows/days UIDs a day)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv if argv is not None else [])
    if args.smoke:
        args.rows, args.batch, args.days = 2000, 500, 4
    n, b = args.rows, args.batch

    t0 = time.perf_counter()
    rows = make_rows(n, args.days)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    converted = [values(r) for r in rows]
    convert_s = time.perf_counter() - t0
    body_bytes = sum(len(r.body) for r in rows) // n
    names = columns(SnapshotRow)

    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        store = ClickHouseStore(f"chdb://{Path(tmp).resolve() / 'chdb'}").open()
        try:
            c = store.client
            for table in ("bench_raw_batched", "bench_raw_single"):
                c.command(f"DROP TABLE IF EXISTS {table}")
                c.command(f"CREATE TABLE {table} AS snapshots")

            c.insert("bench_raw_batched", converted[:100], column_names=names)  # warm-up
            c.command("TRUNCATE TABLE bench_raw_batched")
            rollups = Rollups(3, PARTITIONS)
            rollup_s = 0.0
            # (a) and (b) batch by batch, interleaved, so that both see the same background merges and the same
            # load from whatever else runs on the machine
            raw_s = write_s = 0.0
            for i in range(0, n, b):
                t0 = time.perf_counter()
                c.insert("bench_raw_batched", converted[i : i + b], column_names=names)  # (a) raw
                t1 = time.perf_counter()
                batch = roll_up(rollups, store, batches(rows[i : i + b]))  # (b) roll up, convert, insert
                t2 = time.perf_counter()
                store.write(batch)
                t3 = time.perf_counter()
                raw_s += t1 - t0
                write_s += t3 - t1
                rollup_s += t2 - t1
            t0 = time.perf_counter()
            c.insert("bench_raw_single", converted, column_names=names)  # reference: one big insert
            raw_single_s = time.perf_counter() - t0

            stored = store.query("SELECT count() FROM snapshots FINAL")[1][0][0]
            counted = store.query("SELECT sum(deployments + cli_installs) FROM fleet_daily")[1][0][0]
            raw_rows = store.query("SELECT count() FROM bench_raw_batched")[1][0][0]
            for table in ("bench_raw_batched", "bench_raw_single"):
                c.command(f"DROP TABLE IF EXISTS {table}")
        finally:
            store.close()
    if not stored == counted == raw_rows == n:
        raise AssertionError(
            f"wrote {n} rows but the store holds {stored} snapshots, fleet_daily counts {counted}, "
            f"the raw table {raw_rows}"
        )

    raw_rate, write_rate = _rate(n, raw_s), _rate(n, write_s)
    result = {
        "bench": "sink",
        "rows": n,
        "batch": b,
        "days": args.days,
        "uids_per_day": -(-n // args.days),
        "body_bytes_avg": body_bytes,
        "cpus": os.cpu_count(),
        "engine": "chdb (temporary directory)",
        "generate_s": round(gen_s, 2),
        "convert_rows_per_s": _rate(n, convert_s),
        "raw_insert_s": round(raw_s, 2),
        "raw_insert_rows_per_s": raw_rate,
        "raw_single_insert_rows_per_s": _rate(n, raw_single_s),
        "store_write_s": round(write_s, 2),
        "store_write_rows_per_s": write_rate,
        "rollup_s": round(rollup_s, 2),
        "rollup_share": round(rollup_s / write_s, 3) if write_s else None,
        "ratio": round(write_rate / raw_rate, 3) if raw_rate else None,
    }
    print(
        f"sink bench: {n} snapshot rows ({result['uids_per_day']} UIDs/day x {args.days} days, "
        f"body ~{body_bytes} B), batches of {b}, {result['engine']}, {result['cpus']} CPUs"
    )
    print(f"  (a) raw clickhouse-connect insert, batches of {b}: {raw_rate:>12,.0f} rows/s ({raw_s:.2f}s)")
    print(f"      raw, one insert of all {n} rows:   {result['raw_single_insert_rows_per_s']:>12,.0f} rows/s")
    print(
        f"  (b) roll-up + ClickHouseStore.write, batches of {b}: {write_rate:>12,.0f} rows/s ({write_s:.2f}s, of which "
        f"{rollup_s:.2f}s roll-up)"
    )
    print(f"      row -> values conversion alone: {result['convert_rows_per_s']:>12,.0f} rows/s")
    print(json.dumps(result))
    result["last_line"] = f"store_vs_raw_insert={result['ratio']}"
    print(result["last_line"])
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

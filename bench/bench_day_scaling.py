"""Write cost per batch as one day's fleet grows: 10k, 100k and 1M UIDs through the real write path.

    python -m bench.bench_day_scaling [--sizes 10000,100000,1000000] [--batch 5000] [--smoke]

For each size, in a fresh chDB directory: one UTC day on which N distinct Identity Server UIDs (88-char base64
SHA-512, ~600-byte bodies) each report once, fed in batches of B records through
the path a worker runs: validate (`processors.pipeline.process`, not timed), the roll-up (`roll_up`: per-partition
state, timed as "roll-up") and the sink write (`ClickHouseStore.write`: snapshots, aggregate rows, timed as
"write"). Before, the sink recomputed every touched day from all of its snapshots (a FINAL read of the whole
day), so its cost grew with the day; now no write reads a day back.

Prints, per size, the median time per batch of the write and of roll-up + write over the second half of the
batches (the day is large by then), the load average, and as its last line `ratio_1M_vs_10k=<x>`: the median
roll-up + write per batch at the largest size over the smallest (goal: at most 1.5). `--smoke`: 500 and 1,000 UIDs
in batches of 250 (its last line then `ratio_1k_vs_500=<x>`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from bench.bench_state_memory import body_of, uid_of
from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partition_of
from processors.pipeline import RawRecord, process
from processors.rollup import Rollups, roll_up
from processors.worker import partition_batches
from sinks.clickhouse import ClickHouseStore

PARTITIONS = 8
DAY_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def run_size(n: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-day-scaling-") as tmp:
        store = ClickHouseStore(f"chdb://{tmp}/chdb").open()
        try:
            rollups = Rollups(3, PARTITIONS)
            offsets = [0] * PARTITIONS
            write_s: list[float] = []
            total_s: list[float] = []
            for start in range(0, n, batch):
                records = []
                for i in range(start, min(n, start + batch)):
                    uid = uid_of(i)
                    key = uid.encode()
                    p = partition_of(key, PARTITIONS)
                    at = DAY_MS + (i * 86_399_000) // n
                    records.append(
                        RawRecord(
                            "raw", p, offsets[p], at, {HEADER_RECEIVED_AT: str(at).encode()}, body_of(i, uid), key
                        )
                    )
                    offsets[p] += 1
                outcome = process(records, PARTITIONS)
                parts = partition_batches(records, outcome)
                t0 = time.perf_counter()
                b = roll_up(rollups, store, parts)
                t1 = time.perf_counter()
                store.write(b)
                t2 = time.perf_counter()
                write_s.append(t2 - t1)
                total_s.append(t2 - t0)
            stored = store.query("SELECT count() FROM snapshots FINAL")[1][0][0]
            counted = store.query("SELECT sum(deployments) FROM fleet_daily")[1][0][0]
        finally:
            store.close()
    if stored != n or counted != n:
        raise SystemExit(f"{n} UIDs: {stored} snapshots stored, {counted} deployments counted: not exact")
    tail = len(write_s) // 2
    return {
        "uids": n,
        "batches": len(write_s),
        "write_ms": round(statistics.median(write_s[tail:]) * 1000, 1),
        "rollup_and_write_ms": round(statistics.median(total_s[tail:]) * 1000, 1),
        "state_uid_days": rollups.uid_days(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_day_scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="UIDs per day, comma-separated")
    ap.add_argument("--batch", type=int, default=2000, help="records per batch")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes, args.batch = "500,1000", 250
    sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    for n in sizes:
        r = run_size(n, args.batch)
        results.append(r)
        print(
            f"{n:>9,} UIDs/day, {r['batches']:>4} batches of {args.batch}: write {r['write_ms']:7.1f} ms/batch, "
            f"roll-up + write {r['rollup_and_write_ms']:7.1f} ms/batch (median of the second half; "
            f"load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    ratio = results[-1]["rollup_and_write_ms"] / results[0]["rollup_and_write_ms"]
    out = {"sizes": results, "ratio": round(ratio, 2), "load_average": round(os.getloadavg()[0], 2)}
    label = f"{sizes[-1] // 1_000_000}M" if sizes[-1] >= 1_000_000 else f"{sizes[-1] // 1000}k"
    first = f"{sizes[0] // 1000}k" if sizes[0] >= 1000 else str(sizes[0])
    out["last_line"] = f"ratio_{label}_vs_{first}={ratio:.2f}"
    print(out["last_line"])
    return out


if __name__ == "__main__":
    main()

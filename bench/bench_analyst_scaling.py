"""The analysts' figures brought up to date after one batch, on a small fleet and a large one: the cost must follow
the batch, not the fleet (issue 25).

    python -m bench.bench_analyst_scaling [--small 10000] [--large 1000000] [--batch 2000] [--batches 5] [--smoke]

For each size, in an embedded chDB of its own: one day of N deployments (and N / 10 CLI installs) is written
straight into `snapshots` (bench/analyst_data.py), their events computed (sinks/analysts.py `drain`) and the
analyst refreshes run once: the figures are up to date. Then, `--batches` times, a batch of `--batch` new
snapshots of that day (half of them later reports of deployments already there, with other figures; half new
deployments) is written as a worker writes it, and timed until the figures show it:
- `write`: the INSERT into snapshots (its materialized views run on it);
- `events`: sinks/analysts.py's applier, the batch's UIDs (queued by the insert) applied;
- `refresh`: the analyst refreshes (`SYSTEM REFRESH VIEW analyst_daily_refresh`, `retention_refresh`), waited for.
At the end, the day's figures kept batch by batch must equal the whole-day recompute (analyst_compute) of the same
snapshots, every column. For reference, the whole-day
recompute the refresh ran before migration 0009 (`analyst_compute` of the day) is timed once per size.

The sizes run one after the other in this process (the same machine load for both). Prints each size's medians, the
load average, and last `analyst_update_ratio_1M_vs_10k=<large/small>` (target at most 1.5; the line names the sizes
run when they are not 1M and 10k). `--smoke`: 1,000 and 5,000 deployments, batches of 200, 2 batches.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.analyst_data import CLI_DAY_SQL, IS_COLUMNS, IS_DAY_SQL, insert_sql
from sinks import analysts
from sinks.clickhouse import ClickHouseStore

DAY = date(2025, 6, 30)
INDEX = 40  # the day's number in the synthetic fleet's life (bench/analyst_data.py)
VIEWS = ("analyst_daily_refresh", "retention_refresh")

#: A batch: later reports (received at the day's last second, so they win) of the given deployment numbers
BATCH_SQL = insert_sql(
    {
        **IS_COLUMNS,
        "received_at": "toDateTime64(toDateTime({day:Date}, 'UTC') + toIntervalSecond(86399), 3, 'UTC')",
        "end_devices": "toUInt64(1 + cityHash64(n, {round:UInt32}) % 5000)",
    },
    """
FROM (SELECT arrayJoin({numbers:Array(UInt64)}) AS n, 21 + cityHash64(n, 5) % 15 AS minor)
""",
)


def refresh(store: ClickHouseStore) -> None:
    for view in VIEWS:
        store.client.command(f"SYSTEM REFRESH VIEW {view}")
        store.client.command(f"SYSTEM WAIT VIEW {view}")


def check(store: ClickHouseStore) -> None:
    """The day's figures, kept batch by batch, equal the whole-day recompute (analyst_compute) of the same data."""
    kept = store.query(f"SELECT * EXCEPT (computed_at, inputs_seen) FROM analyst_daily FINAL WHERE day = '{DAY}'")
    whole = store.query(
        f"SELECT * EXCEPT (computed_at, inputs_seen) FROM analyst_compute(days = ['{DAY}'], seen = [0], lookback = 7, "
        "cli_lookback = 30, factor = 10, gap = 7)"
    )
    assert kept[0] == whole[0], "the columns differ"
    differ = [name for name, a, b in zip(kept[0], kept[1][0], whole[1][0]) if _canon(a) != _canon(b)]
    assert not differ, f"the figures kept batch by batch differ from the whole-day recompute in {differ}"


def _canon(value: Any) -> Any:
    """Maps as sorted items (their key order is not a figure); named tuples (read as dicts) as tuples."""
    if isinstance(value, dict):
        return sorted(value.items())
    if isinstance(value, list):
        return [tuple(v.values()) if isinstance(v, dict) else v for v in value]
    return value


def run_size(size: int, batch: int, batches: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-analyst-scaling-"))
    store = ClickHouseStore(f"chdb://{tmp / 'chdb'}").open()
    try:
        for view in VIEWS:  # run by us, timed
            store.client.command(f"SYSTEM STOP VIEW {view}")
        started = time.perf_counter()
        params = {"day": DAY, "index": INDEX, "deployments": size, "installs": size // 10}
        store.client.command(IS_DAY_SQL, parameters=params)
        store.client.command(CLI_DAY_SQL, parameters=params)
        uids = analysts.drain(store.client)
        for view in VIEWS:
            store.client.command(f"SYSTEM START VIEW {view}")
            store.client.command(f"SYSTEM REFRESH VIEW {view}")
            store.client.command(f"SYSTEM WAIT VIEW {view}")
            store.client.command(f"SYSTEM STOP VIEW {view}")
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        store.query(
            f"SELECT count() FROM analyst_compute(days = ['{DAY}'], seen = [0], lookback = 7, cli_lookback = 30, "
            "factor = 10, gap = 7)"
        )
        whole_day_s = time.perf_counter() - started
        print(
            f"{size:,} deployments: built in {build_s:.1f} s ({uids:,} UIDs); the whole-day recompute of before: "
            f"{whole_day_s:.3f} s",
            flush=True,
        )
        store.client.command("SYSTEM START VIEW analyst_daily_refresh")
        store.client.command("SYSTEM START VIEW retention_refresh")
        times: dict[str, list[float]] = {"write": [], "events": [], "refresh": [], "total": []}
        fresh = size  # numbers of new deployments
        for round_ in range(batches):
            numbers = [(round_ * 7919 + i * 104729) % size for i in range(batch // 2)]
            numbers += list(range(fresh, fresh + batch - batch // 2))
            fresh += batch - batch // 2
            t0 = time.perf_counter()
            store.client.command(
                BATCH_SQL, parameters={"day": DAY, "index": INDEX, "numbers": numbers, "round": round_}
            )
            t1 = time.perf_counter()
            analysts.drain(store.client)
            t2 = time.perf_counter()
            refresh(store)
            t3 = time.perf_counter()
            for name, value in (("write", t1 - t0), ("events", t2 - t1), ("refresh", t3 - t2), ("total", t3 - t0)):
                times[name].append(value)
        check(store)
        medians = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"  a batch of {batch:,}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()),
            flush=True,
        )
        return {
            "size": size,
            "build_s": build_s,
            "whole_day_s": whole_day_s,
            **{f"{k}_s": v for k, v in medians.items()},
        }
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_analyst_scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.small, args.large, args.batch, args.batches = 1_000, 5_000, 200, 2
    small = run_size(args.small, args.batch, args.batches)
    large = run_size(args.large, args.batch, args.batches)
    ratio = large["total_s"] / small["total_s"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    name = f"analyst_update_ratio_{label(args.large)}_vs_{label(args.small)}"
    print(f"\nload average {load}; whole-day recompute of before: {large['whole_day_s'] / small['whole_day_s']:.1f}x")
    print(f"{name}={ratio:.3f}")
    return {"small": small, "large": large, "ratio": ratio, "load": load, "last_line": f"{name}={ratio:.3f}"}


if __name__ == "__main__":
    main()

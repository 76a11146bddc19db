"""The analysts' figures brought up to date after one batch, on a small fleet and a large one: the cost must follow
the batch, not the fleet (issue 25).

    python -m bench.bench_analyst_scaling [--small 10000] [--large 1000000] [--batch 2000] [--batches 5] [--smoke]

Each size runs in a process of its own (chDB holds one data directory per process), both children of this one, and
they take their batches in turn, so both see the same machine load. For each size, in an embedded chDB of its own:
one day of N deployments (and N / 10 CLI installs) is written straight into `snapshots` (bench/analyst_data.py),
their events computed (sinks/analysts.py `drain`) and the analyst refreshes run once: the figures are up to date.
Then, `--batches` times, a batch of `--batch` new snapshots of that day (half of them later reports of deployments
already there, with other figures; half new deployments) is written as a worker writes it, and timed until the
figures show it:
- `write`: the INSERT into snapshots (its materialized views run on it);
- `events`: sinks/analysts.py's applier, the batch's UIDs (queued by the insert) applied;
- `refresh`: the analyst refreshes (`SYSTEM REFRESH VIEW analyst_daily_refresh`, `retention_refresh`), waited for.
At the end, each day's figures kept batch by batch must equal the whole-day recompute (`analyst_compute`) of the
same snapshots, every column. For reference, the whole-day recompute the refresh ran before migration 0009 is timed
once per size.

Prints each size's medians, the load average, and last `analyst_update_ratio_1M_vs_10k=<large/small>` (target at
most 1.5; the line names the sizes run when they are not 1M and 10k). `--smoke`: 1,000 and 5,000 deployments,
batches of 200, 2 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.analyst_data import CLI_DAY_SQL, IS_COLUMNS, IS_DAY_SQL, insert_sql
from sinks import analysts
from sinks.clickhouse import ClickHouseStore

REPO = Path(__file__).resolve().parent.parent
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


class Fleet:
    """One size's store, built, in this process: `batch(round)` writes one batch and brings the figures up to date,
    timed."""

    def __init__(self, size: int, batch: int) -> None:
        self.size, self.batch_size, self.fresh = size, batch, size  # `fresh`: the next new deployment's number
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-analyst-scaling-"))
        self.store = ClickHouseStore(f"chdb://{self.tmp / 'chdb'}").open()

    def build(self) -> dict[str, Any]:
        store = self.store
        for view in VIEWS:  # run by us, timed
            store.client.command(f"SYSTEM STOP VIEW {view}")
        started = time.perf_counter()
        params = {"day": DAY, "index": INDEX, "deployments": self.size, "installs": self.size // 10}
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
        store.client.command("SYSTEM START VIEW analyst_daily_refresh")
        store.client.command("SYSTEM START VIEW retention_refresh")
        return {"size": self.size, "uids": uids, "build_s": build_s, "whole_day_s": whole_day_s}

    def batch(self, round_: int) -> dict[str, float]:
        """Half later reports of deployments there, half new deployments; timed until the figures show them."""
        store, half = self.store, self.batch_size // 2
        numbers = [(round_ * 7919 + i * 104729) % self.size for i in range(half)]
        numbers += list(range(self.fresh, self.fresh + self.batch_size - half))
        self.fresh += self.batch_size - half
        t0 = time.perf_counter()
        store.client.command(BATCH_SQL, parameters={"day": DAY, "index": INDEX, "numbers": numbers, "round": round_})
        t1 = time.perf_counter()
        analysts.drain(store.client)
        t2 = time.perf_counter()
        refresh(store)
        t3 = time.perf_counter()
        return {"write": t1 - t0, "events": t2 - t1, "refresh": t3 - t2, "total": t3 - t0}

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def serve(size: int, batch: int) -> None:
    """A fleet driven over stdin/stdout, one JSON line per command: `build`, `batch <round>`, `check`, `quit`."""
    fleet = Fleet(size, batch)
    try:
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "build":
                answer: Any = fleet.build()
            elif command == "batch":
                answer = fleet.batch(int(arg))
            elif command == "check":
                check(fleet.store)
                answer = {"checked": True}
            else:
                break
            print(json.dumps(answer), flush=True)
    finally:
        fleet.close()


class Server:
    """A `serve` subprocess: chDB holds one data directory per process, so each size runs in its own, and the two
    take their batches in turn (the same machine load for both)."""

    def __init__(self, size: int, batch: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_analyst_scaling", "--serve", str(size), "--batch", str(batch)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: the bench's fleet process ended (exit code {self.proc.wait()}): see above")
        return json.loads(line)

    def ask(self, command: str) -> Any:
        self.send(command)
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_analyst_scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)  # a fleet process (Server)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.small, args.large, args.batch, args.batches = 1_000, 5_000, 200, 2
    if args.serve:
        serve(args.serve, args.batch)
        return {}
    servers = {"small": Server(args.small, args.batch), "large": Server(args.large, args.batch)}
    try:
        for s in servers.values():  # built side by side
            s.send("build")
        built = {name: s.answer() for name, s in servers.items()}
        for b in built.values():
            print(
                f"{b['size']:,} deployments: built in {b['build_s']:.1f} s ({b['uids']:,} UIDs); the whole-day "
                f"recompute of before: {b['whole_day_s']:.3f} s",
                flush=True,
            )
        times: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
        for round_ in range(args.batches):
            order = ["small", "large"] if round_ % 2 == 0 else ["large", "small"]
            for name in order:
                for k, v in servers[name].ask(f"batch {round_}").items():
                    times[name].setdefault(k, []).append(v)
        for s in servers.values():
            s.ask("check")
    finally:
        for s in servers.values():
            s.close()
    medians = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    for name, size in (("small", args.small), ("large", args.large)):
        print(
            f"{size:,} deployments, a batch of {args.batch:,} (median of {args.batches}): "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians[name].items()),
            flush=True,
        )
    ratio = medians["large"]["total"] / medians["small"]["total"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    name = f"analyst_update_ratio_{label(args.large)}_vs_{label(args.small)}"
    before = built["large"]["whole_day_s"] / built["small"]["whole_day_s"]
    print(f"\nload average {load}; the whole-day recompute of before: {before:.1f}x")
    print(f"{name}={ratio:.3f}")
    return {"built": built, "medians": medians, "ratio": ratio, "load": load, "last_line": f"{name}={ratio:.3f}"}


if __name__ == "__main__":
    main()

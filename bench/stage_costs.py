"""The worker's CPU per body, stage by stage, in one process: no broker, no ClickHouse.

    python -m bench.stage_costs [--bodies 40000] [--rounds 5] [--batch 5000] [--smoke]

The fleet simulator's bodies (`producers.simulator.generate`, as bench/bench_processors.py makes them: ~510-byte IS
and CLI bodies over 30 days, with re-sends, changed and malformed bodies) packed 100 to a Kafka record per
partition (core/envelope.py, as the collector packs them), then fed batch by batch (`--batch` bodies, the sink's
batch size) through each stage the worker runs, in its order, with the collector paused as the worker pauses it:

- unpack:    `records_of` (processors/worker.py): the many-bodies records as one RawRecord a body
- decode:    `orjson.loads` of each body: a reference (JSON parsed in C, nothing checked), not a stage of its own
- validate:  `validate` (processors/validate.py): the body parsed and checked against the allowlist (core/schema.py)
- rows:      `snapshot_row` and `inconsistencies` of each valid body (processors/snapshot.py): each body validated
             and its row built at once, as the pipeline does, less `validate` (holding a batch of parsed messages
             would cost more than the pipeline pays)
- fast path: `processors.fastpath.row` of each body: decoded, checked and made its row in one pass (msgspec); the
             bodies it declines (CLI reports, rejections) take validate and rows in `process` (absent before it)
- process:   `process` (processors/pipeline.py): validate, rows, rejection rows, the one-UID-one-partition check:
             the pipeline as the worker runs it (it includes the three stages above, not added to them)
- dedup:     `Deduplicator` (processors/dedup.py) over the snapshot rows, committed each batch (`--no-sink` workers)
- roll-up:   `roll_up` (processors/rollup.py) of the batch's rows, from an empty state (`partition_batches` included)
- serialise: the rows the roll-up writes, as the sink's JSON-columns inserts encode them (sinks/inserts.py)

Each figure is the thread's CPU time (`time.thread_time_ns`, so other processes' load counts less than in wall time)
over every body of the input, valid or not, in µs per body: the best of `--rounds` rounds. `total` adds unpack,
process, roll-up and serialise: the worker's per-body Python outside faust and ClickHouse. Its last line is
`stage_costs_total_us_per_body=<µs>`. `--smoke`: 2,000 bodies, one round (`python -m bench --smoke`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from datetime import date
from types import SimpleNamespace
from typing import Any

#: The stages in the worker's order (`decode` is a reference; `process` holds validate and rows).
STAGES = ("unpack", "decode", "validate", "rows", "fast path", "process", "dedup", "roll-up", "serialise")
#: What `total` adds up: each body's pass through the worker's Python, once.
TOTAL = ("unpack", "process", "roll-up", "serialise")
PARTITIONS = 8  # as bench/bench_processors.py's raw topic
BODIES_PER_RECORD = 100


class EmptyState:
    """A state source with nothing stored yet (processors/rollup.py `StateSource`): every partition starts empty."""

    def __init__(self) -> None:
        self.generation = 0

    def newest_days(self, partitions: list[int]) -> dict[int, date]:
        return {}

    def allocate_generation(self) -> int:
        self.generation += 1
        return self.generation

    def latest_snapshots(self, partitions: list[int], partitions_total: int, since: date) -> Iterator[Any]:
        return iter(())

    def rejections_since(self, partitions: list[int], since: date) -> Iterator[Any]:
        return iter(())


def events_of(n: int) -> list[Any]:
    """n simulator bodies as the worker's Kafka events: records of up to 100 bodies of one partition's UIDs."""
    from core.envelope import BATCH_FORMAT, HEADER_FORMAT, Frame, pack
    from core.partitioning import partition_of
    from producers.simulator import generate

    deployments = max(10, n * 1300 // 36_000 + 10)  # as bench/bench_processors.py `produce`
    while True:
        sim = generate(deployments, max(2, deployments // 6), 30, seed=1, end_day="2025-01-31")
        if len(sim.deliveries) >= n:
            break
        deployments = deployments * 11 // 10 + 1
    pending: dict[int, list[Frame]] = {}
    offsets = [0] * PARTITIONS
    events: list[Any] = []

    def flush(p: int) -> None:
        frames = pending.pop(p)
        message = SimpleNamespace(
            topic="raw",
            partition=p,
            offset=offsets[p],
            key=None,
            value=pack(frames),
            headers=[(HEADER_FORMAT, BATCH_FORMAT)],
            timestamp=frames[0].received_at_ms / 1000,
        )
        offsets[p] += 1
        events.append(SimpleNamespace(message=message, value=message.value))

    for i, d in enumerate(sim.deliveries[:n]):
        p = partition_of(d.key, PARTITIONS) if d.key is not None else i % PARTITIONS
        frames = pending.setdefault(p, [])
        frames.append(Frame(d.received_at_ms, b"TheThingsStack/3.32.1 (linux/amd64)", d.body))
        if len(frames) >= BODIES_PER_RECORD:
            flush(p)
    for p in list(pending):
        flush(p)
    return events


def batches_of(events: list[Any], bodies: int) -> list[list[Any]]:
    """The events in takes of about `bodies` bodies each."""
    out: list[list[Any]] = [[]]
    count = 0
    for e in events:
        if count >= bodies:
            out.append([])
            count = 0
        out[-1].append(e)
        count += e.message.value.count(b"\n") + 1
    return out


def _json_columns(rows: list[Any]) -> bytes:
    """The rows as the sink's insert encodes them (sinks/inserts.py `_json_columns`), `version` (UInt128) as text."""
    from core.rows import columns, getters
    from sinks.inserts import _json_columns as encode  # imported before the timing (main)

    if not rows:
        return b""
    row_type = type(rows[0])
    names = columns(row_type)
    types = ["UInt128" if name == "version" else "" for name in names]
    return encode(names, types, [[get(r) for r in rows] for get in getters(row_type)])


def _decoded(loads: Callable[[bytes], Any], body: bytes) -> Any:
    try:
        return loads(body)
    except ValueError:  # a malformed body (orjson's and msgspec's decode errors are ValueErrors)
        return None


class Clock:
    """The thread's CPU time spent per stage: `clock.lap(stage)` charges the time since the previous lap to it."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0)
        self.last = time.thread_time_ns()

    def start(self) -> None:
        self.last = time.thread_time_ns()

    def lap(self, stage: str) -> None:
        now = time.thread_time_ns()
        self.spent[stage] += now - self.last
        self.last = now


def one_round(takes: list[list[Any]], n: int) -> dict[str, float]:
    """µs of CPU per body of each stage, over every take."""
    import orjson

    from core import gctuning
    from core.schema import PLAUSIBILITY_LIMIT
    from processors.dedup import Deduplicator
    from processors.pipeline import process
    from processors.rollup import Rollups, roll_up
    from processors.snapshot import snapshot_row
    from processors.validate import Rejection, inconsistencies, validate
    from processors.worker import partition_batches, records_of

    try:
        from processors.fastpath import row as fast_row
    except ImportError:  # before the fast path
        fast_row = None  # type: ignore[assignment]
    clock = Clock()
    rollups, source, dedup = Rollups(7, PARTITIONS), EmptyState(), Deduplicator()
    for events in takes:
        with gctuning.paused():
            clock.start()
            records = [r for e in events for r in records_of(e)]
            clock.lap("unpack")
            bodies = [r.value for r in records if r.error is None]
            clock.start()
            for body in bodies:
                _decoded(orjson.loads, body)
            clock.lap("decode")
            for body in bodies:
                validate(body)  # each message dropped at once, as the pipeline drops it once its row is built
            clock.lap("validate")
            for r in records:
                if r.error is None:
                    m = validate(r.value)
                    if not isinstance(m, Rejection):
                        snapshot_row(m, r.value, r.received_at_ms, r.partition, r.offset, inconsistencies(m), r.index)
            clock.lap("rows")  # validate and rows: `validate` is taken off below
            if fast_row is not None:
                for r in records:
                    if r.error is None:
                        fast_row(r.value, r.received_at_ms, r.partition, r.offset, r.index, PLAUSIBILITY_LIMIT)
            clock.lap("fast path")
            outcome = process(records, PARTITIONS)
            clock.lap("process")
            for row, body in zip(outcome.snapshots, outcome.bodies):
                dedup.is_duplicate(row.day, row.uid, body)
            dedup.commit()
            clock.lap("dedup")
            batch = roll_up(rollups, source, partition_batches(records, outcome))
            clock.lap("roll-up")
            for rows in (batch.snapshots, batch.rejections, batch.rollups):
                _json_columns(rows)
            clock.lap("serialise")
    clock.spent["rows"] -= clock.spent["validate"]
    return {stage: ns / 1000 / n for stage, ns in clock.spent.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.stage_costs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bodies", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=5000, help="bodies a take (the sink's batch size)")
    ap.add_argument("--smoke", action="store_true", help="2,000 bodies, one round: that the tool runs end to end")
    args = ap.parse_args(argv)
    if args.smoke:
        args.bodies, args.rounds = 2000, 1
    from core import gctuning
    from sinks import inserts  # noqa: F401  # imported before the timing: clickhouse-connect takes a while

    events = events_of(args.bodies)
    n = sum(e.message.value.count(b"\n") + 1 for e in events)
    takes = batches_of(events, args.batch)
    gctuning.tune()  # the worker's settings (core/streaming.py)
    one_round(takes[:1], n)  # a warm-up: first calls (caches, numpy's first use) are not a body's cost
    rounds = [one_round(takes, n) for _ in range(args.rounds)]
    best = {stage: round(min(r[stage] for r in rounds), 2) for stage in STAGES}
    total = round(sum(best[s] for s in TOTAL), 2)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{n:,} bodies in takes of {args.batch:,}, best of {args.rounds} rounds, load {load}")
    print(f"{'stage':10s} {'µs CPU/body':>12s}")
    for stage in STAGES:
        if stage == "fast path" and not best[stage]:
            continue  # a tree without it
        note = {"decode": "  (reference: orjson.loads)", "process": "  (holds validate and rows)"}.get(stage, "")
        print(f"{stage:10s} {best[stage]:12.2f}{note}")
    print(f"{'total':10s} {total:12.2f}  ({' + '.join(TOTAL)})")
    last_line = f"stage_costs_total_us_per_body={total}"
    print(last_line)
    return {"bodies": n, "us_per_body": best, "total_us_per_body": total, "load": load, "last_line": last_line}


if __name__ == "__main__":
    main()

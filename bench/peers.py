"""The alternatives a user would pick instead of this project's worker, for bench/bench_processors.py.

Each runs in a child process of its own (its own chDB directory, its CPU time measured alone), reads the whole raw
topic from offset 0 with a consumer group of its own, and ends once every body is stored: the exact snapshot count
(distinct (day, UID) of the valid bodies) and the exact rejection count, or it fails. The peers with the worker's
output also export what analysts query (bench/equal_output.py), which the bench compares with the worker's.

- `plain`: an aiokafka consumer with the project's own parsing (core/envelope.py), validation
  (processors/validate.py) and snapshot rows, a latest-per-(day, UID) dict per batch, one insert per table per
  batch into ClickHouse (clickhouse-connect, the project's two tables without its views), the offsets committed after the insert, the
  worker's GC settings. No day aggregates: just snapshots and rejections.
- `plain_same_work` (a reference, not a peer: no user would write it instead of the worker): the plain loop doing
  the worker's work in sequence: the worker's own pipeline (`process`, `partition_batches`), roll-up and
  `ClickHouseStore.write` with every table and view of the schema, the offsets committed after the write. Dead
  letters and re-keys are not published. It shows what faust and the worker's pipelined write cost or gain.

The peers with the worker's output, the ones its verdict is measured against, have modules of their own:
bench/peer_kafka_engine.py (ClickHouse's Kafka engine, every step in SQL) and bench/peer_quixstreams.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any


def _figures(count: int, seconds: float, cpu_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "messages": count,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(count / seconds),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_msg": round(cpu_s / count * 1e6, 1),
        **extra,
    }


def _stored_figures(
    store: Any, bodies: int, seconds: float, cpu_s: float, export_dir: str | None = None
) -> dict[str, Any]:
    """The run's figures with what the store holds in the end (the exact counts are checked by the bench), its tables
    exported to `export_dir` (bench/equal_output.py) if given, and the store closed."""
    from bench.equal_output import export

    client = store.client
    stored = client.query("SELECT count() FROM snapshots FINAL").result_rows[0][0]
    rejections = client.query("SELECT count() FROM rejections FINAL").result_rows[0][0]
    if export_dir:
        export(lambda sql: bytes(client.raw_query(sql)), Path(export_dir))
    store.close()
    return _figures(bodies, seconds, cpu_s, snapshots=stored, rejections=rejections)


async def timed_consumer(
    bootstrap: str, topic: str, group: str, max_partition_fetch_bytes: int
) -> tuple[Any, dict[str, float]]:
    """A started aiokafka consumer of `topic` in a group of its own, from the beginning, offsets committed by hand;
    `marks` gets the wall and CPU clocks ("t0", "cpu0") when it first has partitions (where the timing starts)."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    marks: dict[str, float] = {}

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            marks.setdefault("t0", time.perf_counter())
            marks.setdefault("cpu0", time.process_time())

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
    )
    await consumer.start()
    consumer.subscribe([topic], listener=Listener())
    return consumer, marks


# ------------------------------------------------------------------------------------------------------ plain


async def _plain(
    bootstrap: str, topic: str, group: str, n: int, expect: dict[str, Any], chdb_dir: str
) -> dict[str, Any]:
    from core.envelope import is_batch, unpack
    from core.rows import RejectionRow, SnapshotRow, columns, values
    from processors.snapshot import rejection_row, snapshot_row
    from processors.validate import Rejection, inconsistencies, validate
    from sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(f"chdb://{chdb_dir}").open()
    client = store.client
    # The project's two tables as they are, and nothing else: no materialized or refreshable views (the analysts'
    # derived tables and the day aggregates are the worker's extra work, not a plain consumer's).
    for name, engine in client.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() "
        "AND name NOT IN ('snapshots', 'rejections') ORDER BY engine != "
        "'MaterializedView'"
    ).result_rows:
        client.command(f"DROP {'VIEW' if 'View' in engine else 'TABLE'} IF EXISTS `{name}`")
    snap_cols, rej_cols = columns(SnapshotRow), columns(RejectionRow)
    consumer, marks = await timed_consumer(bootstrap, topic, group, 8 * 1024 * 1024)
    bodies = 0
    try:
        while bodies < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            latest: dict[tuple[Any, str], SnapshotRow] = {}
            rejected: list[RejectionRow] = []
            for tp_records in batches.values():
                for r in tp_records:
                    headers = dict(r.headers or [])
                    if is_batch(headers):
                        frames = [(f.received_at_ms, f.body) for f in unpack(r.value)]
                    else:
                        frames = [(int(headers.get("received_at_ms") or r.timestamp), r.value)]
                    for index, (ms, body) in enumerate(frames):
                        bodies += 1
                        m = validate(body)
                        if isinstance(m, Rejection):
                            rejected.append(
                                rejection_row(m.reason, m.message, body, ms, r.topic, r.partition, r.offset, index)
                            )
                            continue
                        row = snapshot_row(m, body, ms, r.partition, r.offset, inconsistencies(m), index)
                        key = (row.day, row.uid)
                        if key not in latest or latest[key].version < row.version:
                            latest[key] = row
            if latest:
                client.insert("snapshots", [values(r) for r in latest.values()], column_names=snap_cols)
            if rejected:
                client.insert("rejections", [values(r) for r in rejected], column_names=rej_cols)
            if batches:
                await consumer.commit()
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return _stored_figures(store, bodies, t1 - marks["t0"], cpu1 - marks["cpu0"])


def run_plain(
    bootstrap: str,
    topic: str,
    group: str,
    n: int,
    expect: dict[str, Any],
    chdb_dir: str,
    out: str,
    export_dir: str | None = None,
) -> None:
    """`export_dir` is ignored: the plain consumer stores snapshots and rejections only (not the worker's output)."""
    gc.set_threshold(50_000, 20, 10)  # the worker's setting (core/streaming.py)
    gc.freeze()
    fig = asyncio.run(_plain(bootstrap, topic, group, n, expect, chdb_dir))
    Path(out).write_text(json.dumps(fig))


# ------------------------------------------------------------------------------- plain, doing the worker's work


async def _plain_same_work(
    bootstrap: str, topic: str, group: str, n: int, chdb_dir: str, export_dir: str | None
) -> dict[str, Any]:
    from types import SimpleNamespace

    from core import gctuning
    from core.config import load_settings
    from processors.pipeline import process
    from processors.rollup import Rollups, roll_up
    from processors.worker import partition_batches, records_of
    from sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(f"chdb://{chdb_dir}").open()  # every table and view of the schema, as the worker's
    consumer, marks = await timed_consumer(bootstrap, topic, group, 8 * 1024 * 1024)
    settings = load_settings()  # the raw topic's partitions as the bench made them (input_topics), the state window
    partitions = settings.kafka.partitions
    rollups = Rollups(settings.processors.state_days, partitions)
    bodies = 0
    try:
        while bodies < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=50)  # 50 records of 100 bodies: 5,000
            if not batches:
                continue
            with gctuning.paused():
                events = [
                    SimpleNamespace(
                        value=r.value,
                        message=SimpleNamespace(
                            value=r.value,
                            key=r.key,
                            headers=r.headers,
                            timestamp=r.timestamp / 1000,
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                        ),
                    )
                    for tp_records in batches.values()
                    for r in tp_records
                ]
                records = [rec for e in events for rec in records_of(e)]
                outcome = process(records, partitions)  # dead letters and re-keys are not published here
                batch = roll_up(rollups, store, partition_batches(records, outcome))
            store.write(batch)
            await consumer.commit()
            bodies += len(records)
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return _stored_figures(store, bodies, t1 - marks["t0"], cpu1 - marks["cpu0"], export_dir)


def run_plain_same_work(
    bootstrap: str,
    topic: str,
    group: str,
    n: int,
    expect: dict[str, Any],
    chdb_dir: str,
    out: str,
    export_dir: str | None = None,
) -> None:
    """Not a peer: the reference that shows what faust and the worker's pipelined write cost or gain. A plain loop
    doing the worker's work in sequence: its pipeline, roll-up and store with every view."""
    from core import gctuning

    gctuning.tune()  # the worker's GC settings
    fig = asyncio.run(_plain_same_work(bootstrap, topic, group, n, chdb_dir, export_dir))
    Path(out).write_text(json.dumps(fig))

"""The alternatives a user would pick instead of this project's worker, for bench/bench_processors.py.

Each runs in a child process of its own (its own chDB directory, its CPU time measured alone), reads the whole raw
topic from offset 0 with a consumer group of its own, and ends once every body is stored: the exact snapshot count
(distinct (day, UID) of the valid bodies) and the exact rejection count, or it fails.

- `plain`: an aiokafka consumer with the project's own parsing (is_telemetry/envelope.py), validation
  (processors/validate.py) and snapshot rows, a latest-per-(day, UID) dict per batch, one insert per table per
  batch into ClickHouse (clickhouse-connect, the project's two tables without its views), the offsets committed after the insert, the
  worker's GC settings. No day aggregates: just snapshots and rejections.
- `plain_same_work` (a reference, not a peer: no user would write it instead of the worker): the plain loop doing
  the worker's work in sequence: the worker's own pipeline (`process`, `partition_batches`), roll-up and
  `ClickHouseStore.write` with every table and view of the schema, the offsets committed after the write. Dead
  letters and re-keys are not published. It shows what faust and the worker's pipelined write cost or gain.
- `kafka_engine`: ClickHouse's own Kafka table engine inside chDB (librdkafka), `JSONEachRow` over the batch
  records, validation and extraction in SQL materialized views into a snapshots table (ReplacingMergeTree) and a
  rejections table. librdkafka's session timeout is set to 10 s through a server config file, or it waits ~25 s
  for partitions on the embedded broker.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

PLAUSIBLE = 10**9
IS_UID = r"^[A-Za-z0-9+/]{85}[AQgw]==$"
CLI_UID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
COUNT_PATHS = [
    ("gateways", "total"),
    ("end_devices", "total"),
    ("end_devices", "activate_end_devices", "total"),
    ("end_devices", "activate_end_devices", "last_day"),
    ("end_devices", "activate_end_devices", "last_week"),
    ("end_devices", "activate_end_devices", "last_month"),
    ("applications", "total"),
    ("accounts", "users", "total"),
    ("accounts", "users", "standard"),
    ("accounts", "users", "admin"),
    ("accounts", "organizations", "total"),
]


def _figures(count: int, seconds: float, cpu_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "messages": count,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(count / seconds),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_msg": round(cpu_s / count * 1e6, 1),
        **extra,
    }


def _stored_figures(store: Any, bodies: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    """The run's figures with what the store holds in the end (the exact counts are checked by the bench), and the
    store closed."""
    client = store.client
    stored = client.query("SELECT count() FROM snapshots FINAL").result_rows[0][0]
    rejections = client.query("SELECT count() FROM rejections FINAL").result_rows[0][0]
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
    from is_telemetry.envelope import is_batch, unpack
    from is_telemetry.rows import RejectionRow, SnapshotRow, columns, values
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


def run_plain(bootstrap: str, topic: str, group: str, n: int, expect: dict[str, Any], chdb_dir: str, out: str) -> None:
    gc.set_threshold(50_000, 20, 10)  # the worker's setting (is_telemetry/streaming.py)
    gc.freeze()
    fig = asyncio.run(_plain(bootstrap, topic, group, n, expect, chdb_dir))
    Path(out).write_text(json.dumps(fig))


# ------------------------------------------------------------------------------- plain, doing the worker's work


async def _plain_same_work(bootstrap: str, topic: str, group: str, n: int, chdb_dir: str) -> dict[str, Any]:
    from types import SimpleNamespace

    from is_telemetry import gctuning
    from is_telemetry.config import load_settings
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
    return _stored_figures(store, bodies, t1 - marks["t0"], cpu1 - marks["cpu0"])


def run_plain_same_work(
    bootstrap: str, topic: str, group: str, n: int, expect: dict[str, Any], chdb_dir: str, out: str
) -> None:
    """Not a peer: the reference that shows what faust and the worker's pipelined write cost or gain. A plain loop
    doing the worker's work in sequence: its pipeline, roll-up and store with every view."""
    from is_telemetry import gctuning

    gctuning.tune()  # the worker's GC settings
    fig = asyncio.run(_plain_same_work(bootstrap, topic, group, n, chdb_dir))
    Path(out).write_text(json.dumps(fig))


# ------------------------------------------------------------------------------------------------ kafka engine


def _count_ok(path: tuple[str, ...]) -> str:
    p = ", ".join(f"'{x}'" for x in ("entities_count", *path))
    return f"(NOT JSONHas(b, {p}) OR (JSONType(b, {p}) = 'Int64' AND JSONExtractInt(b, {p}) BETWEEN 0 AND {PLAUSIBLE}))"


def kafka_engine_sql(bootstrap: str, topic: str, group: str) -> list[str]:
    """The tables: the Kafka source, a staging step that validates and extracts, snapshots and rejections."""
    counts_ok = " AND ".join(_count_ok(p) for p in COUNT_PATHS)
    plans = "JSONExtractKeysAndValuesRaw(b, 'entities_count', 'gateways', 'gateways_by_frequency_plan_id')"
    plans_ok = (
        f"arrayAll(kv -> match(kv.2, '^[0-9]+$') AND toUInt64OrZero(kv.2) <= {PLAUSIBLE} "
        f"AND length(kv.2) < 12, {plans})"
    )
    is_ = "(JSONType(b, 'entities_count') = 'Object' AND JSONType(b, 'cli') = 'Null')"
    cli = "(JSONType(b, 'cli') = 'Object' AND JSONType(b, 'entities_count') = 'Null')"
    os_ok = (
        "(JSONType(b, 'os') = 'Null' OR JSONType(b, 'os') = 'Object' AND arrayAll(k -> "
        "JSONType(b, 'os', k) = 'String' OR NOT JSONHas(b, 'os', k), "
        "['operating_system', 'arch', 'binary_version', 'golang_version']))"
    )
    valid = (
        f"isValidJSON(b) AND JSONType(b) = 'Object' AND JSONType(b, 'uid') = 'String' AND {os_ok} AND ("
        f"{is_} AND match(JSONExtractString(b, 'uid'), '{IS_UID}') AND {counts_ok} AND {plans_ok} OR "
        f"{cli} AND match(JSONExtractString(b, 'uid'), '{CLI_UID}'))"
    )
    c = lambda *p: "JSONExtractUInt(b, 'entities_count', " + ", ".join(f"'{x}'" for x in p) + ")"  # noqa: E731
    return [
        "CREATE TABLE snapshots (day Date, uid String, kind LowCardinality(String), received_at DateTime64(3, 'UTC'), "
        "version UInt128, source_partition UInt32, source_offset UInt64, operating_system LowCardinality(String), "
        "binary_version LowCardinality(String), gateways UInt64, "
        "gateways_by_frequency_plan Map(LowCardinality(String), UInt64), end_devices UInt64, active_last_day UInt64, "
        "active_last_week UInt64, active_last_month UInt64, applications UInt64, users_standard UInt64, "
        "users_admin UInt64, organizations UInt64, body String CODEC(ZSTD(3))) "
        "ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(day) ORDER BY (day, uid)",
        "CREATE TABLE rejections (day Date, received_at DateTime64(3, 'UTC'), source_partition UInt32, "
        "source_offset UInt64, line UInt64, body String CODEC(ZSTD(3))) "
        "ENGINE = ReplacingMergeTree ORDER BY (day, source_partition, source_offset, line)",
        "CREATE TABLE staging (received_at_ms UInt64, b String, valid Bool, partition UInt32, offset UInt64, "
        "line UInt64) ENGINE = Null",
        f"CREATE TABLE kq (received_at_ms UInt64, user_agent String, body String, body_base64 String) ENGINE = Kafka "
        f"SETTINGS kafka_broker_list = '{bootstrap}', kafka_topic_list = '{topic}', kafka_group_name = '{group}', "
        "kafka_format = 'JSONEachRow', kafka_max_block_size = 65536, kafka_flush_interval_ms = 500, "
        "kafka_num_consumers = 1, kafka_thread_per_consumer = 0",
        "CREATE MATERIALIZED VIEW stage_mv TO staging AS SELECT received_at_ms, b, " + valid + " AS valid, "
        "partition, offset, rowNumberInAllBlocks() AS line FROM (SELECT received_at_ms, _partition AS partition, "
        "_offset AS offset, if(body_base64 != '', base64Decode(body_base64), body) AS b FROM kq)",
        "CREATE MATERIALIZED VIEW snapshots_mv TO snapshots AS SELECT "
        "toDate(fromUnixTimestamp64Milli(toInt64(received_at_ms), 'UTC')) AS day, JSONExtractString(b, 'uid') AS uid, "
        "if(JSONType(b, 'cli') = 'Object', 'cli', 'is') AS kind, "
        "fromUnixTimestamp64Milli(toInt64(received_at_ms), 'UTC') AS received_at, "
        "toUInt128(received_at_ms) * toUInt128(18446744073709551616) + toUInt128(offset) * 65536 + line AS version, "
        "partition AS source_partition, offset AS source_offset, "
        "JSONExtractString(b, 'os', 'operating_system') AS operating_system, "
        "JSONExtractString(b, 'os', 'binary_version') AS binary_version, "
        f"{c('gateways', 'total')} AS gateways, "
        "JSONExtract(b, 'entities_count', 'gateways', 'gateways_by_frequency_plan_id', 'Map(String, UInt64)') "
        "AS gateways_by_frequency_plan, "
        f"{c('end_devices', 'total')} AS end_devices, {c('end_devices', 'activate_end_devices', 'last_day')} "
        f"AS active_last_day, {c('end_devices', 'activate_end_devices', 'last_week')} AS active_last_week, "
        f"{c('end_devices', 'activate_end_devices', 'last_month')} AS active_last_month, "
        f"{c('applications', 'total')} AS applications, {c('accounts', 'users', 'standard')} AS users_standard, "
        f"{c('accounts', 'users', 'admin')} AS users_admin, {c('accounts', 'organizations', 'total')} "
        "AS organizations, b AS body FROM staging WHERE valid",
        "CREATE MATERIALIZED VIEW rejections_mv TO rejections AS SELECT "
        "toDate(fromUnixTimestamp64Milli(toInt64(received_at_ms), 'UTC')) AS day, "
        "fromUnixTimestamp64Milli(toInt64(received_at_ms), 'UTC') AS received_at, partition AS source_partition, "
        "offset AS source_offset, line, substring(b, 1, 4096) AS body FROM staging WHERE NOT valid",
    ]


def run_kafka_engine(
    bootstrap: str,
    topic: str,
    group: str,
    n: int,
    expect: dict[str, Any],
    chdb_dir: str,
    out: str,
    timeout_s: float = 300,
) -> None:
    import chdb

    os.makedirs(chdb_dir, exist_ok=True)
    cfg = Path(chdb_dir).parent / f"{Path(chdb_dir).name}-kafka.xml"
    cfg.write_text(
        "<clickhouse><kafka><session_timeout_ms>10000</session_timeout_ms>"
        "<heartbeat_interval_ms>1000</heartbeat_interval_ms></kafka></clickhouse>"
    )
    conn = chdb.connect(f"{chdb_dir}?config-file={cfg}")

    def q(sql: str) -> str:
        return str(conn.query(sql, "TabSeparated")).strip()

    cpu = lambda: time.process_time()  # noqa: E731 - every thread of this process: librdkafka and ClickHouse's
    for statement in kafka_engine_sql(bootstrap, topic, group):
        try:
            q(statement)
        except RuntimeError as exc:  # "Shutdown was called (LOGICAL_ERROR)" on CREATE of the Kafka table: it works
            if "Shutdown was called" not in str(exc):
                raise
    deadline = time.monotonic() + timeout_s
    t0 = cpu0 = None
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the Kafka engine stored {q('SELECT count() FROM snapshots')} snapshots and "
                f"{q('SELECT count() FROM rejections')} rejections within {timeout_s}s"
            )
        if t0 is None and q("SELECT count() FROM system.kafka_consumers WHERE notEmpty(assignments.topic)") != "0":
            t0, cpu0 = time.perf_counter(), cpu()
        snaps = int(q("SELECT count() FROM snapshots FINAL"))
        rejected = int(q("SELECT count() FROM rejections FINAL"))
        if snaps >= expect["distinct_day_uid"] and rejected >= expect["rejected"]:
            t1, cpu1 = time.perf_counter(), cpu()
            break
        time.sleep(0.05)
    if t0 is None:
        raise RuntimeError("the Kafka engine stored everything before its assignment was seen")
    Path(out).write_text(json.dumps(_figures(n, t1 - t0, cpu1 - cpu0, snapshots=snaps, rejections=rejected)))
    conn.close()
    os.kill(os.getpid(), signal.SIGKILL)  # chDB's Kafka threads do not stop on their own; nothing is left to keep

"""A peer with the worker's output: a quixstreams application (confluent-kafka underneath) doing the worker's work.

Its dataframe unpacks each Kafka record into its bodies and runs the worker's own pipeline on them
(`processors.worker.records_of`, `processors.pipeline.process`: validation, snapshot and rejection rows, the
one-UID-one-partition check); a sink collects the outcomes and, at each of quixstreams' checkpoints (every 50
records of 100 bodies, the worker's 5,000-body batch, or 1 s), rolls them up (`processors.rollup.roll_up`) and
writes them with `ClickHouseStore.write` into a store with every table and view of the schema, in one write for
all partitions; quixstreams commits the offsets once the sink's flush has returned. As `plain_same_work`, it does not
publish dead letters or re-keys (the bench's input needs no re-key).

The framework is the point: what quixstreams' consumer loop, dataframe and checkpoints cost, against faust's. Its
consumer's session timeout is 10 s (librdkafka's 45 s default waits long for partitions on the embedded broker).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

#: Kafka records per checkpoint: 50 records of 100 bodies, the worker's batch of 5,000 bodies (sink.batch_size)
RECORDS_PER_CHECKPOINT = 50


def run(
    bootstrap: str,
    topic: str,
    group: str,
    n: int,
    expect: dict[str, Any],
    chdb_dir: str,
    out: str,
    export_dir: str | None = None,
) -> None:
    from quixstreams import Application
    from quixstreams.sinks import BaseSink

    from bench.peers import _stored_figures
    from core import gctuning
    from core.config import load_settings
    from processors.pipeline import Outcome, RawRecord, process
    from processors.rollup import Rollups, roll_up
    from processors.worker import partition_batches, records_of
    from sinks.clickhouse import ClickHouseStore

    logging.basicConfig(level=logging.WARNING)
    gctuning.tune()  # the worker's GC settings
    settings = load_settings()
    partitions, limit = settings.kafka.partitions, settings.processors.plausibility_limit
    store = ClickHouseStore(f"chdb://{chdb_dir}").open()  # every table and view of the schema, as the worker's
    rollups = Rollups(settings.processors.state_days, partitions)
    marks: dict[str, float] = {}
    done = {"bodies": 0}

    def unpack_and_validate(value: bytes, key: Any, timestamp: int, headers: Any) -> tuple[list[RawRecord], Outcome]:
        from quixstreams import message_context

        ctx = message_context()
        message = SimpleNamespace(
            value=value,
            key=key,
            headers=headers,
            timestamp=timestamp / 1000,
            topic=ctx.topic,
            partition=ctx.partition,
            offset=ctx.offset,
        )
        with gctuning.paused():
            records = records_of(SimpleNamespace(value=value, message=message))
            return records, process(records, partitions, None, limit)

    class WorkerSink(BaseSink):
        """The worker's roll-up and store, one write per checkpoint."""

        def __init__(self) -> None:
            super().__init__()
            self.records: list[RawRecord] = []
            self.outcome = Outcome()

        def add(self, value: Any, key: Any, timestamp: int, headers: Any, topic: str, partition: int, offset: int):  # type: ignore[no-untyped-def]
            records, outcome = value
            self.records += records
            for name in ("snapshots", "bodies", "rejections"):
                getattr(self.outcome, name).extend(getattr(outcome, name))

        def flush(self) -> None:
            if not self.records:
                return
            with gctuning.paused():
                batch = roll_up(rollups, store, partition_batches(self.records, self.outcome))
            store.write(batch)
            done["bodies"] += len(self.records)
            self.records, self.outcome = [], Outcome()
            if done["bodies"] >= n and "t1" not in marks:
                marks["t1"], marks["cpu1"] = time.perf_counter(), time.process_time()
                app.stop()

    class TimedApplication(Application):
        def _on_assign(self, _: Any, topic_partitions: Any) -> None:
            marks.setdefault("t0", time.perf_counter())
            marks.setdefault("cpu0", time.process_time())
            super()._on_assign(_, topic_partitions)

    app = TimedApplication(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_every=RECORDS_PER_CHECKPOINT,
        commit_interval=1.0,
        consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000},
        use_changelog_topics=False,
        auto_create_topics=False,
        loglevel="WARNING",
        state_dir=str(Path(chdb_dir).parent / f"{Path(chdb_dir).name}-quix-state"),
    )
    raw = app.topic(topic, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(raw)
    sdf = sdf.apply(unpack_and_validate, metadata=True)
    sdf.sink(WorkerSink())
    app.run()
    if "t1" not in marks:
        raise RuntimeError(f"quixstreams stopped after {done['bodies']} of {n} bodies")
    fig = _stored_figures(
        store, done["bodies"], marks["t1"] - marks["t0"], marks["cpu1"] - marks["cpu0"], export_dir=export_dir
    )
    Path(out).write_text(json.dumps(fig))

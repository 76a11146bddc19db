"""Day aggregates equal the simulator's ground truth exactly: clean run, full replay, kill -9, scale-out.

Real processes throughout: the embedded broker, `is-telemetry worker` / `sink` processes, chDB. The analyst views
of migration 0002 (carried-forward fleet, lifecycle, shape, regions, versions, CLI, data quality: refreshed by
ClickHouse itself) are checked in the same runs against `producers.fleet_truth`.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.config import load_settings
from core.kafka import ensure_topics
from is_telemetry.broker import EmbeddedBroker, free_port
from producers.fleet_truth import analyst_ground_truth
from producers.packed import send_packed
from producers.simulator import generate, ground_truth, send_to_kafka
from tests.analyst_checks import wait_for_analyst_views
from tests.processes import Proc, expected_views, wait_for_views, wait_until, wait_until_ready, worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "tts-telemetry-raw"
RECORDS_METRIC = "is_telemetry_processor_records_total"  # a worker's processed-records counter (its /metrics)


def _simulation(deployments: int, cli_installs: int, days: int, seed: int):  # type: ignore[no-untyped-def]
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    sim = generate(deployments, cli_installs, days, seed, end_day=yesterday)
    return sim.deliveries, expected_views(ground_truth(sim.deliveries))


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    with EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log") as b:
        ensure_topics(load_settings(kafka={"bootstrap_servers": b.bootstrap_servers}))
        yield b


def test_clean_run_then_full_replay_into_the_same_clickhouse(broker: EmbeddedBroker, tmp_path: Path) -> None:
    deliveries, expected = _simulation(150, 40, 5, seed=3)
    analyst = analyst_ground_truth(deliveries)
    send_to_kafka(deliveries, broker.bootstrap_servers, TOPIC)
    w = worker(broker.bootstrap_servers, tmp_path)
    try:
        wait_until_ready(w)
        wait_for_views(w, expected)
        wait_for_analyst_views(w.api, analyst)
    finally:
        assert w.terminate() == 0
    # A new consumer group reads the whole topic again from offset 0 into the same ClickHouse.
    replay = worker(broker.bootstrap_servers, tmp_path, "replay", "--group-id", "replay-1")
    try:
        wait_until_ready(replay)
        deadline = time.monotonic() + 120
        while replay.metric("is_telemetry_processor_records_total") < len(deliveries):
            assert time.monotonic() < deadline, replay.log()
            time.sleep(0.5)
        assert replay.views() == expected
        wait_for_analyst_views(replay.api, analyst)
    finally:
        assert replay.terminate() == 0


def test_kill_9_at_random_moments_during_ingest(broker: EmbeddedBroker, tmp_path: Path) -> None:
    deliveries, expected = _simulation(600, 100, 6, seed=5)
    rng = random.Random(1)
    # Ingest keeps arriving while the worker is killed and restarted.
    sender = threading.Thread(target=_send_paced, args=(deliveries, broker.bootstrap_servers, 8), daemon=True)
    w = worker(broker.bootstrap_servers, tmp_path)
    sender.start()
    try:
        for _ in range(3):
            wait_until_ready(w)
            time.sleep(rng.uniform(1.0, 4.0))
            w.kill9()
            w.start()
        sender.join(120)
        assert not sender.is_alive()
        wait_until_ready(w)
        wait_for_views(w, expected, timeout_s=240)
        wait_for_analyst_views(w.api, analyst_ground_truth(deliveries))
    finally:
        w.terminate()


def test_two_workers_and_a_separate_sink_process(broker: EmbeddedBroker, tmp_path: Path) -> None:
    deliveries, expected = _simulation(200, 50, 4, seed=9)
    b = broker.bootstrap_servers
    # Each worker serves /metrics (so its processed-records counter can be read) from a data directory of its own:
    # chDB's files belong to one process, the sink's.
    w1, w2 = (worker(b, _own_dir(tmp_path / name), name, "--no-sink") for name in ("worker-1", "worker-2"))
    sink = _sink(b, tmp_path)
    try:
        wait_until_ready(sink)
        send_to_kafka(deliveries, b, TOPIC)
        wait_for_views(sink, expected, timeout_s=240)
        wait_for_analyst_views(sink.api, analyst_ground_truth(deliveries))
        # Both workers took part: each was assigned raw-topic partitions and took records from them (its
        # log names the topic whether or not it got partitions, so the counter decides).
        for w in (w1, w2):
            assert w.alive() and w.metric(RECORDS_METRIC) > 0, w.log()
    finally:
        for p in (w1, w2, sink):
            p.terminate()


def test_a_separate_sink_gets_the_rows_of_a_large_batch(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --no-sink worker publishes a batch's rows of each partition to the snapshots topic. Rows beyond what one Kafka
    record may hold (the producer's max_request_size, 1 MB) go as several records. Before, a backlog in the collector's
    format (100 bodies a record) made ~4,000 rows of one partition in a batch: the agent crashed on the oversize
    record and restarted for ever, and nothing was stored."""
    deliveries, expected = _simulation(1200, 150, 30, seed=4)
    b = broker.bootstrap_servers
    send_packed(deliveries, b, TOPIC, bodies_per_record=100, pack_keyless=True)  # the backlog, before the worker starts
    monkeypatch.setenv("IS_TELEMETRY_SINK__BATCH_SIZE", str(len(deliveries)))  # the whole backlog in few batches
    w = worker(b, _own_dir(tmp_path / "worker"), "worker", "--no-sink")
    sink = _sink(b, tmp_path)
    try:
        wait_until_ready(sink)
        wait_for_views(sink, expected, timeout_s=240)
        assert "MessageSizeTooLarge" not in w.log()
    finally:
        for p in (w, sink):
            p.terminate()


def _sink(bootstrap: str, data_dir: Path) -> Proc:
    """`is-telemetry sink` with its API (the chDB is its own) in `data_dir`."""
    port = free_port()
    args = ["sink", "--kafka", bootstrap, "--data-dir", str(data_dir), "--api-port", str(port), "--log-level", "info"]
    return Proc("sink", args, data_dir, port)


def _own_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _send_paced(deliveries: list, bootstrap: str, chunks: int, halfway: threading.Event | None = None) -> None:  # type: ignore[type-arg]
    """`chunks` sends a second apart; with `halfway`, the second half waits (up to 120 s) until it is set."""
    size = len(deliveries) // chunks + 1
    for i in range(0, len(deliveries), size):
        if halfway is not None and i >= len(deliveries) // 2:
            halfway.wait(120)
        send_to_kafka(deliveries[i : i + size], bootstrap, TOPIC)
        time.sleep(1.0)


def _produce(bootstrap: str, records: list[tuple[bytes | None, bytes, int, int | None]]) -> None:
    """(key, body, received_at_ms, partition) straight to the raw topic, as a third-party producer might."""
    from kafka import KafkaProducer

    from core.kafka import HEADER_RECEIVED_AT

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    try:
        for key, body, at, partition in records:
            producer.send(
                TOPIC,
                value=body,
                key=key,
                partition=partition,
                timestamp_ms=at,
                headers=[(HEADER_RECEIVED_AT, str(at).encode())],
            )
        producer.flush(30)
    finally:
        producer.close()


def test_records_with_null_and_wrong_keys_are_rekeyed(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """One UID, one partition: records with a null key, a wrong key or in the wrong partition are published again
    keyed by their UID, before or after the UID's correctly keyed records: the views equal the ground truth."""
    from core.partitioning import partition_of
    from producers.simulator import Delivery

    deliveries, _ = _simulation(80, 20, 3, seed=13)
    rng = random.Random(4)
    wrong: list[tuple[bytes | None, bytes, int, int | None]] = []
    right: list[tuple[bytes | None, bytes, int, int | None]] = []
    for i, (at, key, body) in enumerate(deliveries):
        if key is None or i % 3:
            right.append((key, body, at, None))
            continue
        mode = i % 4
        home = partition_of(key, 8)
        if mode == 0:
            wrong.append((None, body, at, rng.choice([p for p in range(8) if p != home])))  # null key
        elif mode == 1:
            wrong.append((b"not-the-uid", body, at, None))  # a wrong key
        else:
            wrong.append((key, body, at, (home + 1) % 8))  # the right key in another partition
    # foreign records first for one half of the history, after the UID's own records for the other half
    half = len(wrong) // 2
    _produce(broker.bootstrap_servers, wrong[:half] + right + wrong[half:])
    expected = expected_views(ground_truth([Delivery(at, k, b) for k, b, at, _ in wrong + right]))
    w = worker(broker.bootstrap_servers, tmp_path)
    try:
        wait_until_ready(w)
        wait_for_views(w, expected)
        assert w.metric("is_telemetry_processor_rekeyed_total") >= len(wrong)
    finally:
        assert w.terminate() == 0


def test_a_worker_joins_and_leaves_while_records_flow(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Rebalances: a second --no-sink worker joins while records flow (partitions move to it), then stops (they
    move back); the sink's roll-up and the views stay exact."""
    deliveries, expected = _simulation(300, 60, 4, seed=17)
    b = broker.bootstrap_servers
    sink = _sink(b, tmp_path)
    # Each worker serves /metrics (its processed-records counter) from a data directory of its own (chDB's files
    # belong to the sink).
    w1 = worker(b, _own_dir(tmp_path / "worker-1"), "worker-1", "--no-sink")
    w2: Proc | None = None
    joined = threading.Event()  # the second half of the records is sent once worker-2 is up: they flow while it joins
    sender = threading.Thread(target=_send_paced, args=(deliveries, b, 24, joined), daemon=True)
    try:
        wait_until_ready(sink)
        sender.start()
        time.sleep(3)
        w2 = worker(b, _own_dir(tmp_path / "worker-2"), "worker-2", "--no-sink")  # joins: a rebalance
        wait_until_ready(w2)
        joined.set()
        # It really took raw-topic partitions: it processed records from them (its log names the topic whether or
        # not it got partitions, so the counter decides).
        joiner = w2
        wait_until(
            lambda: joiner.metric(RECORDS_METRIC),
            lambda n: n > 0,
            timeout_s=90,
            interval_s=0.5,
            what="worker-2 processing records after it joined",
        )
        assert w2.terminate() == 0  # leaves while records flow: another rebalance
        sender.join(120)
        assert not sender.is_alive()
        wait_for_views(sink, expected, timeout_s=240)
        assert w1.alive() and w1.metric(RECORDS_METRIC) > 0, w1.log()
    finally:
        joined.set()
        for p in (w1, *([w2] if w2 else []), sink):
            p.terminate()


def test_a_changed_partition_count_is_refused(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The roll-up in ClickHouse was built for another partition count: the worker says what to do, exits 2."""
    import subprocess
    import sys

    from sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(f"chdb://{tmp_path / 'chdb'}").open()
    store.record_partitions(12)  # as if built for 12; the raw topic has 8
    store.close()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "is_telemetry",
            "worker",
            "--kafka",
            broker.bootstrap_servers,
            "--data-dir",
            str(tmp_path),
            "--api-port",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "has 8 partitions, but the roll-up in ClickHouse was built for 12" in done.stderr
    assert "is-telemetry rollup repartition" in done.stderr


def test_many_bodies_per_record_and_a_corrupt_batch(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The history packed many bodies to a Kafka record (as the collector batches them), plus one batch record
    that cannot be read: the views equal the ground truth, and the corrupt record is one `bad_batch` rejection."""
    from kafka import KafkaProducer

    from core.envelope import BATCH_FORMAT, HEADER_FORMAT
    from producers.packed import send_packed

    deliveries, expected = _simulation(200, 40, 4, seed=23)
    assert send_packed(deliveries, broker.bootstrap_servers, TOPIC, bodies_per_record=37) == len(deliveries)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=False)
    at = max(d.received_at_ms for d in deliveries)
    producer.send(
        TOPIC, value=b"\x05\x00\x00\x00truncated", partition=3, timestamp_ms=at, headers=[(HEADER_FORMAT, BATCH_FORMAT)]
    )
    producer.flush()
    producer.close()
    day = datetime.fromtimestamp(at / 1000, UTC).date().isoformat()
    expected["rejected_daily"] = sorted(
        [*expected["rejected_daily"], {"day": day, "reason": "bad_batch", "messages": 1}],
        key=lambda r: (r["day"], r["reason"]),
    )
    w = worker(broker.bootstrap_servers, tmp_path)
    try:
        wait_until_ready(w)
        wait_for_views(w, expected)
        records = w.metric("is_telemetry_processor_records_total")
        assert records == len(deliveries) + 1  # bodies, not Kafka records
    finally:
        assert w.terminate() == 0

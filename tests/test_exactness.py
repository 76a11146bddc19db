"""Day aggregates equal the simulator's ground truth exactly: clean run, full replay, kill -9, scale-out.

Real processes throughout: the embedded broker, `is-telemetry worker` / `sink` processes, chDB.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from is_telemetry.broker import EmbeddedBroker, free_port
from is_telemetry.config import load_settings
from is_telemetry.kafka import ensure_topics
from producers.simulator import generate, ground_truth, send_to_kafka
from tests.processes import Proc, expected_views, wait_for_views, wait_until_ready, worker

pytestmark = pytest.mark.slow

TOPIC = "tts-telemetry-raw"


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
    send_to_kafka(deliveries, broker.bootstrap_servers, TOPIC)
    w = worker(broker.bootstrap_servers, tmp_path)
    try:
        wait_until_ready(w)
        wait_for_views(w, expected)
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
    finally:
        w.terminate()


def test_two_workers_and_a_separate_sink_process(broker: EmbeddedBroker, tmp_path: Path) -> None:
    deliveries, expected = _simulation(200, 50, 4, seed=9)
    b = broker.bootstrap_servers
    w1 = worker(b, tmp_path, "worker-1", "--no-sink", api=False)
    w2 = worker(b, tmp_path, "worker-2", "--no-sink", api=False)
    sink_port = free_port()
    sink = Proc("sink", ["sink", "--kafka", b, "--data-dir", str(tmp_path), "--api-port", str(sink_port),
                         "--log-level", "info"], tmp_path, sink_port)
    try:
        wait_until_ready(sink)
        send_to_kafka(deliveries, b, TOPIC)
        wait_for_views(sink, expected, timeout_s=240)
        # Both workers took part: each logged an assignment of raw-topic partitions.
        for w in (w1, w2):
            assert "tts-telemetry-raw" in w.log() and w.alive()
    finally:
        for p in (w1, w2, sink):
            p.terminate()


def _send_paced(deliveries: list, bootstrap: str, chunks: int) -> None:  # type: ignore[type-arg]
    size = len(deliveries) // chunks + 1
    for i in range(0, len(deliveries), size):
        send_to_kafka(deliveries[i : i + size], bootstrap, TOPIC)
        time.sleep(1.0)

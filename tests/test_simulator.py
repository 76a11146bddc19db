"""The fleet simulator: determinism, rates, variety, ground truth (by hand), malformed reasons, senders."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import typer
from typer.testing import CliRunner

from processors.validate import Rejection, validate
from producers import simulator
from producers.simulator import Delivery, ground_truth

pytestmark = pytest.mark.integration


def _yesterday() -> str:
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# senders
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    from is_telemetry.broker import EmbeddedBroker, free_port

    with EmbeddedBroker(port=free_port()) as b:
        yield b


def _consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(consumer)
    finally:
        consumer.close()
    return out


def test_send_to_kafka_roundtrip(broker):
    from core.config import load_settings
    from core.kafka import ensure_topics

    settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers})
    ensure_topics(settings)
    topic = settings.kafka.raw_topic
    sim = simulator.generate(15, 8, 2, seed=3, end_day=_yesterday(), malformed_rate=0.15, resend_rate=0.2)
    deliveries = sim.deliveries + [Delivery(sim.deliveries[-1].received_at_ms, None, b"not json")]
    progress_calls = []
    result = simulator.send_to_kafka(
        deliveries, broker.bootstrap_servers, topic, progress=lambda done, total: progress_calls.append((done, total))
    )
    n = len(deliveries)
    assert result.ok and result.sent == n and result.sent_deliveries == deliveries
    assert progress_calls[-1] == (n, n)
    records = _consume(broker.bootstrap_servers, topic, n)
    assert len(records) == n
    got = Counter((r.key, r.value, r.timestamp) for r in records)
    assert got == Counter((d.key, d.body, d.received_at_ms) for d in deliveries)
    assert any(r.key is None for r in records)
    for r in records:
        h = dict(r.headers)
        assert h["received_at_ms"] == str(r.timestamp).encode()
        assert h["source"] == b"simulator"
        assert h["body_length"] == str(len(r.value)).encode()
        assert h["user_agent"] == simulator.user_agent_of(r.value).encode()
        cli = b'"cli":{' in r.value and b'"entities_count":null' in r.value
        assert h["user_agent"].startswith(b"Go-http-client/" if cli else b"TheThingsStack/")  # the CLI: Go's default
    one = next(
        r for r in records if r.key is not None and b'"binary_version":"3.' in r.value and b'"cli":null' in r.value
    )  # an Identity Server's: the CLI sends Go's default User-Agent
    os_ = json.loads(one.value)["os"]
    assert dict(one.headers)["user_agent"].decode() == (
        f"TheThingsStack/{os_['binary_version'].split(' ')[0]} ({os_['operating_system']}/{os_['arch']})"
    )
    # per key, the partition holds the records in send order
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is not None:
            by_key[r.key].append(r.value)
    for key, values in by_key.items():
        assert values == [d.body for d in sim.deliveries if d.key == key]


def test_send_to_kafka_reports_failure():
    from is_telemetry.broker import free_port

    deliveries = simulator.generate(3, 0, 1, seed=1, end_day="2025-01-01").deliveries
    started = time.monotonic()
    with pytest.raises(simulator.SendError) as exc:
        simulator.send_to_kafka(deliveries, f"127.0.0.1:{free_port()}", "t", bootstrap_timeout_ms=1000)
    assert exc.value.result.sent == 0 and exc.value.result.not_attempted == len(deliveries)
    assert time.monotonic() - started < 10


def test_command_to_kafka_writes_ground_truth(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("IS_TELEMETRY_KAFKA__RAW_TOPIC", "sim-command")
    app = typer.Typer()
    app.command()(simulator.command)
    out = tmp_path / "truth.json"
    args = [
        "--deployments",
        "12",
        "--cli-installs",
        "5",
        "--days",
        "3",
        "--seed",
        "4",
        "--end-day",
        _yesterday(),
        "--kafka",
        broker.bootstrap_servers,
        "--ground-truth",
        str(out),
        "--malformed-rate",
        "0.1",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    sim = simulator.generate(12, 5, 3, seed=4, end_day=_yesterday(), malformed_rate=0.1)
    truth = json.loads(out.read_text())
    assert truth == ground_truth(sim.deliveries)
    assert len(_consume(broker.bootstrap_servers, "sim-command", truth["messages"])) == truth["messages"]
    # --dry-run: same ground truth, nothing sent; the analyst views' ground truth beside it
    out2, out3 = tmp_path / "dry.json", tmp_path / "analyst.json"
    res = CliRunner().invoke(
        app,
        args[:-4]
        + ["--ground-truth", str(out2), "--malformed-rate", "0.1", "--dry-run", "--analyst-ground-truth", str(out3)],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out2.read_text()) == truth
    from producers.fleet_truth import analyst_ground_truth

    assert json.loads(out3.read_text()) == json.loads(json.dumps(analyst_ground_truth(sim.deliveries)))


class _Collector:
    """A fake collector: records every POST; 503 to the first `fail_first` requests, 400 to bodies that are
    not JSON (as producers/collector.py does), else `status`."""

    def __init__(self, fail_first: int = 0, status: int = 202) -> None:
        self.posts: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        self.fail_first, self.status, self.seen = fail_first, status, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.seen += 1
                    code = 503 if outer.seen <= outer.fail_first else outer.status
                    if code < 300 and simulator.key_of(body) is None:
                        try:
                            json.loads(body)
                        except ValueError:
                            code = 400
                    if code < 300:
                        outer.posts.append((dict(self.headers), body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/collect"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_send_to_collector():
    col = _Collector(fail_first=2)
    try:
        sim = simulator.generate(
            10, 6, 2, seed=8, end_day="2025-01-02", resend_rate=0.3, changed_rate=0.3, malformed_rate=0.1
        )
        # one form-encoded body for sure (the collector refuses it at the edge), whatever the seed drew
        deliveries = sim.deliveries + [Delivery(sim.deliveries[-1].received_at_ms, None, b"uid=x&os=linux")]
        intended = sim.intended + ["not_json"]
        result = simulator.send_to_collector(deliveries, col.url, concurrency=4)
    finally:
        col.close()
    not_json = [d for d, k in zip(deliveries, intended) if k == "not_json"]
    accepted = [d for d, k in zip(deliveries, intended) if k != "not_json"]
    assert not_json and result.refused == len(not_json)
    assert result.ok and result.sent == len(accepted) and result.retried == 2
    assert Counter(b for _, b in col.posts) == Counter(d.body for d in accepted)
    for hdrs, body in col.posts:
        assert hdrs["Content-Type"] == "application/json"
        assert hdrs["User-Agent"] == simulator.user_agent_of(body)
    for key in {d.key for d in sim.deliveries if d.key is not None}:  # each UID's bodies in send order
        assert [b for _, b in col.posts if simulator.key_of(b) == key] == [
            d.body for d in sim.deliveries if d.key == key
        ]
    # HTTP ground truth: everything received today (the collector's clock), in send order
    truth = ground_truth(result.sent_deliveries)
    assert truth["per_day_messages"] == {_today(): len(accepted)}
    assert [d.body for d in result.sent_deliveries] == [d.body for d in accepted]

    bad = _Collector(status=404)
    try:
        with pytest.raises(simulator.SendError) as exc:
            simulator.send_to_collector(sim.deliveries[:3], bad.url, concurrency=2)
    finally:
        bad.close()
    assert exc.value.result.failed == 3 and exc.value.result.sent == 0


def test_send_to_collector_gives_up_on_a_collector_that_is_not_there():
    """Connection errors are retried `retries` times, each counted, then the delivery fails with the last error."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sim = simulator.generate(2, 0, 1, seed=8, end_day="2025-01-02", resend_rate=0.0, changed_rate=0.0)
    result = simulator.send_to_collector(
        sim.deliveries[:1], f"http://127.0.0.1:{port}/collect", concurrency=1, retries=2, raise_on_failure=False
    )
    assert (result.sent, result.failed, result.retried, result.not_attempted) == (0, 1, 2, 0)
    assert result.errors[0].startswith("delivery 0: gave up after 3 attempts: ConnectError(")


def test_live_feed_posts_each_deployment_then_resends():
    col = _Collector()
    stop = threading.Event()
    feed = simulator.LiveFeed(
        col.url, 8, 4, seed=3, stop_event=stop, rate_per_s=500, idle_rate_per_s=100, malformed_rate=0.0
    )
    th = threading.Thread(target=feed.run, daemon=True)
    th.start()
    first_pass = feed._day_bodies(datetime.now(UTC).date())
    deadline = time.monotonic() + 10
    while len(col.posts) < len(first_pass) + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    th.join(5)
    col.close()
    assert not th.is_alive()
    bodies = [b for _, b in col.posts]
    assert bodies[: len(first_pass)] == first_pass
    fleet = simulator.build_fleet(8, 4, 3)
    assert {json.loads(b)["uid"] for b in bodies[: len(first_pass)]} >= {d.uid for d in fleet.deployments}
    assert len(bodies) >= len(first_pass) + 5 and feed.posted == len(bodies)
    assert all(not isinstance(validate(b), Rejection) for b in bodies)


def test_backfill_is_fast(broker):
    from core.config import load_settings
    from core.kafka import ensure_topics

    settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "raw_topic": "sim-backfill"})
    ensure_topics(settings)
    started = time.monotonic()
    sent = simulator.backfill(broker.bootstrap_servers, "sim-backfill", 100, 30, 10, seed=2)
    assert time.monotonic() - started < 10
    sim = simulator.generate(100, 30, 10, seed=2, end_day=datetime.now(UTC).date() - timedelta(days=1))
    assert sent == len(sim.deliveries) > 900
    days = {simulator.utc_day(d.received_at_ms) for d in sim.deliveries}
    assert max(days) == datetime.now(UTC).date() - timedelta(days=1) and len(days) == 10


# ---------------------------------------------------------------------------------------------
# the life of the fleet (producers/fleet_lifecycle.py)
# ---------------------------------------------------------------------------------------------

"""The Identity Server producer against real components: a throwaway PostgreSQL 15 cluster holding a minimal
IS schema with known answers, the embedded Kafka broker, and a real local HTTP server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pgcluster import PostgresCluster, postgres_cluster  # noqa: F401  (session fixture)

from core import __version__
from core.schema import (
    DEFAULT_UID,
    AccountsCount,
    ActiveEndDevices,
    EndDevicesCount,
    EntitiesCount,
    GatewaysCount,
    TelemetryMessage,
    Total,
    UsersCount,
)
from is_telemetry.broker import EmbeddedBroker, free_port
from producers import identity_server as isp
from tests.paths import ROOT
from tests.tts_config import FOO_BAR_UID, write_config

pytestmark = pytest.mark.integration


FIXTURE_SQL = ROOT / "tests" / "fixtures" / "is_schema.sql"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
IS_TELEMETRY = VENV_BIN / "is-telemetry"


#: The answers of tests/fixtures/is_schema.sql (see the comment at its top).
EXPECTED = EntitiesCount(
    gateways=GatewaysCount(
        total=6, gateways_by_frequency_plan_id={"EU_863_870": 3, "EU_863_870_TTN": 2, "US_902_928_FSB_2": 1}
    ),
    end_devices=EndDevicesCount(
        total=7, activate_end_devices=ActiveEndDevices(total=4, last_day=1, last_week=2, last_month=3)
    ),
    applications=Total(total=3),
    accounts=AccountsCount(users=UsersCount(standard=3, admin=2), organizations=Total(total=2)),
)
#: The same as Go's encoding/json writes it (declaration order, sorted map keys, no users.total).
EXPECTED_ENTITIES_JSON = (
    '{"gateways":{"total":6,"gateways_by_frequency_plan_id":{"EU_863_870":3,"EU_863_870_TTN":2,"US_902_928_FSB_2":1}},'
    '"end_devices":{"total":7,"activate_end_devices":{"total":4,"last_day":1,"last_week":2,"last_month":3}},'
    '"applications":{"total":3},'
    '"accounts":{"users":{"standard":3,"admin":2},"organizations":{"total":2}}}'
)


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def is_db(postgres_cluster: PostgresCluster) -> str:  # noqa: F811
    return postgres_cluster.create_database("identity_server", sql_file=FIXTURE_SQL)


class Recorder:
    """A tiny real HTTP server recording every request (method, path, headers, body)."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        self.arrived = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._record()

            def do_GET(self) -> None:
                self._record()

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                recorder.arrived.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/collect") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def produce(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m producers.identity_server` (the same typer command `is-telemetry produce` registers)."""
    return subprocess.run(
        [PYTHON, "-m", "producers.identity_server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def _consume_all(bootstrap: str, topic: str, expect: int = 1, timeout_s: float = 15) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} was not created"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=300).values():  # anything beyond `expect` (duplicates)
            records.extend(batch)
        return records
    finally:
        consumer.close()


def expected_body(uid: str) -> bytes:
    return TelemetryMessage(uid=uid, os=isp.os_telemetry(), cli=None, entities_count=EXPECTED).to_json()


def dead_dsn(password: str = "") -> tuple[str, int]:
    port = free_port()
    auth = f"ttn:{password}" if password else "ttn"
    return f"postgresql://{auth}@127.0.0.1:{port}/ttn_lorawan", port


# --------------------------------------------------------------------------------------------- pure parts


# ------------------------------------------------------------------------------------------ the database


def test_counts_exact(is_db: str) -> None:
    counts = isp.count_entities_at(is_db)
    assert counts == EXPECTED
    assert counts.counts() == EXPECTED.counts()
    assert sum(counts.gateways.gateways_by_frequency_plan_id.values()) == 6
    assert "" not in counts.gateways.gateways_by_frequency_plan_id
    assert "AS_923" not in counts.gateways.gateways_by_frequency_plan_id  # only on a deleted gateway


def test_message_body_is_go_compatible(is_db: str) -> None:
    msg = isp.build_message(DEFAULT_UID, isp.count_entities_at(is_db))
    body = msg.to_json()
    o = isp.os_telemetry()
    assert (
        body
        == (
            f'{{"uid":"{DEFAULT_UID}","os":{{"operating_system":"{o.operating_system}","arch":"{o.arch}",'
            f'"binary_version":"{__version__}","golang_version":""}},"cli":null,"entities_count":{EXPECTED_ENTITIES_JSON}}}'
        ).encode()
    )
    again = TelemetryMessage.model_validate_json(body)
    assert again.kind == "is" and again.to_json() == body == expected_body(DEFAULT_UID)


def test_not_an_is_database_exits_2(postgres_cluster: PostgresCluster) -> None:  # noqa: F811
    dsn = postgres_cluster.create_database("not_is")
    with Recorder() as rec:
        out: list[str] = []
        code = isp.run(
            isp.ProduceOptions(
                database=dsn,
                uid=DEFAULT_UID,
                interval_s=60,
                once=True,
                sender=isp.HttpSender(rec.url()),
                retry=isp.RetryPolicy(0.01, 0.01, 3),
                echo=out.append,
                echo_err=out.append,
            )
        )
    assert code == 2
    assert "does not look like a The Things Stack Identity Server database" in out[-1]
    assert rec.requests == []


# ------------------------------------------------------------------------------------------ the CLI: uid


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    assert IS_TELEMETRY.exists(), f"{IS_TELEMETRY} missing: run {VENV_BIN / 'pip'} install -e {ROOT} --no-deps"
    return subprocess.run([str(IS_TELEMETRY), *args], capture_output=True, text=True, timeout=60, cwd=str(ROOT))


def test_cli_uid(tmp_path: Path) -> None:
    r = _cli("uid", "--elements", "foo", "--elements", "bar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == FOO_BAR_UID
    r = _cli("uid", "--config", str(write_config(tmp_path, "")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == DEFAULT_UID
    r = _cli(
        "uid", "--config", str(write_config(tmp_path, "telemetry:\n  uid-elements:\n    - foo\n    - bar\n", "fb.yml"))
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == FOO_BAR_UID


# ----------------------------------------------------------------------------------- sending: HTTP, Kafka


def test_once_http(is_db: str, tmp_path: Path) -> None:
    with Recorder() as rec:
        target = rec.url("/custom/collect")
        cfg = write_config(tmp_path, f"telemetry:\n  target: {target}\n  uid-elements: [foo, bar]\n")
        r = produce("--once", "--config", str(cfg), "--database", is_db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(rec.requests) == 1
    req = rec.requests[0]
    assert req["method"] == "POST" and req["path"] == "/custom/collect"  # exactly as configured
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == isp.user_agent() == f"TheThingsStack/{__version__} ({isp.goos()}/{isp.goarch()})"
    assert req["body"] == expected_body(FOO_BAR_UID)
    msg = TelemetryMessage.model_validate_json(req["body"])
    assert msg.uid == FOO_BAR_UID and msg.cli is None and msg.entities_count == EXPECTED
    assert "sent uid=wBs9NNSlIoSm" in r.stdout and "HTTP 200" in r.stdout and target in r.stdout


def test_cli_produce_target_overrides_config(is_db: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "telemetry:\n  target: http://127.0.0.1:9/never\n")
    with Recorder() as rec:
        r = _cli("produce", "--once", "--config", str(cfg), "--database", is_db, "--target", rec.url())
    assert r.returncode == 0, r.stdout + r.stderr
    assert [q["path"] for q in rec.requests] == ["/collect"]
    assert rec.requests[0]["body"] == expected_body(DEFAULT_UID)
    assert "shares it" in r.stderr  # the default-UID warning


def test_once_kafka(is_db: str, tmp_path: Path) -> None:
    topic = "is-producer-test"
    cfg = write_config(tmp_path, "telemetry:\n  uid-elements: [foo, bar]\n")
    with EmbeddedBroker(port=free_port()) as broker:
        before = int(time.time() * 1000)
        r = produce(
            "--once", "--config", str(cfg), "--database", is_db, "--kafka", broker.bootstrap_servers, "--topic", topic
        )
        after = int(time.time() * 1000)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"kafka {broker.bootstrap_servers} topic {topic}" in r.stdout
        records = _consume_all(broker.bootstrap_servers, topic)
    assert len(records) == 1
    rec = records[0]
    assert rec.key == FOO_BAR_UID.encode()
    assert rec.value == expected_body(FOO_BAR_UID)
    hdrs = dict(rec.headers)
    assert set(hdrs) == {"received_at_ms", "source", "user_agent", "body_length"}
    assert hdrs["source"] == b"identity-server"
    assert hdrs["user_agent"] == isp.user_agent().encode()
    assert hdrs["body_length"] == str(len(rec.value)).encode()
    received_at = int(hdrs["received_at_ms"])
    assert before <= received_at <= after
    assert rec.timestamp == received_at


# ------------------------------------------------------------------------------------ disabled, failures


@pytest.mark.parametrize(
    "config_text, key",
    [
        ("telemetry:\n  enable: false\n", "telemetry.enable"),
        ("telemetry:\n  entity-count-telemetry:\n    enable: false\n", "telemetry.entity-count-telemetry.enable"),
    ],
)
def test_disabled_sends_nothing(tmp_path: Path, config_text: str, key: str) -> None:
    dsn, _ = dead_dsn()  # the database is not even touched
    with Recorder() as rec:
        r = produce(
            "--once", "--config", str(write_config(tmp_path, config_text)), "--database", dsn, "--target", rec.url()
        )
        time.sleep(0.2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "telemetry disabled" in r.stdout and f"{key} is false" in r.stdout and "nothing sent" in r.stdout
    assert rec.requests == []


def test_database_unreachable_retries_then_fails(tmp_path: Path) -> None:
    dsn, port = dead_dsn(password="s3cret-pw")
    with Recorder() as rec:
        r = produce(
            "--once",
            "--config",
            str(write_config(tmp_path, "")),
            "--database",
            dsn,
            "--target",
            rec.url(),
            "--max-retries",
            "2",
            "--retry-initial-seconds",
            "0.1",
        )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    where = f"database unreachable at 127.0.0.1:{port}/ttn_lorawan"
    assert r.stderr.count(where) == 4, r.stderr  # the first try, two retries, the final error line
    assert "retrying in 0.1s (retry 1 of 2)" in r.stderr and "retrying in 0.2s (retry 2 of 2)" in r.stderr
    assert "giving up after 3 tries" in r.stderr
    assert "message NOT sent" in r.stderr
    assert "s3cret-pw" not in out
    assert rec.requests == []


def test_target_down_then_up(is_db: str, tmp_path: Path) -> None:
    port = free_port()
    err = tmp_path / "stderr.log"
    with open(err, "w") as errf:
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "producers.identity_server",
                "--once",
                "--config",
                str(write_config(tmp_path, "")),
                "--database",
                is_db,
                "--target",
                f"http://127.0.0.1:{port}/collect",
                "--retry-initial-seconds",
                "0.2",
                "--retry-max-seconds",
                "0.5",
                "--max-retries",
                "40",
            ],
            stdout=subprocess.PIPE,
            stderr=errf,
            text=True,
            cwd=str(ROOT),
        )
        try:
            deadline = time.monotonic() + 20
            while "target unreachable" not in err.read_text():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "no retry logged"
                time.sleep(0.05)
            with Recorder(port=port) as rec:
                stdout, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = err.read_text()
    assert proc.returncode == 0, stdout + log
    assert f"target unreachable at http://127.0.0.1:{port}/collect" in log and "retrying in" in log
    assert len(rec.requests) == 1 and rec.requests[0]["body"] == expected_body(DEFAULT_UID)
    assert "HTTP 200" in stdout


def test_http_5xx_is_retried_and_4xx_is_not(is_db: str) -> None:
    policy = isp.RetryPolicy(initial_s=0.05, maximum_s=0.05, max_retries=3)
    with Recorder(statuses=[503, 500, 200]) as rec:
        out: list[str] = []
        code = isp.run(
            isp.ProduceOptions(
                database=is_db,
                uid=DEFAULT_UID,
                interval_s=60,
                once=True,
                sender=isp.HttpSender(rec.url()),
                retry=policy,
                echo=out.append,
                echo_err=out.append,
            )
        )
    assert code == 0 and len(rec.requests) == 3
    assert len({q["body"] for q in rec.requests}) == 1  # the same message each try
    with Recorder(statuses=[400]) as rec:
        out = []
        code = isp.run(
            isp.ProduceOptions(
                database=is_db,
                uid=DEFAULT_UID,
                interval_s=60,
                once=True,
                sender=isp.HttpSender(rec.url()),
                retry=policy,
                echo=out.append,
                echo_err=out.append,
            )
        )
    assert code == 1 and len(rec.requests) == 1
    assert "HTTP 400" in out[-1] and "NOT sent" in out[-1]


def test_periodic_sends_immediately_and_stops_on_sigterm(is_db: str, tmp_path: Path) -> None:
    with Recorder() as rec:
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "producers.identity_server",
                "--config",
                str(write_config(tmp_path, "")),
                "--database",
                is_db,
                "--target",
                rec.url(),
                "--interval",
                "1s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        try:
            deadline = time.monotonic() + 20
            while len(rec.requests) < 2:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "fewer than two sends"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert stdout.count(" sent uid=") >= 2 and "next send at" in stdout and "stopped" in stdout
    assert "every 1s, first send now" in stdout
    bodies = [json.loads(q["body"]) for q in rec.requests]
    assert all(b["entities_count"] == json.loads(EXPECTED_ENTITIES_JSON) for b in bodies)


def test_cli_uid_elements_space_separated() -> None:
    """The documented form `is-telemetry uid --elements foo bar` (several values after one flag)."""
    r = _cli("uid", "--elements", "foo", "bar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == FOO_BAR_UID


def test_kafka_down_then_up(is_db: str, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port)
    starter = threading.Timer(1.0, broker.start)
    sender = isp.KafkaSender(broker.bootstrap_servers, "is-producer-retry", connect_timeout_ms=700)
    out: list[str] = []
    caplog.set_level("WARNING", logger="producers.identity_server")
    starter.start()
    try:
        code = isp.run(
            isp.ProduceOptions(
                database=is_db,
                uid=FOO_BAR_UID,
                interval_s=60,
                once=True,
                sender=sender,
                retry=isp.RetryPolicy(initial_s=0.2, maximum_s=0.4, max_retries=30),
                echo=out.append,
                echo_err=out.append,
            )
        )
        assert code == 0, out
        records = _consume_all(broker.bootstrap_servers, "is-producer-retry")
    finally:
        starter.join()
        broker.stop()
    assert f"kafka unreachable at 127.0.0.1:{port}" in caplog.text and "retrying in" in caplog.text
    assert len(records) == 1 and records[0].key == FOO_BAR_UID.encode()
    assert records[0].value == expected_body(FOO_BAR_UID)
    assert "partition" in out[-1] and "offset 0" in out[-1]

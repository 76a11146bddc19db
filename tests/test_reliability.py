"""Reliability and security: faults, hostile input, poisoning and a bounded soak (docs/reliability.md).

Real processes on loopback only (127.0.0.1): the embedded broker (Tansu), `is-telemetry up` / `worker`
processes, chDB. Kill -9, replay and scale-out are proven in tests/test_exactness.py and not repeated here;
Kafka down at the collector is tests/test_collector.py::test_kafka_down_503_then_recovery.

Faults on chDB (which has no server to stop) are real file-system faults on its data directory, made in a
private mount namespace of the worker (`unshare --mount`): a small tmpfs that is filled up (disk full), then a
read-only bind mount over the data directory (read-only file system). Tests run as root, so chmod would not
stop chDB; `chattr +i` on the table directories is the third way (used where a stack's own data dir is on ext4).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import load_settings
from core.kafka import ensure_topics
from core.partitioning import partition_of
from core.schema import MAX_NAME_LENGTH
from is_telemetry.broker import EmbeddedBroker, free_port
from producers.simulator import generate, ground_truth, send_to_kafka
from producers.truth_rules import Rejected, judge
from tests.paths import ROOT
from tests.processes import (
    Proc,
    chattr_works,
    consume,
    consume_bodies,
    expected_views,
    wait_for_views,
    wait_until,
    wait_until_ready,
)
from tests.samples import SAMPLES as TTS_SAMPLES
from tests.stack import RunningStack, start_stack

pytestmark = pytest.mark.integration


RAW_TOPIC = "tts-telemetry-raw"
DEADLETTER_TOPIC = "tts-telemetry-deadletter"
GROUP = "is-telemetry-processors"
HEADERS = {"Content-Type": "application/json", "User-Agent": "TheThingsStack/3.32.1 (linux/amd64)"}
# The reference bodies (tests/fixtures/tts-samples/), byte for byte.
SAMPLES: dict[str, bytes] = TTS_SAMPLES
IS_SAMPLE = orjson.loads(SAMPLES["is-3.32.json"])
CLI_SAMPLE = orjson.loads(SAMPLES["cli-3.30.json"])
LIMIT = 10**9  # processors.plausibility_limit (default)


# ------------------------------------------------------------------------------------------------ helpers


def is_uid(tag: str) -> str:
    """An Identity Server UID (88-char base64 of a SHA-512 digest), unique per tag."""
    return base64.b64encode(hashlib.sha512(tag.encode()).digest()).decode()


def cli_uid(tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, tag))


def is_message(uid: str, **changes: Any) -> dict[str, Any]:
    """The is-3.32 sample with another uid; `changes` set dotted paths, e.g. {"entities_count.gateways.total": 5}."""
    m = orjson.loads(orjson.dumps(IS_SAMPLE))
    m["uid"] = uid
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = m
        for p in parents:
            node = node[p]
        node[leaf] = value
    return m


def dumps(value: Any) -> bytes:
    """Compact JSON, any integer size (stdlib), UTF-8 (not ASCII-escaped)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def is_body(uid: str, **changes: Any) -> bytes:
    return dumps(is_message(uid, **changes))


def cli_body(uid: str) -> bytes:
    return dumps({**CLI_SAMPLE, "uid": uid})


def metrics(url: str) -> dict[str, float]:
    """Prometheus text -> {series: value}, series as written (`name{label="v",...}`)."""
    out: dict[str, float] = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def series(name: str, **labels: str) -> str:
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")


def base(stack: RunningStack) -> str:
    return stack.collector_url.rsplit("/", 1)[0]


def stored_count(stack: RunningStack) -> float:
    """Records whose batch reached ClickHouse (acknowledged after the write), from the worker's /metrics."""
    return metrics(stack.api_url + "/metrics").get("is_telemetry_processor_stored_total", 0.0)


def published_count(stack: RunningStack) -> float:
    return metrics(base(stack) + "/metrics").get("collector_records_published_total", 0.0)


DIRECT_RECORDS: Counter[int] = Counter()  # records a test produced straight to a stack's raw topic, by broker port


def drain(stack: RunningStack, timeout_s: float = 60) -> None:
    """Wait until the worker has stored every record the collector published (views are then current)."""
    deadline = time.monotonic() + timeout_s
    while True:
        published = published_count(stack) + DIRECT_RECORDS[stack.broker_port]
        stored = stored_count(stack)
        if stored >= published:
            return
        assert time.monotonic() < deadline, f"worker stored {stored} of {published} published\n{stack.log()}"
        time.sleep(0.3)


def post(stack: RunningStack, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    return httpx.post(
        stack.collector_url,
        content=body,
        headers=HEADERS if headers is None else headers,
        timeout=kw.pop("timeout", 30),
        **kw,
    )


def assert_all_healthy(stack: RunningStack) -> None:
    """`is-telemetry up`, its worker (API) and collector are alive and answer; nothing exited meanwhile."""
    assert stack.process.poll() is None, stack.log()
    assert httpx.get(stack.api_url + "/healthz", timeout=5).status_code == 200
    assert httpx.get(base(stack) + "/healthz", timeout=5).status_code == 200
    assert httpx.get(base(stack) + "/readyz", timeout=5).status_code == 200
    assert "exited with code" not in stack.log(), stack.log()


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def rejected_today(stack: RunningStack) -> Counter[str]:
    return Counter(
        {
            r["reason"]: r["messages"]
            for r in stack.sql(f"SELECT reason, messages FROM rejected_daily WHERE day = '{today()}'")
        }
    )


def fleet_today(stack: RunningStack) -> dict[str, Any]:
    rows = stack.sql(f"SELECT * FROM fleet_daily WHERE day = '{today()}'")
    return {k: v for k, v in rows[0].items() if k != "day"} if rows else {}


def collect_statuses(stack: RunningStack) -> Counter[str]:
    m = metrics(base(stack) + "/metrics")
    out: Counter[str] = Counter()
    for k, v in m.items():
        found = re.fullmatch(r'collector_requests_total\{code="(\d+)",endpoint="/collect"\}', k) or re.fullmatch(
            r'collector_requests_total\{endpoint="/collect",code="(\d+)"\}', k
        )
        if found:
            out[found.group(1)] = int(v)
    return out


def pid_of(pattern: str) -> int:
    """The one process whose command line matches pattern (pgrep -f)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in out if int(p) != os.getpid()]
    assert len(pids) == 1, (pattern, pids)
    return pids[0]


def wait_gone(pid: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace") if Path(f"/proc/{pid}/stat").exists() else ""
        if ") Z " in stat:  # a zombie: exited, waiting for its parent to reap it
            return
        assert time.monotonic() < deadline, f"pid {pid} still there"
        time.sleep(0.05)


def wait_for_log(stack: RunningStack, text: str, timeout_s: float = 60, since: int = 0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        log = stack.log_path.read_bytes()[since:].decode(errors="replace")
        if text in log:
            return log
        assert stack.process.poll() is None, f"stack exited:\n{log[-4000:]}"
        assert time.monotonic() < deadline, f"{text!r} not in the console output:\n{log[-4000:]}"
        time.sleep(0.1)


# ------------------------------------------------------------------------- 1 + 4. ClickHouse unavailable


def _mount_problem(probe_dir: Path) -> str | None:
    """None if this machine lets us make a private mount namespace with tmpfs and read-only bind mounts."""
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m tmpfs "$1" && mount --bind "$1" "$1" && '
            'mount -o remount,bind,ro "$1" && ! touch "$1/x" 2>/dev/null',
            "sh",
            str(probe_dir),
        ],
        capture_output=True,
        text=True,
    )
    return None if r.returncode == 0 else f"no private tmpfs/read-only bind mounts here: {r.stderr.strip()[:200]}"


class FaultableWorker(Proc):
    """`is-telemetry worker` whose chDB directory sits on a small tmpfs in the worker's own mount namespace.

    The namespace dies with the process, so nothing is left mounted on the machine whatever happens.
    fill() makes the disk full, read_only() lays a read-only bind mount over the chDB directory (and frees
    the space), heal() removes it.
    """

    def __init__(self, bootstrap: str, data_dir: Path, size_mb: int = 64) -> None:
        self.fs = data_dir / "fs"
        self.chdb = self.fs / "chdb"
        self.size_mb = size_mb
        port = free_port()
        args = [
            "worker",
            "--kafka",
            bootstrap,
            "--data-dir",
            str(data_dir),
            "--clickhouse",
            f"chdb://{self.chdb}",
            "--log-level",
            "info",
            "--api-port",
            str(port),
        ]
        super().__init__("worker", args, data_dir, port)

    def start(self) -> None:
        self.fs.mkdir(parents=True, exist_ok=True)
        script = f'mount -t tmpfs -o size={self.size_mb}m tmpfs "$1" && mkdir -p "$1/chdb" && shift && exec "$@"'
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    str(self.fs),
                    sys.executable,
                    "-m",
                    "is_telemetry",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ns(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.process is not None
        r = subprocess.run(
            ["nsenter", "-t", str(self.process.pid), "-m", "sh", "-c", script], capture_output=True, text=True
        )
        assert r.returncode == 0 or not check, (script, r.stderr)
        return r

    def fill(self) -> None:
        self.ns(f'head -c {self.size_mb + 16}M /dev/zero > "{self.fs}/ballast"', check=False)  # stops at ENOSPC
        free = self.ns(f'df -k "{self.fs}" | tail -1').stdout.split()
        assert free[3] == "0", free

    def read_only(self) -> None:
        self.ns(
            f'mount --bind "{self.chdb}" "{self.chdb}" && mount -o remount,bind,ro "{self.chdb}" && '
            f'rm "{self.fs}/ballast"'
        )

    def heal(self) -> None:
        self.ns(f'umount "{self.chdb}" || umount -l "{self.chdb}"')

    def stored(self) -> float:
        return metrics(str(self.api) + "/metrics").get("is_telemetry_processor_stored_total", 0.0)


def committed(bootstrap: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="reliability-test")
    try:
        offsets = admin.list_group_offsets(GROUP).get(GROUP, {})
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == RAW_TOPIC and om.offset >= 0}


@pytest.mark.slow
def test_clickhouse_unavailable_30s_disk_full_then_read_only(tmp_path: Path) -> None:
    """30 s of failing chDB writes while ingest continues: 15 s disk full, then 15 s read-only file system.

    During the fault the log says every write failed and is retried, the API still answers, and the group's
    committed offsets do not move. Afterwards every day aggregate equals the simulator's ground truth exactly.
    """
    problem = _mount_problem(tmp_path / "probe")
    if problem:
        pytest.skip(problem)
    sim = generate(240, 60, 3, 21, end_day=datetime.now(UTC).date() - timedelta(days=1))
    deliveries, expected = sim.deliveries, expected_views(ground_truth(sim.deliveries))
    n = len(deliveries)
    before, during_full, during_ro = deliveries[: n // 3], deliveries[n // 3 : 2 * n // 3], deliveries[2 * n // 3 :]

    with EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log") as broker:
        b = broker.bootstrap_servers
        ensure_topics(load_settings(kafka={"bootstrap_servers": b}))
        w = FaultableWorker(b, tmp_path)
        try:
            wait_until_ready(w)
            send_to_kafka(before, b, RAW_TOPIC)
            deadline = time.monotonic() + 90
            while w.stored() < len(before):
                assert time.monotonic() < deadline and w.alive(), w.log()
                time.sleep(0.3)
            # faust commits every second: poll until the commits cover what was stored
            c0 = wait_until(
                lambda: committed(b),
                lambda c: sum(c.values()) == len(before),
                timeout_s=30,
                what=f"committed offsets summing to {len(before)}",
            )

            # Phase A: disk full (chDB: "Cannot reserve ... not enough space")
            w.fill()
            fault_started = time.monotonic()
            chunks = 4
            for i in range(chunks):
                part = during_full[i * len(during_full) // chunks : (i + 1) * len(during_full) // chunks]
                send_to_kafka(part, b, RAW_TOPIC)
                time.sleep(3.0)  # the fault lasts while records keep arriving
            wait_until(
                lambda: "NOT_ENOUGH_SPACE" in w.log_path.read_text(errors="replace"),
                timeout_s=30,
                what="the worker logging NOT_ENOUGH_SPACE",
            )
            # Reads keep working: the API answers from the same chDB while writes fail.
            assert w.sql("SELECT count() AS n FROM snapshots")[0]["n"] > 0
            c1 = committed(b)

            # Phase B: read-only file system (space freed, but nothing can be created)
            w.read_only()
            for i in range(chunks):
                part = during_ro[i * len(during_ro) // chunks : (i + 1) * len(during_ro) // chunks]
                send_to_kafka(part, b, RAW_TOPIC)
                time.sleep(max(0.0, fault_started + 15 + 3.0 * (i + 1) - time.monotonic()))
            time.sleep(max(0.0, fault_started + 30 - time.monotonic()))
            c2 = committed(b)
            log = w.log_path.read_text(errors="replace")
            w.heal()
            fault_s = time.monotonic() - fault_started

            assert w.alive(), log[-3000:]
            assert c0 == c1 == c2, "offsets were committed while ClickHouse could not store their records"
            retries = re.findall(
                r"WARNING sinks\.clickhouse: ClickHouse write of \d+ rows failed \(attempt (\d+), "
                r"chdb://[^)]*\): (.*); offsets are held, retrying in [\d.]+s",
                log,
            )
            assert retries, log[-3000:]
            assert max(int(a) for a, _ in retries) >= 5  # it kept trying, with backoff, the whole time
            messages = " ".join(m for _, m in retries)
            assert "not enough space" in messages and "Read-only file system" in messages, messages[:2000]

            # After the fault: everything arrives, exactly once, and is committed.
            wait_for_views(w, expected, timeout_s=120)
            deadline = time.monotonic() + 30
            while sum(committed(b).values()) < n:
                assert time.monotonic() < deadline, committed(b)
                time.sleep(0.5)
            print(
                f"\nClickHouse unavailable {fault_s:.0f}s; {len(retries)} failed write attempts logged; "
                f"{n} records, views == ground truth"
            )
        finally:
            w.terminate()


# ------------------------------------------------------------------------------ 3. broker restart in `up`


def _table_dirs(chdb: Path) -> list[str]:
    return [str(p) for p in (chdb / "store").glob("*/*") if p.is_dir()]


@pytest.mark.slow
def test_broker_restart_is_detected_reported_and_recovered(tmp_path: Path) -> None:
    """kill -9 of the embedded broker under `is-telemetry up`: the console says what was lost, the stack recovers.

    Five records are acknowledged by the collector while the worker cannot store them (chDB's table directories
    made immutable with chattr +i), then the broker is killed. The report must count exactly those five as lost
    and say ClickHouse is intact; the broker comes back on the same port with new topics, the collector and the
    worker are restarted, and records posted after the kill are either refused (503 / connection refused) or
    stored: never a 2xx for a record that is not stored.
    """
    data = tmp_path / "stack"
    can_freeze = chattr_works(tmp_path)
    stack = start_stack(data, "--no-simulate")
    frozen: list[str] = []
    try:
        for body in SAMPLES.values():
            assert post(stack, body).status_code == 202
        drain(stack)
        assert fleet_today(stack)["deployments"] == 3

        lost_uids = [cli_uid(f"lost-{i}") for i in range(5)] if can_freeze else []
        if can_freeze:
            frozen = _table_dirs(data / "chdb")
            subprocess.run(["chattr", "+i", *frozen], check=True)
            for uid in lost_uids:
                assert post(stack, cli_body(uid)).status_code == 202
            worker_log = data / "logs" / "worker.log"
            deadline = time.monotonic() + 20
            while not re.search(r"ClickHouse write of \d+ rows failed", worker_log.read_text(errors="replace")):
                assert time.monotonic() < deadline, worker_log.read_text(errors="replace")[-3000:]
                time.sleep(0.2)

        broker_pid = pid_of(f"tansu broker --listener-url tcp://127.0.0.1:{stack.broker_port} ")
        worker_pid = pid_of(f"is_telemetry worker --kafka 127.0.0.1:{stack.broker_port} ")
        collector_pid = pid_of(f"is_telemetry collect --kafka 127.0.0.1:{stack.broker_port} ")
        offset = stack.log_path.stat().st_size
        os.kill(broker_pid, signal.SIGKILL)
        wait_gone(broker_pid)

        # Post new records from now on, through the outage and the recovery.
        outcomes: list[tuple[str, int | str, dict[str, str]]] = []
        stop = threading.Event()

        def poster() -> None:
            i = 0
            with httpx.Client(timeout=15) as client:
                while not stop.is_set():
                    uid = cli_uid(f"during-{i}")
                    i += 1
                    try:
                        r = client.post(stack.collector_url, content=cli_body(uid), headers=HEADERS)
                        outcomes.append((uid, r.status_code, dict(r.headers)))
                    except httpx.TransportError as exc:
                        outcomes.append((uid, type(exc).__name__, {}))
                    stop.wait(0.25)

        t = threading.Thread(target=poster, daemon=True)
        t.start()
        try:
            if can_freeze:
                wait_for_log(stack, "   worker stopped", timeout_s=60, since=offset)
                subprocess.run(["chattr", "-i", *frozen], check=True)
                frozen = []
            console = wait_for_log(stack, "!! RECOVERED", timeout_s=120, since=offset)
            wait_until(  # the poster's records are accepted again
                lambda: [status for _, status, _ in outcomes if status == 202],
                timeout_s=30,
                what="a 202 after the recovery",
            )
        finally:
            stop.set()
            t.join(30)

        assert f"!! BROKER LOST: the embedded broker (pid {broker_pid}) exited with signal SIGKILL." in console
        assert "every topic, offset and consumer group" in console
        assert f"Lost: {len(lost_uids)} records acknowledged to their senders but not yet stored" in console
        assert "ClickHouse is intact" in console and "6 snapshot rows over 1 day." in console
        assert re.search(rf"broker     kafka://127\.0\.0\.1:{stack.broker_port} again \(pid \d+\)", console)
        print("\n" + "\n".join(line for line in console.splitlines() if line.startswith(("!!", "   "))))

        # A new broker on the same port, new worker and collector processes; all healthy.
        new_broker = pid_of(f"tansu broker --listener-url tcp://127.0.0.1:{stack.broker_port} ")
        assert new_broker != broker_pid
        assert pid_of(f"is_telemetry worker --kafka 127.0.0.1:{stack.broker_port} ") != worker_pid
        assert pid_of(f"is_telemetry collect --kafka 127.0.0.1:{stack.broker_port} ") != collector_pid
        assert_all_healthy(stack)

        accepted = [uid for uid, status, _ in outcomes if status == 202]
        refused = [(status, h) for _, status, h in outcomes if status != 202]
        assert accepted, outcomes
        refusals = (503, "ConnectError", "RemoteProtocolError", "ReadError")
        assert all(status in refusals for status, _ in refused), refused
        assert any(status == 503 and h.get("retry-after", "").isdigit() for status, h in refused), refused

        drain(stack)
        after = {r["uid"] for r in stack.sql("SELECT uid FROM snapshots_latest WHERE kind = 'cli'")}
        assert set(accepted) <= after, "a record answered 202 after the broker loss is not stored"
        assert not set(lost_uids) & after
        fleet = fleet_today(stack)
        assert fleet["deployments"] == 3 and fleet["cli_installs"] == 3 + len(accepted)  # 3 CLI samples
        # The pipeline goes on: the samples again (same day: counted once), and a new deployment.
        for body in SAMPLES.values():
            assert post(stack, body).status_code == 202
        assert post(stack, is_body(is_uid("after-recovery"))).status_code == 202
        drain(stack)
        assert fleet_today(stack)["deployments"] == 4
    finally:
        if frozen:
            subprocess.run(["chattr", "-i", *frozen])
        assert stack.stop() == 0


# ---------------------------------------------------------------------- 5 + 6. input against a running stack


class Tricklers:
    """Slow clients against a collector: some trickle a body a byte every 0.5 s (never the last byte), some
    trickle header lines (never the blank line that ends the headers)."""

    def __init__(self, address: tuple[str, int], n: int = 50) -> None:
        self.body = is_body(is_uid("slow"))
        head = (
            b"POST /collect HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(self.body)
        )
        self.body_socks = [socket.create_connection(address, timeout=5) for _ in range(n)]
        self.head_socks = [socket.create_connection(address, timeout=5) for _ in range(n)]
        for s in self.body_socks:
            s.sendall(head)
        for s in self.head_socks:
            s.sendall(b"POST /collect HTTP/1.1\r\nHost: t\r\n")
        self.started = time.monotonic()
        self.answers: dict[int, bytes] = {}
        self.answered_at: dict[int, float] = {}
        self.closed_heads: set[int] = set()
        self.sent_head_lines = 0
        self.published_at_start: float | None = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tricklers", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop_event.wait(0.5):
            for n, s in enumerate(self.body_socks):
                if n in self.answers:
                    continue
                try:
                    s.setblocking(False)
                    try:
                        self.answers[n] = s.recv(4096)
                        self.answered_at[n] = time.monotonic()
                        continue
                    except BlockingIOError:
                        pass
                    finally:
                        s.setblocking(True)
                    if i < len(self.body) - 1:
                        s.sendall(self.body[i : i + 1])
                except OSError as exc:
                    self.answers[n] = repr(exc).encode()
                    self.answered_at[n] = time.monotonic()
            for n, s in enumerate(self.head_socks):
                if n in self.closed_heads:
                    continue
                try:
                    s.sendall(b"X-Slow-%d: %d\r\n" % (i, i))
                except OSError:
                    self.closed_heads.add(n)
            self.sent_head_lines = i + 1
            i += 1

    def requests_meanwhile(self, stack: RunningStack) -> int:
        return int(sum(collect_statuses(stack).values()))

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        for s in self.body_socks + self.head_socks:
            s.close()


TRICKLERS: dict[int, Tricklers] = {}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One stack for the input tests; slow clients trickle into its collector the whole time. The tests post from
    loopback (one client) fewer new UIDs and bodies without a UID than collector.max_new_uids_per_client_per_day
    (200); more would be rate-limited. 127.0.0.1 is a trusted proxy, so that a test can name a client of its own
    (X-Forwarded-For), as the compose proxy does."""
    s = start_stack(
        tmp_path_factory.mktemp("reliability") / "stack",
        "--no-simulate",
        env={"IS_TELEMETRY_COLLECTOR__TRUSTED_PROXIES": '["127.0.0.1"]'},
    )
    host, port = base(s).removeprefix("http://").split(":")
    TRICKLERS[s.broker_port] = Tricklers((host, int(port)))
    try:
        # Today starts with one stored snapshot, so that the tests that send only rejected messages do not also
        # depend on the day-without-snapshots case (tested on its own, last: it stalled the worker).
        assert post(s, is_body(is_uid("first-of-the-day"))).status_code == 202
        drain(s)
        yield s
    finally:
        TRICKLERS.pop(s.broker_port).stop()
        assert s.stop() == 0, s.log()


NESTED_100K = b"[" * 100_000 + b"]" * 100_000  # 200 kB: over the body limit
NESTED_30K = b"[" * 30_000 + b"]" * 30_000  # 60 kB: under the limit, over orjson's depth limit (1024)
EDGE_CASES = [  # (name, body, status, error)
    ("100k nested arrays", NESTED_100K, 413, "body_too_large"),
    ("30k nested arrays", NESTED_30K, 400, "not_json"),
    ("NaN count", is_body(is_uid("nan")).replace(b'"total":3', b'"total":NaN'), 400, "not_json"),
    ("Infinity count", is_body(is_uid("inf")).replace(b'"total":3', b'"total":Infinity'), 400, "not_json"),
    ("-Infinity count", is_body(is_uid("-inf")).replace(b'"total":3', b'"total":-Infinity'), 400, "not_json"),
    ("number beyond a double", is_body(is_uid("e400")).replace(b'"total":3', b'"total":1e400'), 400, "not_json"),
    (
        "4000-digit integer",
        is_body(is_uid("digits")).replace(b'"total":3', b'"total":1' + b"0" * 4000),
        400,
        "not_json",
    ),
    ("invalid UTF-8", is_body(is_uid("utf8")).replace(b"linux", b"lin\xff\xfeux"), 400, "not_json"),
    ("overlong UTF-8", is_body(is_uid("overlong")).replace(b"linux", b"\xc0\xaflinux"), 400, "not_json"),
    ("UTF-8 surrogate bytes", is_body(is_uid("surr")).replace(b"linux", b"\xed\xa0\x80"), 400, "not_json"),
    ("lone surrogate escape", is_body(is_uid("esc")).replace(b"linux", rb"\ud800"), 400, "not_json"),
    ("byte-order mark", b"\xef\xbb\xbf" + is_body(is_uid("bom")), 400, "not_json"),
    ("NUL bytes", b"\x00" * 100, 400, "not_json"),
    ("10 MB body", b'{"uid":"x","pad":"' + b"x" * (10 * 1024 * 1024) + b'"}', 413, "body_too_large"),
]


@pytest.mark.parametrize("name,body,status,error", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_hostile_bodies_are_refused_at_the_edge(
    running: RunningStack, name: str, body: bytes, status: int, error: str
) -> None:
    before, published = collect_statuses(running), published_count(running)
    try:
        r = post(running, body)
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
    except httpx.TransportError:  # 413 may close the connection before a big body is fully sent
        assert status == 413
    after = collect_statuses(running)
    assert after[str(status)] == before[str(status)] + 1  # the counter shows it
    assert published_count(running) == published  # nothing reached Kafka
    assert_all_healthy(running)


def test_10mb_chunked_upload_is_cut_off_at_the_limit(running: RunningStack) -> None:
    sent = [0]

    def chunks() -> Iterator[bytes]:
        for _ in range(160):  # 160 x 64 KiB = 10 MiB, no Content-Length
            sent[0] += 65536
            yield b" " * 65536

    before = collect_statuses(running)
    try:
        r = httpx.post(running.collector_url, content=chunks(), headers=HEADERS, timeout=30)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    except httpx.TransportError:
        pass  # the server answered 413 and closed while we were still writing
    assert collect_statuses(running)["413"] == before["413"] + 1
    assert sent[0] < 10 * 1024 * 1024  # it stopped reading long before the end
    assert_all_healthy(running)


def _deep(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


# Bodies the edge accepts (they are JSON) and the processors must reject, each with its reason.
PROCESSOR_CASES: list[tuple[str, bytes, str]] = [
    ("deep nesting inside cli", dumps({**CLI_SAMPLE, "uid": cli_uid("deep"), "cli": {"x": _deep(600)}}), "not_json"),
    ("2^64 as a count", is_body(is_uid("u64+1"), **{"entities_count.gateways.total": 2**64}), "out_of_range"),
    ("300-digit count", is_body(is_uid("300d"), **{"entities_count.applications.total": 10**300}), "out_of_range"),
    ("count as float", is_body(is_uid("float"), **{"entities_count.gateways.total": 1.0}), "fractional"),
    ("negative count", is_body(is_uid("neg"), **{"entities_count.end_devices.total": -1}), "negative"),
    ("count as string", is_body(is_uid("str"), **{"entities_count.gateways.total": "3"}), "wrong_type"),
    ("count as bool", is_body(is_uid("bool"), **{"entities_count.gateways.total": True}), "wrong_type"),
    ("top-level array", b"[1,2,3]", "not_object"),
    ("empty object", b"{}", "missing_field"),
    ("uid as number", b'{"uid":42,"cli":{},"entities_count":null}', "wrong_type"),
    ("both kinds", dumps({**is_message(is_uid("both")), "cli": {}}), "kind_ambiguous"),
    ("SQL in the uid", is_body("x'); DROP TABLE snapshots;--"), "bad_uid"),
    ("duplicate uid key, last one bad", is_body(is_uid("dup")).replace(b'"os":', b'"uid":"nope","os":', 1), "bad_uid"),
    (
        "implausible plan count",
        is_body(is_uid("plan"), **{"entities_count.gateways.gateways_by_frequency_plan_id": {"EU_863_870": LIMIT + 1}}),
        "implausible",
    ),
]


def test_hostile_messages_are_rejected_with_their_reason_end_to_end(running: RunningStack) -> None:
    """Each body reaches Kafka (202), is rejected by the processors with its reason (rejected_daily, the
    dead-letter topic with the original bytes, the worker's rejected_total{reason}), and moves no fleet number."""
    drain(running)
    fleet, rejected = fleet_today(running), rejected_today(running)
    worker = metrics(running.api_url + "/metrics")
    for name, body, reason in PROCESSOR_CASES:
        assert judge(body).reason == reason, name  # type: ignore[union-attr]  # the oracle agrees with the case
        r = post(running, body)
        assert r.status_code == 202, (name, r.text)
    drain(running)
    expected = Counter(reason for _, _, reason in PROCESSOR_CASES)
    assert rejected_today(running) - rejected == expected
    assert fleet_today(running) == fleet
    after = metrics(running.api_url + "/metrics")
    for reason, n in expected.items():
        key = series("is_telemetry_processor_rejected_total", reason=reason)
        assert after.get(key, 0) - worker.get(key, 0) == n, reason
    bodies = {body: reason for _, body, reason in PROCESSOR_CASES}
    records = consume(
        f"127.0.0.1:{running.broker_port}", DEADLETTER_TOPIC, lambda rs: bodies.keys() <= {r.value for r in rs}
    )
    found = {r.value: dict(r.headers)["reason"].decode() for r in records if r.value in bodies}
    assert found == bodies  # the original bytes, with their reason
    assert_all_healthy(running)


def topic_partitions(broker_port: int, topic: str = RAW_TOPIC) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{broker_port}")
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


def test_duplicate_keys_and_deep_unknown_fields_are_stored_faithfully(running: RunningStack) -> None:
    """Valid bodies with oddities: the stored body is byte-for-byte what was sent; the Kafka key is the uid the
    processors store (the collector and the processors read a duplicated key the same way: the last wins)."""
    first, last = cli_uid("dup-first"), cli_uid("dup-last")
    dup = dumps({**CLI_SAMPLE, "uid": first})[:-1] + b',"uid":"' + last.encode() + b'"}'
    deep = dumps({**is_message(is_uid("deep-extra")), "future_field": _deep(150), "big": 10**40, "neg": -1.5e300})
    for body in (dup, deep):
        assert post(running, body).status_code == 202
    drain(running)
    rows = {r["uid"]: r["body"].encode() for r in running.sql("SELECT uid, body FROM snapshots_latest")}
    assert rows.get(last) == dup and first not in rows
    assert rows.get(is_uid("deep-extra")) == deep
    # the body is on the partition of the uid that wins (alone, keyed by it, or in that partition's batch)
    bodies = consume_bodies(f"127.0.0.1:{running.broker_port}", RAW_TOPIC, lambda bs: any(b.value == dup for b in bs))
    found = [b for b in bodies if b.value == dup]
    assert len(found) == 1
    assert found[0].partition == partition_of(last.encode(), topic_partitions(running.broker_port))
    assert found[0].key == last.encode()  # a batched body's key: the uid it was batched by


HOSTILE_STRINGS = [
    "EU'); DROP TABLE snapshots;--",
    '"\\\u0000',
    "\u0000",
    "🛰️📡 EU_868 🇪🇺",
    "\u202eRTL\u202c",
    "%s%n%x",
    "{days:Array(Date)}",
    "'; SELECT 1; --",
    "\\N",
    "NULL",
    "",
    " ",
    "\t\r\n",
    "a" * MAX_NAME_LENGTH,  # the longest plan ID a message may carry (a longer one is implausible)
    "ЕU_863_870",
    "EU_863_870\u200b",
    "$1",
    "?",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\ud7ff\ue000\uffff",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


def test_sql_looking_and_unicode_identifiers_round_trip_byte_for_byte(running: RunningStack) -> None:
    """Frequency-plan IDs, versions, OS, arch and Go version strings that look like SQL, carry NUL, quotes,
    backslashes or emoji are stored and read back from the views exactly; every table is still there."""
    drain(running)
    plans = {s: 1 for s in HOSTILE_STRINGS}
    before = {
        r["frequency_plan_id"]: r["gateways"]
        for r in running.sql(
            f"SELECT frequency_plan_id, gateways FROM gateways_by_frequency_plan_daily WHERE day = '{today()}'"
        )
    }
    sent: dict[str, dict[str, str]] = {}
    for i, s in enumerate(HOSTILE_STRINGS):
        uid = is_uid(f"hostile-{i}")
        os_ = {"operating_system": s, "arch": s[::-1], "binary_version": f"3.{i}.0 {s}", "golang_version": s}
        body = is_body(
            uid,
            os=os_,
            **{"entities_count.gateways.total": 1, "entities_count.gateways.gateways_by_frequency_plan_id": {s: 1}},
        )
        assert post(running, body).status_code == 202, s
        sent[uid] = os_
    # one deployment with every hostile plan id at once
    assert (
        post(
            running,
            is_body(
                is_uid("hostile-all"),
                **{
                    "entities_count.gateways.total": len(plans),
                    "entities_count.gateways.gateways_by_frequency_plan_id": plans,
                },
            ),
        ).status_code
        == 202
    )
    drain(running)
    got = {
        r["frequency_plan_id"]: r["gateways"]
        for r in running.sql(
            f"SELECT frequency_plan_id, gateways FROM gateways_by_frequency_plan_daily WHERE day = '{today()}'"
        )
    }
    for s in HOSTILE_STRINGS:
        assert got.get(s, 0) - before.get(s, 0) == 2, repr(s)  # its own deployment + hostile-all
    rows = {
        r["uid"]: r
        for r in running.sql(
            "SELECT uid, operating_system, arch, binary_version, golang_version, version_major_minor "
            "FROM snapshots_latest WHERE startsWith(binary_version, '3.')"
        )
    }
    for i, (uid, os_) in enumerate(sent.items()):
        row = rows[uid]
        assert {k: row[k] for k in os_} == {**os_, "golang_version": os_["golang_version"].strip()}
        assert row["version_major_minor"] == f"3.{i}"
    versions = {
        r["version"] for r in running.sql(f"SELECT version FROM deployments_by_version_daily WHERE day = '{today()}'")
    }
    assert {f"3.{i}" for i in range(len(HOSTILE_STRINGS))} <= versions
    oses = {
        r["operating_system"]
        for r in running.sql(f"SELECT operating_system FROM deployments_by_os_daily WHERE day = '{today()}'")
    }
    assert set(HOSTILE_STRINGS) <= oses
    tables = {
        r["table_name"]
        for r in running.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = currentDatabase()")
    }
    assert {"snapshots", "rejections", "daily_rollup", "fleet_daily"} <= tables
    assert_all_healthy(running)


def _messages() -> st.SearchStrategy[bytes]:
    """Telemetry-shaped JSON with hostile values in every slot (unique uid per body, set when posting)."""
    text = st.text(max_size=30) | st.sampled_from(HOSTILE_STRINGS)
    count = st.one_of(
        st.integers(0, 10**6),
        st.integers(LIMIT - 2, LIMIT + 2),
        st.integers(2**64 - 2, 2**64 + 2),
        st.integers(-(2**63), -1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=4),
        st.none(),
        st.booleans(),
        st.lists(st.integers(0, 3), max_size=2),
        st.just({}),
    )
    slots = [
        "gateways.total",
        "end_devices.total",
        "end_devices.activate_end_devices.total",
        "end_devices.activate_end_devices.last_day",
        "applications.total",
        "accounts.users.standard",
        "accounts.organizations.total",
        "accounts.users.total",
    ]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(["is", "is", "is", "cli", "both", "neither"]))
        m = is_message("") if kind != "cli" else orjson.loads(orjson.dumps(CLI_SAMPLE))
        if kind == "both":
            m["cli"] = {}
        if kind == "neither":
            m["entities_count"] = None
        if m.get("entities_count"):
            ec = m["entities_count"]
            for slot in draw(st.lists(st.sampled_from(slots), max_size=3, unique=True)):
                *parents, leaf = slot.split(".")
                node = ec
                for p in parents:
                    node = node[p]
                node[leaf] = draw(count)
            ec["gateways"]["gateways_by_frequency_plan_id"] = draw(st.dictionaries(text, count, max_size=4))
        if draw(st.booleans()):
            m["os"] = {k: draw(text) for k in ("operating_system", "arch", "binary_version", "golang_version")}
        if draw(st.booleans()):
            m[draw(text)] = draw(st.recursive(st.integers() | text, lambda x: st.lists(x, max_size=3), max_leaves=8))
        if kind == "cli" and draw(st.booleans()):
            m["cli"] = {"commands": draw(st.lists(text, max_size=3))}
        return m

    return build().map(lambda m: json.dumps(m, ensure_ascii=False).encode())  # type: ignore[no-any-return]


def test_generated_messages_are_stored_faithfully_or_rejected_with_their_reason(running: RunningStack) -> None:
    """Hypothesis-generated hostile messages through collector -> Kafka -> processors -> ClickHouse: every one
    is either stored byte-for-byte (its plan ids read back exactly) or counted under its reason."""
    drain(running)
    rejected_before = rejected_today(running)
    posted: list[tuple[str, bytes]] = []

    @hsettings(
        max_examples=80, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(_messages())
    def post_one(template: bytes) -> None:
        m = json.loads(template)
        n = len(posted)
        is_cli = m.get("cli") is not None and m.get("entities_count") is None
        uid = cli_uid(f"gen-{n}") if is_cli else is_uid(f"gen-{n}")
        m = {"uid": uid, **{k: v for k, v in m.items() if k != "uid"}}
        body = json.dumps(m, ensure_ascii=False).encode()
        r = post(running, body)
        assert r.status_code == 202, (r.status_code, r.text, body[:300])
        posted.append((uid, body))

    post_one()
    drain(running)
    outcomes = {uid: judge(body) for uid, body in posted}  # the independent oracle's verdicts
    expected_rejected = Counter(o.reason for o in outcomes.values() if isinstance(o, Rejected))
    assert rejected_today(running) - rejected_before == expected_rejected
    stored = {r["uid"]: r for r in running.sql("SELECT uid, body, gateways_by_frequency_plan FROM snapshots_latest")}
    for uid, body in posted:
        if isinstance(outcomes[uid], Rejected):
            assert uid not in stored
            continue
        assert stored[uid]["body"].encode() == body
        sent_plans = (
            (json.loads(body).get("entities_count") or {}).get("gateways", {}).get("gateways_by_frequency_plan_id", {})
        )
        assert stored[uid]["gateways_by_frequency_plan"] == sent_plans
    print(
        f"\n{len(posted)} generated messages: {len(posted) - sum(expected_rejected.values())} stored, "
        f"rejected {dict(expected_rejected)}"
    )
    assert_all_healthy(running)


# ----------------------------------------------------------------------------------------------- 6. poisoning


def test_one_uid_above_the_plausibility_limit_is_rejected_and_moves_nothing(running: RunningStack) -> None:
    drain(running)
    fleet, rejected = fleet_today(running), rejected_today(running)
    at_limit = is_uid("poison-at-limit")
    assert post(running, is_body(is_uid("poison-1"), **{"entities_count.gateways.total": LIMIT + 1})).status_code == 202
    assert post(running, is_body(is_uid("poison-2"), **{"entities_count.end_devices.total": 10**18})).status_code == 202
    assert (
        post(
            running,
            is_body(
                is_uid("poison-3"), **{"entities_count.gateways.gateways_by_frequency_plan_id": {"EU_863_870": 2**63}}
            ),
        ).status_code
        == 202
    )
    assert post(running, is_body(at_limit, **{"entities_count.applications.total": LIMIT})).status_code == 202
    drain(running)
    assert rejected_today(running) - rejected == Counter(implausible=3)
    after = fleet_today(running)
    assert after["deployments"] == fleet["deployments"] + 1  # only the one at the limit counts
    assert after["applications"] == fleet["applications"] + LIMIT
    assert after["gateways"] == fleet["gateways"] + 3 and after["end_devices"] == fleet["end_devices"] + 120


def test_a_uid_resending_1000_times_in_a_day_counts_once(running: RunningStack) -> None:
    drain(running)
    fleet = fleet_today(running)
    dups = metrics(running.api_url + "/metrics").get("is_telemetry_processor_duplicates_total", 0.0)
    uid = is_uid("resender")
    same = is_body(uid, **{"entities_count.gateways.total": 50})
    last = is_body(uid, **{"entities_count.gateways.total": 7})
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=8)) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: client.post(running.collector_url, content=same, headers=HEADERS).status_code, range(999)
            )
        )
        assert statuses == [202] * 999
        assert client.post(running.collector_url, content=last, headers=HEADERS).status_code == 202  # after all others
    drain(running)
    after = fleet_today(running)
    assert after["deployments"] == fleet["deployments"] + 1
    assert after["gateways"] == fleet["gateways"] + 7  # the latest body counts, once
    assert metrics(running.api_url + "/metrics")["is_telemetry_processor_duplicates_total"] - dups == 998
    (row,) = running.sql(f"SELECT body FROM snapshots_latest WHERE uid = '{uid}'")
    assert row["body"].encode() == last


def test_many_uids_from_one_client_are_limited_per_client(running: RunningStack) -> None:
    """One client inventing UIDs adds at most collector.max_new_uids_per_client_per_day (200) deployments a day; the
    rest are answered alike, stored and rejected as `rate_limited` (tests/test_client_limits.py has the details). It
    is a client of its own behind the trusted proxy 127.0.0.1 (all of loopback is one client, whose budget the
    module's other tests use). In production the compose proxy also limits requests and connections per client
    address."""
    limit = load_settings().collector.max_new_uids_per_client_per_day
    drain(running)
    fleet, rejected = fleet_today(running), rejected_today(running)
    with httpx.Client(timeout=30, headers={"x-forwarded-for": "192.0.2.3"}) as client:
        for i in range(limit + 100):
            r = client.post(running.collector_url, content=is_body(is_uid(f"sybil-{i}")), headers=HEADERS)
            assert r.status_code == 202  # never 429 here: the answer teaches nothing
    drain(running)
    assert fleet_today(running)["deployments"] == fleet["deployments"] + limit
    assert rejected_today(running) - rejected == Counter(rate_limited=100)
    proxy = (ROOT / "compose/nginx/templates/default.conf.template").read_text()
    assert re.search(r"limit_req_zone \$binary_remote_addr zone=collect_per_client", proxy)
    assert re.search(r"limit_conn_zone \$binary_remote_addr zone=collect_conn_per_client", proxy)
    m = re.search(r"location = /collect \{(.*?)\n    \}", proxy, re.S)
    assert m, "no location = /collect block in the proxy template"
    collect = m.group(1)
    assert "limit_req zone=collect_per_client" in collect and "limit_conn collect_conn_per_client" in collect
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in collect  # overwritten, never a client's own
    assert "client_max_body_size ${COLLECTOR_BODY_LIMIT}" in proxy and "limit_req_status 429" in proxy
    compose = (ROOT / "compose/compose.yaml").read_text()
    assert "COLLECTOR_BODY_LIMIT: ${COLLECTOR_BODY_LIMIT:-64k}" in compose
    assert re.search(r"COLLECTOR_RATE_LIMIT: \$\{COLLECTOR_RATE_LIMIT:-\d+r/m\}", compose)
    assert load_settings().collector.max_body_bytes == 64 * 1024  # the collector's own limit is the same


def test_slow_uploads_time_out_without_blocking_others(running: RunningStack) -> None:
    """50 clients trickle a body a byte at a time and 50 trickle their headers, from the moment the stack is up,
    while every other test of this module runs against the same collector (they are the "others": they all
    pass with ordinary timeouts). The body tricklers get 408 after 30 s (the collector's body timeout); the
    header tricklers are cut off with 408 after the header timeout (collector.header_timeout_s, 10 s)."""
    t = TRICKLERS[running.broker_port]
    deadline = t.started + 45
    while len(t.answers) < len(t.body_socks):
        assert time.monotonic() < deadline, f"only {len(t.answers)} of {len(t.body_socks)} slow bodies answered"
        time.sleep(0.5)
    answered_after = max(t.answered_at.values()) - t.started
    latencies = []
    with httpx.Client(timeout=10) as client:
        for i in range(50):
            t0 = time.perf_counter()
            r = client.post(running.collector_url, content=is_body(is_uid(f"fast-{i}")), headers=HEADERS)
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 202
    statuses = Counter(a.split(b" ")[1] if a.startswith(b"HTTP/1.1 ") else a[:40] for a in t.answers.values())
    assert statuses == {b"408": len(t.body_socks)}, statuses
    assert all(b"request_timeout" in a for a in t.answers.values())
    assert 29 <= min(t.answered_at.values()) - t.started and answered_after < 40
    assert t.sent_head_lines > 20  # they really trickled
    assert len(t.closed_heads) == len(t.head_socks), "header tricklers still connected: no header timeout"
    latencies.sort()
    print(
        f"\nslow uploads: 50 bodies answered 408 after {answered_after:.0f}s; {t.requests_meanwhile(running)} other "
        f"requests served meanwhile; now p50 {latencies[25] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
        f"header tricklers cut off: {len(t.closed_heads)} of {len(t.head_socks)}"
    )
    assert latencies[-1] < 2.0
    assert_all_healthy(running)


def test_a_day_with_only_rejected_messages_does_not_stall_the_worker(running: RunningStack) -> None:
    """A day whose records are all rejected (no snapshot that day): its day row is still computed and the worker
    goes on. (Found here: the sink built a day row of the wrong width for such a day, the insert failed and was
    retried forever: the whole pipeline stalled at the first malformed message of a quiet day.)"""
    from core.kafka import headers as record_headers
    from core.kafka import make_producer

    day = datetime(2001, 2, 3, 12, tzinfo=UTC)
    received = int(day.timestamp() * 1000)
    producer = make_producer(f"127.0.0.1:{running.broker_port}", enable_idempotence=False)
    try:
        producer.send(
            RAW_TOPIC, value=b'{"uid":', timestamp_ms=received, headers=record_headers(received, "test", "test", 7)
        ).get(10)
        DIRECT_RECORDS[running.broker_port] += 1
    finally:
        producer.close(5)
    assert post(running, is_body(is_uid("after-a-rejected-day"))).status_code == 202
    drain(running, timeout_s=30)
    assert running.sql("SELECT reason, messages FROM rejected_daily WHERE day = '2001-02-03'") == [
        {"reason": "not_json", "messages": 1}
    ]
    assert running.sql(f"SELECT count() AS n FROM snapshots_latest WHERE uid = '{is_uid('after-a-rejected-day')}'") == [
        {"n": 1}
    ]


# --------------------------------------------------------------------------------------------------- 7. soak


@pytest.mark.slow
def test_soak_collector_briefly_flat_memory_and_nothing_lost() -> None:
    """bench/soak_collector.py for 20 s: 200 concurrent clients with connection churn and 2% bad bodies."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak_collector",
            "--seconds",
            "20",
            "--clients",
            "200",
            "--sample-every",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(
        f"\nsoak 20 s: {out['requests']} requests ({out['requests_per_s']}/s), RSS first/last/max "
        f"{out['rss_first_mb']}/{out['rss_last_mb']}/{out['rss_max_mb']} MB, lost {out['lost']}, "
        f"duplicated {out['duplicated']}"
    )
    assert out["collector_alive"]
    assert out["lost"] == 0 and out["duplicated"] == 0
    assert out["accepted"] > 2000 and out["records_in_topic"] >= out["accepted"]
    assert set(out["statuses"]) <= {"202", "400"}, out["statuses"]
    assert out["rss_samples"] >= 8
    assert out["rss_last_mb"] - out["rss_first_mb"] < 10, out["rss_series_mb"]
    assert out["rss_max_mb"] < 200, out["rss_series_mb"]


def test_worker_whose_broker_is_gone_still_stops_on_sigterm_within_its_bound(tmp_path: Path) -> None:
    """faust waits for a broker that is gone for ever when it stops; the worker ends anyway, processors.stop_timeout_s
    after SIGTERM, saying why (nothing is lost: what was not stored was not committed)."""
    from tests.processes import worker as worker_proc

    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log").start()
    try:
        ensure_topics(load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers}))
        os.environ["IS_TELEMETRY_PROCESSORS__STOP_TIMEOUT_S"] = "5"
        try:
            w = worker_proc(broker.bootstrap_servers, tmp_path)
        finally:
            del os.environ["IS_TELEMETRY_PROCESSORS__STOP_TIMEOUT_S"]
        wait_until_ready(w)
        wait_for(lambda: "[^Worker]: Ready" in w.log_path.read_text(errors="replace"), 60, w)
        time.sleep(3)  # in its consumer group, fetching: where faust's stop waits on the broker
    finally:
        broker.stop()
    try:
        time.sleep(1)
        assert w.process is not None
        started = time.monotonic()
        w.process.send_signal(signal.SIGTERM)
        code = w.process.wait(60)  # without the bound: still waiting after 60 s
        took = time.monotonic() - started
        assert took < 5 + 20, took  # the bound plus a shared machine's slack
        assert code == 1
        assert "did not stop within 5s of the signal (is Kafka reachable?)" in w.log_path.read_text(errors="replace")
    finally:
        if w.alive():
            w.kill9()


DURING = 2000


@pytest.mark.slow
def test_clickhouse_refusing_writes_pauses_rewinds_and_stops_in_bounded_time(tmp_path: Path) -> None:
    """ClickHouse refuses writes (chDB's table directories immutable) for longer than clickhouse.retry_s: the
    worker pauses and rewinds the partitions instead of retrying for ever, commits nothing, stores everything once
    the fault is gone, and a SIGTERM during the fault ends it within the bound (no SIGKILL needed)."""
    from kafka import KafkaProducer

    from core.config import load_settings
    from core.kafka import ensure_topics
    from is_telemetry.broker import EmbeddedBroker
    from is_telemetry.broker import free_port as port
    from tests.processes import worker as worker_proc

    if not chattr_works(tmp_path):
        pytest.skip("chattr +i does not stop writes here (not root, or not ext4)")
    with EmbeddedBroker(port=port(), log_file=tmp_path / "broker.log") as broker:
        ensure_topics(load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers}))
        os.environ["IS_TELEMETRY_CLICKHOUSE__RETRY_S"] = "3"
        try:
            w = worker_proc(broker.bootstrap_servers, tmp_path)
        finally:
            del os.environ["IS_TELEMETRY_CLICKHOUSE__RETRY_S"]
        frozen: list[str] = []
        try:
            wait_until_ready(w)
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=False)
            first = [cli_uid(f"before-{i}") for i in range(3)]
            for uid in first:
                producer.send(
                    RAW_TOPIC,
                    key=uid.encode(),
                    value=cli_body(uid),
                    headers=[("received_at_ms", str(int(time.time() * 1000)).encode())],
                )
            producer.flush()
            wait_for(lambda: w.sql("SELECT count() AS n FROM snapshots")[0]["n"] == 3, 60, w)
            frozen = _table_dirs(tmp_path / "chdb")
            subprocess.run(["chattr", "+i", *frozen], check=True)
            # enough that the stream may still hold fetched, unstored records when it stops: none may be committed
            # (with acks turned back on at the agent's stop, 228 of 2,000 were lost in one run of three)
            during = [cli_uid(f"during-{i}") for i in range(DURING)]
            for uid in during:
                producer.send(
                    RAW_TOPIC,
                    key=uid.encode(),
                    value=cli_body(uid),
                    headers=[("received_at_ms", str(int(time.time() * 1000)).encode())],
                )
            producer.flush()
            wait_for(lambda: "pausing partitions" in w.log() and "rewinding" in w.log(), 60, w)
            assert w.metric("is_telemetry_sink_rewinds_total") >= 1
            wait_for(lambda: "resuming partitions" in w.log(), 120, w)  # and it tries again, by itself
            assert w.sql("SELECT count() AS n FROM snapshots")[0]["n"] == 3  # nothing stored meanwhile ...
            # ... and a stop during the fault ends within the bound: retry_s for the write in flight, plus faust
            started = time.monotonic()
            assert w.terminate(timeout_s=60) == 0
            stop_s = time.monotonic() - started
            subprocess.run(["chattr", "-i", *frozen], check=True)
            frozen = []
            w.start()  # the records it did not store are delivered again
            wait_until_ready(w)
            wait_for(lambda: w.sql("SELECT count() AS n FROM snapshots")[0]["n"] == 3 + DURING, 120, w)
            assert w.sql("SELECT sum(cli_installs) AS n FROM fleet_daily")[0]["n"] == 3 + DURING
            print(f"\nstopped in {stop_s:.1f}s during the fault")
        finally:
            if frozen:
                subprocess.run(["chattr", "-i", *frozen])
            w.terminate()


def wait_for(predicate: Any, timeout_s: float, proc: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the API may not answer yet
            pass
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.5)

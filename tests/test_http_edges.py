"""Both HTTP edges (the collector and the API, real processes on 127.0.0.1) against requests whose body never ends.

The attack of issue 22: connections that announce a body and trickle a byte now and then (`GET /healthz` with
`Content-Length: 1000000`, a POST refused with 415 without its body being read, a POST whose body the application
does read) were never evicted and no deadline applied, so a few hundred of them made every new request get 503.
Here each server runs with a short request deadline and a connection cap of 64 (set through the environment, as an
operator would), and the tests check that
- every such request is cut off within the deadline (408, or closed after its answer), on every route;
- more tricklers than the cap cannot make a new normal request fail while they hold on;
- normal clients see no change: keep-alive requests one after another, and a slow but steady upload that ends
  within the deadline.
"""

from __future__ import annotations

import itertools
import os
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import orjson
import pytest

from core.kafka import ensure_topics
from is_telemetry.broker import EmbeddedBroker, free_port
from is_telemetry.runtime import stop_process
from tests.collector_harness import CollectorProcess, collector_settings, new_topic
from tests.samples import SAMPLES

pytestmark = pytest.mark.integration


REQUEST_TIMEOUT_S = 4.0
HEADER_TIMEOUT_S = 2.0
CAP = 64
EDGE: dict[str, Any] = {
    "REQUEST_TIMEOUT_S": REQUEST_TIMEOUT_S,
    "HEADER_TIMEOUT_S": HEADER_TIMEOUT_S,
    "MAX_CONNECTIONS": CAP,
}
SLACK_S = 4.0  # a cut-off may come this much after the deadline (a loaded 2-core machine), never more
TRICKLE_EVERY_S = 0.5
ANNOUNCED = 1_000_000  # the Content-Length of a body that never comes
READ_ANNOUNCED = 60_000  # below both servers' body limits (64 KiB), so the application reads it
JSON = "application/json"


def head(method: str, path: str, length: int, content_type: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Edge:
    """One server under test: where it listens, its log, and the route that reads a body."""

    name: str
    port: int
    log: Path
    body_path: str  # /collect or /api/sql
    body: bytes  # a body that route answers normally ...
    status: int  # ... with this status
    pid: int  # the server's process, to read its memory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tricklers(self) -> dict[str, tuple[bytes, bytes]]:
        """kind -> (request line and headers announcing a body, the status line it is answered with)."""
        return {
            "healthz": (head("GET", "/healthz", ANNOUNCED), b"HTTP/1.1 200"),
            "refused-415": (head("POST", self.body_path, ANNOUNCED, "text/plain"), b"HTTP/1.1 415"),
            "unknown-path": (head("POST", "/nowhere", ANNOUNCED, JSON), b"HTTP/1.1 404"),
            "read-by-the-app": (head("POST", self.body_path, READ_ANNOUNCED, JSON), b"HTTP/1.1 408"),
        }

    def normal(self) -> int:
        """A new client's normal request: its status."""
        r = httpx.post(self.url + self.body_path, content=self.body, headers={"content-type": JSON}, timeout=30)
        return r.status_code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


KINDS = ["healthz", "refused-415", "unknown-path", "read-by-the-app"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _padded_query() -> bytes:
    """SELECT 1 as a body of about 2 KB (JSON allows the whitespace), so that a steady upload of it takes time."""
    return b'{"query": "SELECT 1"' + b" " * 2000 + b"}"


@pytest.fixture(scope="module", params=["api", "collector"])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp(f"edge-{request.param}")
    if request.param == "collector":
        broker = EmbeddedBroker(port=free_port()).start()
        try:
            topic = new_topic("edges")
            ensure_topics(collector_settings(broker.bootstrap_servers, topic))
            # every test client is on loopback, one client to the per-client budgets: these tests are about
            # connections, so its budgets are out of the way (tests/test_client_limits.py tests them)
            budgets = {"CLIENT_REQUEST_BURST": 10**9, "CLIENT_BODY_BYTES_BURST": 10**12}
            c = CollectorProcess(broker.bootstrap_servers, topic, tmp, **EDGE, **budgets)
            try:
                yield Edge("collector", c.address[1], c.log, "/collect", SAMPLES["is-3.32.json"], 202, c.proc.pid)
            finally:
                c.stop()
        finally:
            broker.stop()
        return
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IS_TELEMETRY_")}
    env.update({f"IS_TELEMETRY_API__{k}": str(v) for k, v in EDGE.items()})
    log = tmp / "api.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "is_telemetry", "api", "--host", "127.0.0.1", "--port", str(port)]
            + ["--clickhouse", f"chdb://{tmp / 'chdb'}"],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        yield Edge("api", port, log, "/api/sql", _padded_query(), 200, proc.pid)
    finally:
        stop_process(proc, 30, kill_group=True)


# ------------------------------------------------------------------------------------------------ helpers


@dataclass
class Trickled:
    answer: bytes  # what the server sent
    closed: bool  # whether it closed the connection within the budget
    seconds: float  # from the request's first byte to the close (or to the end of the budget)


def trickle(port: int, request_head: bytes, budget_s: float) -> Trickled:
    """Send a request's line and headers, then one byte of its body every TRICKLE_EVERY_S until the server closes
    the connection or `budget_s` has passed."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(request_head)
        s.settimeout(TRICKLE_EVERY_S)
        while time.monotonic() - started < budget_s:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                try:
                    s.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    return Trickled(answer, True, time.monotonic() - started)
                continue
            except ConnectionResetError:
                return Trickled(answer, True, time.monotonic() - started)
            if not chunk:
                return Trickled(answer, True, time.monotonic() - started)
            answer += chunk
    return Trickled(answer, False, time.monotonic() - started)


class Background:
    """A siege's thread: `_run` until the `with` block ends (`_stop` set), then joined. Subclasses are dataclasses
    with the fields `_stop` (an Event) and `_thread`."""

    _stop: threading.Event
    _thread: threading.Thread | None

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        assert not self._thread.is_alive()


@dataclass
class Siege(Background):
    """`count` connections that each announce a body and send one byte of it every TRICKLE_EVERY_S, like the
    observed attack; one that is answered or closed is replaced (at most `per_tick` new ones every 0.1 s)."""

    port: int
    heads: list[bytes]
    count: int
    per_tick: int = 8
    outcomes: Counter[str] = field(default_factory=Counter)  # how the server ended tricklers: status line or "closed"
    opened: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        kinds = itertools.cycle(self.heads)
        sel = selectors.DefaultSelector()
        open_socks: set[socket.socket] = set()
        last_trickle = last_open = time.monotonic()

        def end(s: socket.socket, outcome: str) -> None:
            self.outcomes[outcome] += 1
            sel.unregister(s)
            open_socks.discard(s)
            s.close()

        try:
            while not self._stop.is_set():
                opening = 0
                if time.monotonic() - last_open >= 0.1:
                    last_open, opening = time.monotonic(), min(self.per_tick, self.count - len(open_socks))
                for _ in range(opening):
                    try:
                        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                        s.sendall(next(kinds))
                    except OSError:
                        self.outcomes["connect failed"] += 1
                        break
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ)
                    open_socks.add(s)
                    self.opened += 1
                for key, _ in sel.select(0.1):
                    s = key.fileobj  # type: ignore[assignment]
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    end(s, outcome_of(data))
                if time.monotonic() - last_trickle >= TRICKLE_EVERY_S:
                    last_trickle = last_open = time.monotonic()
                    for s in list(open_socks):
                        try:
                            s.send(b" ")
                        except OSError:
                            end(s, "closed")
        finally:
            for s in list(open_socks):
                s.close()
            sel.close()

    def wait_full(self, timeout_s: float = 30) -> None:
        """Until `count` tricklers have been opened and have held on for a few trickles."""
        deadline = time.monotonic() + timeout_s
        while self.opened < self.count:
            assert time.monotonic() < deadline, f"only {self.opened} tricklers opened: {self.outcomes}"
            time.sleep(0.1)
        time.sleep(4 * TRICKLE_EVERY_S)


def outcome_of(answer: bytes) -> str:
    """How a trickler was ended: "closed", or the status line, marked when it was closed to make room."""
    if not answer:
        return "closed"
    status = answer[:12].decode(errors="replace")
    return status + " to make room" if b"make room" in answer else status


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response (head, body) from a kept-alive connection; the body by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    response_head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in response_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "closed in the middle of a response"
        rest += chunk
    assert len(rest) == length, "more than one response arrived"
    return response_head, rest


# ------------------------------------------------------------------------------- 1. cut off within the deadline


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickled_body_is_cut_off_within_the_deadline(edge: Edge, kind: str) -> None:
    request_head, status_line = edge.tricklers()[kind]
    t = trickle(edge.port, request_head, REQUEST_TIMEOUT_S + SLACK_S)
    assert t.closed, f"{edge.name} {kind}: still connected after {t.seconds:.1f}s, answered {t.answer[:120]!r}"
    assert t.answer.startswith(status_line), (edge.name, kind, t.answer[:300])
    if status_line.endswith(b"408"):
        assert b"request_timeout" in t.answer and b"connection: close" in t.answer.lower(), t.answer[:300]
    print(f"{edge.name} {kind}: {t.answer[:12].decode()} and closed after {t.seconds:.1f}s")


# ------------------------------------------------------------------- 2. more tricklers than the connection cap


@pytest.mark.parametrize("kinds", [KINDS, ["read-by-the-app"]], ids=["every-kind", "read-by-the-app"])
def test_tricklers_beyond_the_cap_cannot_lock_out_new_requests(edge: Edge, kinds: list[str]) -> None:
    tricklers = edge.tricklers()
    steady: list[int | str] = []
    with Siege(edge.port, [tricklers[k][0] for k in kinds], count=CAP + CAP // 2) as siege:
        siege.wait_full()
        upload = threading.Thread(target=lambda: steady.append(steady_upload(edge, REQUEST_TIMEOUT_S / 2)))
        upload.start()
        answers = [(what, status_of(what, edge)) for _ in range(10) for what in ("healthz", "normal")]
        upload.join()
        outcomes = dict(siege.outcomes)
    assert answers == [("healthz", 200), ("normal", edge.status)] * 10, (answers, outcomes)
    assert steady == [edge.status], (steady, outcomes)
    if kinds == ["read-by-the-app"]:  # these tricklers' bodies were being read: the slowest made room
        assert outcomes.get("HTTP/1.1 408 to make room", 0) > 0, outcomes
    log = edge.log_text()
    assert f"connection limit {CAP} reached" in log, "the tricklers never filled the server"
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]
    print(f"{edge.name} {'+'.join(kinds)}: {len(answers)} normal answers; tricklers ended: {outcomes}")


def status_of(what: str, edge: Edge) -> int | str:
    try:
        return httpx.get(edge.url + "/healthz", timeout=30).status_code if what == "healthz" else edge.normal()
    except httpx.HTTPError as exc:
        return type(exc).__name__


# ---------------------------------------------------------------------------------- 3. normal clients unchanged


def steady_upload(edge: Edge, over_s: float) -> int | str:
    """The route's normal body sent in 20 equal parts spread over `over_s`: its status (or what went wrong)."""
    body = edge.body
    parts = [body[i * len(body) // 20 : (i + 1) * len(body) // 20] for i in range(20)]
    try:
        with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
            s.sendall(head("POST", edge.body_path, len(body), JSON))
            for part in parts:
                time.sleep(over_s / 20)
                s.sendall(part)
            response_head, _ = read_response(s)
    except (OSError, AssertionError) as exc:
        return repr(exc)
    return int(response_head[9:12])


def test_a_slow_but_steady_upload_within_the_deadline_succeeds(edge: Edge) -> None:
    assert steady_upload(edge, REQUEST_TIMEOUT_S / 2) == edge.status


def test_keep_alive_requests_one_after_another(edge: Edge) -> None:
    requests = [
        (head("GET", "/healthz", 0), 200),
        (head("POST", edge.body_path, len(edge.body), JSON) + edge.body, edge.status),
        (head("GET", "/healthz", 5) + b"hello", 200),  # a body the route does not read, sent in full
        (head("POST", edge.body_path, len(edge.body), JSON) + edge.body, edge.status),
        (head("POST", edge.body_path, 11, "text/plain") + b"not json!!!", 415),
        (head("GET", "/healthz", 0), 200),
    ]
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
        for request, status in requests:
            s.sendall(request)
            response_head, _ = read_response(s)
            assert response_head.startswith(b"HTTP/1.1 %d" % status), (request[:60], response_head)
            assert b"connection: close" not in response_head.lower(), response_head
        # and they came back on that one connection, which is still open
        s.sendall(head("GET", "/healthz", 0))
        assert orjson.loads(read_response(s)[1]) == {"status": "ok"}


# ------------------------------------------------------------ 4. pipelining, trailers and transfer codings (issue 24)

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
GROWTH_MB = 50  # what one attack may add to the server's memory, at most
FLOOD_BUDGET_S = 60  # how long a flooder keeps trying before the test gives up on the server closing it
MAX_HEADER_BYTES = 16 * 1024  # both servers' default


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def tcp_queues(port: int) -> list[str]:
    """Both ends of the loopback connections using `port`: local:remote port, send and receive queue (bytes), from
    /proc/net/tcp, to tell, when a test fails, whether a server stopped reading a connection or never had it."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if port in (local, remote):
            tx, rx = (int(q, 16) for q in fields[4].split(":"))
            rows.append(f"{local}->{remote} state {fields[3]} send-q {tx} recv-q {rx}")
    return rows


@dataclass
class Flooder:
    """One connection writing `GET /healthz` requests back to back and never reading an answer (finding 1 of the
    outside test: one of these took the collector from 69 MB to 2,163 MB in 20 s). It stops when the server closes
    the connection, when `stop` is set, or after FLOOD_BUDGET_S."""

    port: int
    stop: threading.Event
    sent: int = 0
    closed_after_s: float | None = None  # when the server closed the connection, from the first request
    local_port: int = 0
    queues: list[str] = field(default_factory=list)  # the connection's queues when the budget ran out
    _thread: threading.Thread | None = None

    def start(self) -> Flooder:
        self._thread = threading.Thread(target=self._run, name="flooder", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(FLOOD_BUDGET_S + 30)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        requests = HEALTHZ * 1000
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # as the attack: answers pile up at the server
            s.connect(("127.0.0.1", self.port))
            self.local_port = s.getsockname()[1]
            s.settimeout(0.5)
            started = time.monotonic()
            while not self.stop.is_set() and time.monotonic() - started < FLOOD_BUDGET_S:
                try:
                    self.sent += s.send(requests)
                except TimeoutError:
                    continue  # the server is not reading: keep pushing, as an attacker would
                except OSError:  # reset or broken pipe: the server closed it
                    self.closed_after_s = time.monotonic() - started
                    return
            self.queues = tcp_queues(self.local_port)
            # the server may have closed its end already, its FIN queued behind the answers this client never reads
            # (it lingers for request_timeout_s, then aborts): closed all the same, though this end cannot see it
            if any(not row.startswith(f"{self.local_port}->") and " state 01 " not in row for row in self.queues):
                self.closed_after_s = time.monotonic() - started


def timed_normal(edge: Edge) -> tuple[int | str, float]:
    started = time.monotonic()
    status = status_of("normal", edge)
    return status, time.monotonic() - started


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@pytest.mark.parametrize("flooders", [1, 4])
def test_pipelined_requests_never_read_cannot_grow_the_server(edge: Edge, flooders: int) -> None:
    """Connections pipeline `GET /healthz` without reading: the server's memory stays within GROWTH_MB, normal
    clients are served meanwhile, and each flooder is closed once its answers have waited past the request
    deadline."""
    alone = [timed_normal(edge) for _ in range(10)]
    baseline = rss_mb(edge.pid)
    stop = threading.Event()
    flooding = [Flooder(edge.port, stop).start() for _ in range(flooders)]
    peak, during = baseline, []
    try:
        while any(f.running for f in flooding):
            peak = max(peak, rss_mb(edge.pid))
            if peak - baseline > GROWTH_MB:
                break  # failed: stop before the machine runs out of memory
            during.append(timed_normal(edge))
            time.sleep(0.1)
    finally:
        stop.set()
        for f in flooding:
            f.join()
    peak = max(peak, rss_mb(edge.pid))
    before, under = median([t for _, t in alone]), median([t for _, t in during] or [0.0])
    report = (
        f"{edge.name}, {flooders} flooders: RSS {baseline:.0f} -> peak {peak:.0f} MB; sent "
        f"{[round(f.sent / 1e6, 1) for f in flooding]} MB; closed after {[f.closed_after_s for f in flooding]} s; "
        f"a normal request alone {before:.3f} s, during the flood {under:.3f} s (median of {len(during)}), "
        f"slowest {max((t for _, t in during), default=0):.2f} s"
    )
    print(report)
    assert peak - baseline <= GROWTH_MB, report
    assert all(f.closed_after_s is not None for f in flooding), (report, [f.queues for f in flooding])
    assert {s for s, _ in alone + during} == {edge.status}, (alone, during)
    # not held up behind the flooders (before: 9 to 23 s with 4 of them; the outside test saw 0.4-1.8 s instead of
    # 16 ms with one); loose, for a loaded 2-core machine that also runs the flooders
    assert under <= 3 * before + 0.25, report
    log = edge.log_text()
    assert "Traceback" not in log and "unable to perform operation" not in log, log[-3000:]


BIG_ANSWER = b"GET /static/vendor/chart.umd.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # 210 KB from the API


@dataclass
class StalledSiege(Background):
    """`count` connections that each pipeline requests for a large answer and never read: their answers fill the
    server's buffers within a few requests. One that the server closes is replaced (at most 2 new ones every 0.1 s);
    each sends one more request every 0.5 s, which is how a close is noticed without reading."""

    port: int
    count: int
    opened: int = 0
    closed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        socks: list[socket.socket] = []
        last_push = time.monotonic()
        try:
            while not self._stop.is_set():
                for _ in range(min(2, self.count - len(socks))):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    try:
                        s.connect(("127.0.0.1", self.port))
                        s.sendall(BIG_ANSWER * 40)
                    except OSError:
                        s.close()
                        break
                    s.setblocking(False)
                    socks.append(s)
                    self.opened += 1
                time.sleep(0.1)
                if time.monotonic() - last_push >= 0.5:
                    last_push = time.monotonic()
                    for s in list(socks):
                        try:
                            s.send(BIG_ANSWER)
                        except BlockingIOError:
                            pass  # the server is not reading it: still held
                        except OSError:
                            socks.remove(s)
                            s.close()
                            self.closed += 1
        finally:
            for s in socks:
                s.close()


def test_connections_whose_answers_are_not_read_cannot_lock_out_new_requests(edge: Edge) -> None:
    """More connections than the cap, each with answers it does not read: a new client is still served (the
    connection whose answers have waited longest is closed to make room)."""
    if edge.name != "api":
        pytest.skip("only the API has an answer large enough to fill a connection's buffers in a few requests")
    with StalledSiege(edge.port, CAP + CAP // 2) as siege:
        deadline = time.monotonic() + 30
        while siege.opened < CAP + CAP // 2:
            assert time.monotonic() < deadline, f"only {siege.opened} connections opened"
            time.sleep(0.1)
        time.sleep(1)  # their answers fill the buffers
        answers = [(what, status_of(what, edge)) for _ in range(10) for what in ("healthz", "normal")]
        opened, closed = siege.opened, siege.closed
    assert answers == [("healthz", 200), ("normal", edge.status)] * 10, (answers, opened, closed)
    # (before: every one of them 503; which connections made room is logged, but the log is rate-limited)
    log = edge.log_text()
    assert "Traceback" not in log, log[-3000:]
    print(f"{edge.name}: {len(answers)} normal answers beside {opened} connections not reading ({closed} closed)")


def read_responses(s: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """`count` responses (head, body) from a connection, in the order they come; bodies by their Content-Length."""
    data, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(out)} responses: {data!r}"
            data += chunk
        response_head, data = data.split(b"\r\n\r\n", 1)
        length = next(
            (
                int(v)
                for n, _, v in (line.partition(b":") for line in response_head.split(b"\r\n")[1:])
                if n.strip().lower() == b"content-length"
            ),
            0,
        )
        while len(data) < length:
            chunk = s.recv(65536)
            assert chunk, "closed in the middle of a response"
            data += chunk
        out.append((response_head, data[:length]))
        data = data[length:]
    return out


def test_a_few_pipelined_requests_are_answered_in_order(edge: Edge) -> None:
    normal = head("POST", edge.body_path, len(edge.body), JSON) + edge.body
    requests = [
        (HEALTHZ, 200),
        (normal, edge.status),
        (head("POST", "/nowhere", 5, JSON) + b"hello", 404),
        (normal, edge.status),
        (head("POST", edge.body_path, 11, "text/plain") + b"not json!!!", 415),
        (HEALTHZ, 200),
    ]
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
        s.sendall(b"".join(r for r, _ in requests))  # all at once, then read
        answers = read_responses(s, len(requests))
        assert [int(h[9:12]) for h, _ in answers] == [status for _, status in requests], answers
        s.sendall(HEALTHZ)  # and the connection is still open
        assert orjson.loads(read_responses(s, 1)[0][1]) == {"status": "ok"}


def chunked_head(edge: Edge, transfer_encoding: str = "chunked") -> bytes:
    lines = [f"POST {edge.body_path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {JSON}"]
    lines.append(f"Transfer-Encoding: {transfer_encoding}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Endless:
    answer: bytes  # what the server sent
    sent: int  # bytes of the endless part that left the client
    peak_growth_mb: float


def send_endless(edge: Edge, start: bytes, unit: bytes, total: int) -> Endless:
    """Send `start`, then `unit` over and over up to `total` bytes, until the server answers or closes; then the
    server's answer. The server's memory is sampled meanwhile."""
    baseline = peak = rss_mb(edge.pid)
    block = unit * max(1, 800_000 // len(unit))
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        s.sendall(start)
        s.settimeout(2)
        try:
            while sent < total:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    break
                sent += s.send(block)
                peak = max(peak, rss_mb(edge.pid))
            else:
                s.sendall(b"\r\n")  # the end of the section: a server that took it all answers now
            while chunk := s.recv(65536):
                answer += chunk
        except OSError:  # reset or broken pipe: closed
            pass
    return Endless(answer, sent, max(peak, rss_mb(edge.pid)) - baseline)


ENDLESS = 100_000_000


def test_trailers_beyond_the_header_limit_are_refused(edge: Edge) -> None:
    """A chunked request whose trailer section never ends (finding 2: 1 GB of them was accepted and answered 202)."""
    body = edge.body
    start = chunked_head(edge) + b"%x\r\n" % len(body) + body + b"\r\n0\r\n"
    e = send_endless(edge, start, b"X-Trailer: " + b"a" * 8000 + b"\r\n", ENDLESS)
    print(f"{edge.name}: {e.sent / 1e6:.1f} MB of trailers sent; answer {e.answer[:12]!r}; +{e.peak_growth_mb:.0f} MB")
    assert e.answer == b"" or e.answer.startswith(b"HTTP/1.1 431"), e.answer[:300]
    assert e.sent < ENDLESS // 10, f"{e.sent} bytes of trailers taken; answer {e.answer[:300]!r}"
    assert e.peak_growth_mb < GROWTH_MB


def test_a_chunk_extension_beyond_the_header_limit_is_refused(edge: Edge) -> None:
    """A chunk-size line whose extension never ends (finding 13: 300 MB were streamed through and answered 202)."""
    e = send_endless(edge, chunked_head(edge) + b"b;ext=", b"a" * 8000, ENDLESS)
    print(f"{edge.name}: {e.sent / 1e6:.1f} MB of chunk extension sent; answer {e.answer[:12]!r}")
    assert e.answer == b"" or e.answer.startswith(b"HTTP/1.1 431"), e.answer[:300]
    assert e.sent < ENDLESS // 10, f"{e.sent} bytes of chunk extension taken; answer {e.answer[:300]!r}"


def test_normal_chunked_requests_are_unchanged(edge: Edge) -> None:
    """Chunked bodies still work: in one chunk, in 1-byte chunks, with short extensions and a few trailer fields."""
    body = edge.body
    one = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    tiny = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
    extended = b"%x;name=value\r\n" % len(body) + body + b"\r\n0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
        for framing in (one, tiny, extended):
            s.sendall(chunked_head(edge) + framing)
            response_head, _ = read_responses(s, 1)[0]
            assert response_head.startswith(b"HTTP/1.1 %d" % edge.status), (framing[:40], response_head)


def closed_answer(port: int, request: bytes) -> bytes:
    """Send `request`; the server's answer, which must end with the connection closed."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "coding", ["gzip, chunked", "chunked, chunked", "identity, chunked", "gzip", "xchunked", "chunked;q=1"]
)
def test_transfer_codings_other_than_chunked_are_refused(edge: Edge, coding: str) -> None:
    """Finding 13: `gzip, chunked` was taken as plain chunked (202), which a proxy may read differently."""
    body = edge.body
    request = chunked_head(edge, coding) + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    answer = closed_answer(edge.port, request)  # a timeout here: the connection was left open
    assert answer.startswith((b"HTTP/1.1 501", b"HTTP/1.1 400")), answer[:300]
    print(f"{edge.name} {coding!r}: {answer[:12].decode()}")


def test_chunked_in_any_case_is_accepted(edge: Edge) -> None:
    body = edge.body
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
        s.sendall(chunked_head(edge, "Chunked") + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        assert read_responses(s, 1)[0][0].startswith(b"HTTP/1.1 %d" % edge.status)


def test_no_redirect_to_the_host_a_client_names(edge: Edge) -> None:
    """The second outside attack's finding 7: `POST /api/forget/` with `Host: evil.example` answered 307 to
    http://evil.example/api/forget, and a client that follows redirects would re-send its UIDs, SQL or token there.
    No route redirects: a trailing slash is an unknown path."""
    for path in (edge.body_path + "/", "/healthz/"):
        r = httpx.post(edge.url + path, content=edge.body, headers={"Host": "evil.example"}, timeout=10)
        assert r.status_code not in (301, 302, 303, 307, 308), (path, r.status_code, r.headers)
        assert "evil.example" not in r.headers.get("location", ""), (path, r.headers)

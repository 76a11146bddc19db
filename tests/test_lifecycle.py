"""Nothing outlives `is-telemetry up` (issue 23), however it ends. One test per way, with real processes:

| way | how it is done here | broker | acknowledged bodies |
|---|---|---|---|
| Ctrl-C after the output went away (`make run \\| tee log`) | the pipe's reader closes it, then SIGINT | embedded | stored before the broker stops |
| the terminal closed | `up` on a pseudo-terminal (its controlling one), the master closed: SIGHUP, then EIO | embedded | stored before the broker stops |
| SIGTERM | SIGTERM | embedded | stored before the broker stops |
| kill -9 | SIGKILL: the children notice by themselves (their lifelines) | external | in ClickHouse after the next `up` |
| the OOM killer | SIGKILL (what it sends) | embedded | stored before the broker stops |

After each: every process `up` had started (found in /proc by parentage, compared by pid and start time) is gone
within a few seconds, its ports are free, and the bodies the collector answered 202 for are in ClickHouse. The
bodies are posted right before the end, on a fresh stack, before the worker has joined its group: a stop that
does not wait for the worker to store them loses them with the embedded broker's memory.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import pty
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import orjson
import pytest

from is_telemetry.broker import EmbeddedBroker, free_ports, port_open
from tests.samples import SAMPLES

pytestmark = pytest.mark.integration


CLI = [sys.executable, "-m", "is_telemetry"]
BODIES = 40
GONE_WITHIN_S = 20.0  # a hard end: the collector stops, then the worker stores what is left and stops, then the broker


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    started: int
    cmdline: str


def proc_info(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return ProcInfo(pid, int(stat.rsplit(")", 1)[1].split()[19]), cmdline)


def descendants(root: int) -> list[ProcInfo]:
    """Every living descendant of `root` (by parent pid, read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid]
        found += kids
        frontier += kids
    return [info for p in found if (info := proc_info(p)) is not None]


def alive(p: ProcInfo) -> bool:
    """Still running: the same pid with the same start time, and not a zombie (exited, its entry not reaped)."""
    try:
        stat = Path(f"/proc/{p.pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[19]) == p.started


def assert_all_gone(procs: list[ProcInfo], within_s: float, log: str) -> float:
    """Every one of `procs` exits within `within_s`; returns how long that took."""
    started = time.monotonic()
    while True:
        left = [p for p in procs if alive(p)]
        if not left:
            return time.monotonic() - started
        if time.monotonic() - started > within_s:
            raise AssertionError(
                f"still running {within_s:g}s after `up` ended: "
                + "; ".join(f"{p.pid}: {p.cmdline[:160]}" for p in left)
                + f"\n{log[-3000:]}"
            )
        time.sleep(0.1)


def is_uid(tag: str) -> str:
    return base64.b64encode(hashlib.sha512(tag.encode()).digest()).decode()


def post_bodies(collector_url: str, tag: str, n: int = BODIES) -> list[str]:
    """n bodies with distinct UIDs, each answered 202; their UIDs."""
    sample = orjson.loads(SAMPLES["is-3.32.json"])
    uids = [is_uid(f"{tag}-{i}") for i in range(n)]
    with httpx.Client(timeout=10) as client:
        for uid in uids:
            r = client.post(
                collector_url,
                content=orjson.dumps({**sample, "uid": uid}),
                headers={"Content-Type": "application/json", "User-Agent": "TheThingsStack/3.32.1 (linux/amd64)"},
            )
            assert r.status_code == 202, r.text
    return uids


def stored(data_dir: Path, uids: list[str]) -> int:
    """How many of `uids` the data directory's chDB holds (read directly: no stack is running)."""
    listed = ", ".join(f"'{u}'" for u in uids)  # base64 UIDs made above: no quote can occur
    p = subprocess.run(
        [
            *CLI,
            "sql",
            "--data-dir",
            str(data_dir),
            "--format",
            "json",
            f"SELECT uniqExact(uid) AS n FROM snapshots WHERE uid IN ({listed})",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return int(orjson.loads(p.stdout)[0]["n"])


@dataclass
class Up:
    """A running `is-telemetry up` whose output goes to a file, a pipe or a terminal (copied to `log_path`)."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    ports: dict[str, int]
    log_path: Path
    reader: IO[bytes] | None = None  # our end of the pipe or terminal, while we read it
    copier: threading.Thread | None = None
    children: list[ProcInfo] = field(default_factory=list)

    @property
    def collector_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['collector']}/collect"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def go_away(self) -> None:
        """Our end of its output is closed (tee died; the terminal was closed)."""
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()

    def kill_all(self) -> None:
        """Clean-up after a failure: nothing the test started may outlive it."""
        for p in [*descendants(self.process.pid), *self.children]:
            if alive(p):
                os.kill(p.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.go_away()


def start_up(data_dir: Path, *extra: str, output: str = "file", embedded: bool = True, wait: bool = True) -> Up:
    """`up --no-simulate` on free ports; its output to a file, a pipe (`pipe`) or a pseudo-terminal (`terminal`,
    made its controlling terminal: closing our end hangs it up). `wait`: until it is ready (wait_ready)."""
    broker, collector, api = free_ports(3)
    ports = {"collector": collector, "api": api, **({"broker": broker} if embedded else {})}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"up-{time.monotonic_ns()}.log"
    args = [*CLI, "up", "--no-simulate", "--data-dir", str(data_dir), "--collector-port", str(collector)]
    args += ["--api-port", str(api), *(["--broker-port", str(broker)] if embedded else []), *extra]
    reader: IO[bytes] | None = None
    if output == "file":
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    elif output == "pipe":
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        reader = proc.stdout
    else:
        master, slave = pty.openpty()

        def controlling_terminal() -> None:  # runs in the child after setsid(): the terminal becomes its own
            fcntl.ioctl(1, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=controlling_terminal
        )
        os.close(slave)
        reader = os.fdopen(master, "rb", buffering=0)
    up = Up(proc, data_dir, ports, log_path, reader)
    if reader is not None:
        log_path.touch()

        def copy() -> None:
            with open(log_path, "ab", buffering=0) as out:
                while up.reader is not None:
                    try:
                        chunk = reader.read1(4096) if hasattr(reader, "read1") else reader.read(4096)
                    except (OSError, ValueError):  # closed by go_away(), or the terminal hung up
                        return
                    if not chunk:
                        return
                    out.write(chunk)

        up.copier = threading.Thread(target=copy, daemon=True)
        up.copier.start()
    if wait:
        wait_ready(up)
    return up


def wait_ready(up: Up, timeout_s: float = 60) -> None:
    """Until `up` says it is ready; then its children, as /proc shows them, are noted."""
    deadline = time.monotonic() + timeout_s
    while "Ctrl-C stops everything" not in up.log():
        if up.process.poll() is not None or time.monotonic() > deadline:
            up.kill_all()
            raise AssertionError(f"`up` did not start:\n{up.log()}")
        time.sleep(0.1)
    up.children = descendants(up.process.pid)


def check_children(up: Up, embedded: bool) -> None:
    """What `up` started, as /proc shows it: the worker, the collector and (embedded) the broker."""
    lines = [p.cmdline for p in up.children]
    assert any(" is_telemetry worker " in c for c in lines), lines
    assert any(" is_telemetry collect " in c for c in lines), lines
    assert any("tansu broker" in c for c in lines) == embedded, lines


def assert_ports_free(up: Up) -> None:
    taken = {name: port for name, port in up.ports.items() if port_open("127.0.0.1", port)}
    assert not taken, f"ports still in use: {taken}\n{up.log()[-3000:]}"


@pytest.fixture
def ended() -> Iterator[list[Up]]:
    """The stacks a test started: whatever is left of them is killed afterwards (a failed test leaves nothing)."""
    ups: list[Up] = []
    yield ups
    for up in ups:
        up.kill_all()


# -- the ways `up` ends gracefully: it stops its children in order, whatever its console does ----------------------


@pytest.mark.parametrize("way", ["ctrl-c, output gone", "terminal closed", "SIGTERM"])
def test_a_graceful_end_stops_everything_in_order_and_keeps_what_was_acknowledged(
    tmp_path: Path, ended: list[Up], way: str
) -> None:
    output = {"ctrl-c, output gone": "pipe", "terminal closed": "terminal", "SIGTERM": "file"}[way]
    up = start_up(tmp_path / "data", output=output)
    ended.append(up)
    check_children(up, embedded=True)
    uids = post_bodies(up.collector_url, way)
    if way == "SIGTERM":  # `status` and `simulate` find this stack (on ports of its own) through its data directory
        sim = subprocess.run(
            [
                *CLI,
                "simulate",
                "--data-dir",
                str(up.data_dir),
                "--deployments",
                "2",
                "--cli-installs",
                "0",
                "--days",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sim.returncode == 0 and f"kafka 127.0.0.1:{up.ports['broker']} " in sim.stderr, sim.stderr
        code, out = status(up.data_dir)
        assert code == 0 and "all healthy" in out, out
        assert f"up          OK     pid {up.process.pid} on {up.data_dir}" in out, out
        assert f"collector   OK     http://127.0.0.1:{up.ports['collector']}" in out, out
    if way == "ctrl-c, output gone":
        up.go_away()  # tee dies first (the same Ctrl-C)...
        up.process.send_signal(signal.SIGINT)  # ...then `up` is told to stop, and finds nobody reading its output
    elif way == "terminal closed":
        up.go_away()  # the kernel hangs the terminal up: SIGHUP, and every later write to it fails (EIO)
    else:
        up.process.send_signal(signal.SIGTERM)
    code = up.process.wait(60)
    assert_all_gone(up.children, 5, up.log())  # `up` waited for them
    assert code == 0, up.log()
    assert_ports_free(up)
    assert not (up.data_dir / "stack.json").exists()
    if output == "file":
        log = up.log()
        order = [log.index(f"stopping: {name}") for name in ("collector", "worker", "broker")]
        assert order == sorted(order), log
        assert log.rstrip().endswith("stopped"), log
        # off a terminal: plain progress lines (no control characters), never two blank lines in a row
        assert re.search(r"\nClickHouse: \d+ snapshots \(UID-days\), \d+ rejected, \d+ days\n", log), log
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", log) and "\n\n\n" not in log, repr(log)
    assert stored(up.data_dir, uids) == len(uids), up.log()


# -- the ways `up` dies at once: each child notices by itself and stops cleanly, in order ---------------------------


def test_kill_9_the_children_stop_by_themselves_and_the_next_up_stores_the_rest(
    tmp_path: Path, ended: list[Up]
) -> None:
    """External Kafka keeps what the collector acknowledged: the next `up` on the same data directory stores it."""
    (port,) = free_ports(1)
    with EmbeddedBroker("127.0.0.1", port, tmp_path / "kafka.log"):
        kafka = ["--kafka", f"127.0.0.1:{port}"]
        up = start_up(tmp_path / "data", *kafka, embedded=False)
        ended.append(up)
        check_children(up, embedded=False)
        uids = post_bodies(up.collector_url, "kill-9")
        up.process.kill()
        up.process.wait()
        took = assert_all_gone(up.children, GONE_WITHIN_S, up.log())
        assert_ports_free(up)
        assert (up.data_dir / "stack.json").exists()  # stale: its `up` is gone
        code, out = status(up.data_dir)
        assert code == 1 and f"names pid {up.process.pid}, which is not running: that `up` was killed" in out, out
        again = start_up(tmp_path / "data", *kafka, embedded=False)  # a stale stack.json does not stop it
        ended.append(again)
        deadline = time.monotonic() + 60
        while (n := _stored_through_api(again, uids)) < len(uids):
            assert time.monotonic() < deadline, f"{n} of {len(uids)} stored\n{again.log()}"
            time.sleep(0.5)
        again.process.send_signal(signal.SIGTERM)
        assert again.process.wait(60) == 0, again.log()
        assert_all_gone(again.children, 5, again.log())
    print(f"the children of a killed `up` were gone {took:.1f}s later")


def test_the_oom_killer_the_children_store_what_was_acknowledged_then_stop(tmp_path: Path, ended: list[Up]) -> None:
    """The OOM killer sends SIGKILL. With the embedded broker, the collector stops first, then the worker stores what
    the broker holds and stops, then the broker: nothing acknowledged is lost. The next `up`, started at once,
    recognises the stale stack.json and waits for the children still stopping (here the worker, held up with SIGSTOP
    until that `up` says it waits for it)."""
    up = start_up(tmp_path / "data")
    ended.append(up)
    check_children(up, embedded=True)
    uids = post_bodies(up.collector_url, "oom")
    worker = next(p for p in up.children if " is_telemetry worker " in p.cmdline)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        up.process.send_signal(signal.SIGKILL)
        up.process.wait()
        again = start_up(tmp_path / "data", wait=False)
        ended.append(again)
        deadline = time.monotonic() + 60
        while "waiting: the last `up` on" not in again.log():
            assert again.process.poll() is None and time.monotonic() < deadline, again.log()
            time.sleep(0.1)
        assert f"worker pid {worker.pid}" in again.log(), again.log()
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_ready(again)
    took = assert_all_gone(up.children, GONE_WITHIN_S, up.log())
    assert "they stopped after" in again.log(), again.log()
    assert _stored_through_api(again, uids) == len(uids), again.log()
    again.process.send_signal(signal.SIGTERM)
    assert again.process.wait(60) == 0, again.log()
    assert_all_gone(again.children, 5, again.log())
    print(f"the children of a killed `up` were gone {took:.1f}s after the worker went on")


def status(data_dir: Path) -> tuple[int, str]:
    p = subprocess.run(
        [*CLI, "status", "--data-dir", str(data_dir), "--timeout", "2"], capture_output=True, text=True, timeout=60
    )
    return p.returncode, p.stdout + p.stderr


def _stored_through_api(up: Up, uids: list[str]) -> int:
    from is_telemetry import apiclient

    listed = ", ".join(f"'{u}'" for u in uids)
    try:
        rows = apiclient.sql_rows(up.api_url, f"SELECT uniqExact(uid) AS n FROM snapshots WHERE uid IN ({listed})")
    except (apiclient.ApiError, httpx.HTTPError):
        return 0
    return int(rows[0]["n"])

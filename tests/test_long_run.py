"""An embedded stack that runs for weeks (issue 28), with real processes: one `is-telemetry up --no-simulate` for the
module, a steady load, and faults.

1. A worker killed with -9 consumes again seconds after `up` started it again (its dead group member is removed at
   once, the embedded session timeout is short); a worker that is up but consumes nothing is shown as such by the
   console and by `is-telemetry status`.
2. After a worker restart and a collector restart, a broker crash is reported with the exact number of bodies lost:
   from the loss ledger (durable facts), not from counters that started again at 0.
3. Under a steady load the broker moves through generations of the raw topic (a small broker.max_records here) and
   deletes the old ones: every body answered 202 is stored once, valid or rejected, none twice.

The bodies of each test carry a tag of their own in `os.operating_system` (a plain string the pipeline stores), so
each test counts its own rows; their UIDs are unique.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from core import ledger
from is_telemetry import apiclient
from tests.processes import chattr_works, wait_until
from tests.samples import SAMPLES
from tests.stack import RunningStack, start_stack

pytestmark = pytest.mark.integration


MAX_RECORDS = 700  # broker.max_records of the module's stack: test 3 posts several times as many
GROUP = "is-telemetry-processors"
SAMPLE = orjson.loads(SAMPLES["is-3.32.json"])
JSON = {"Content-Type": "application/json", "User-Agent": "TheThingsStack/3.32.1 (linux/amd64)"}


def uid(tag: str, n: int) -> str:
    return base64.b64encode(hashlib.sha512(f"{tag}:{n}".encode()).digest()).decode()


def body(tag: str, n: int, bad: bool = False) -> bytes:
    """An Identity Server's body with a UID of its own and `tag` as its OS; `bad`: a negative count (rejected)."""
    message = json.loads(json.dumps(SAMPLE))
    message["uid"] = uid(tag, n)
    message["os"]["operating_system"] = tag
    if bad:
        message["entities_count"]["applications"]["total"] = -1
    return orjson.dumps(message)


@dataclass
class Sent:
    n: int
    status: int | str
    at: float  # when it was answered (time.monotonic())
    bad: bool


class Poster(threading.Thread):
    """Posts bodies tagged `tag` at about `rate` a second (every `bad_every`-th one rejected), until stopped."""

    def __init__(self, url: str, tag: str, rate: float, bad_every: int = 0) -> None:
        super().__init__(name=f"poster-{tag}", daemon=True)
        self.url, self.tag, self.rate, self.bad_every = url, tag, rate, bad_every
        self.sent: list[Sent] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        with httpx.Client(timeout=30) as client:
            while not self.halt.is_set():
                bad = self.bad_every > 0 and n % self.bad_every == self.bad_every - 1
                try:
                    status: int | str = client.post(self.url, content=body(self.tag, n, bad), headers=JSON).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.sent.append(Sent(n, status, time.monotonic(), bad))
                n += 1
                next_at += 1 / self.rate
                self.halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        self.join(60)

    def accepted(self, bad: bool | None = None) -> list[Sent]:
        return [s for s in self.sent if s.status == 202 and (bad is None or s.bad == bad)]


def count(stack: RunningStack, query: str) -> int | None:
    """A count through the API; None while the API does not answer (the worker is starting)."""
    try:
        return int(stack.sql(query)[0]["n"])
    except (apiclient.ApiError, httpx.HTTPError):
        return None


def stored_valid(stack: RunningStack, tag: str) -> int | None:
    return count(stack, f"SELECT count() AS n FROM snapshots FINAL WHERE operating_system = '{tag}'")


def stored_rejected(stack: RunningStack, tag: str) -> int | None:
    return count(stack, f"SELECT count() AS n FROM rejections FINAL WHERE position(body, '\"{tag}\"') > 0")


def is_stored(stack: RunningStack, tag: str, n: int) -> bool:
    return bool(count(stack, f"SELECT count() AS n FROM snapshots WHERE uid = '{uid(tag, n)}'"))


def state(stack: RunningStack) -> dict[str, Any]:
    try:
        value = json.loads((stack.data_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def child_pid(stack: RunningStack, name: str) -> int | None:
    pid = state(stack).get("children", {}).get(name, {}).get("pid")
    return int(pid) if isinstance(pid, int) else None


def status(stack: RunningStack) -> tuple[int, str]:
    p = subprocess.run(
        [sys.executable, "-m", "is_telemetry", "status", "--data-dir", str(stack.data_dir), "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stdout + p.stderr


def log_since(stack: RunningStack, offset: int) -> str:
    return stack.log_path.read_bytes()[offset:].decode(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {
        "IS_TELEMETRY_BROKER__MAX_RECORDS": str(MAX_RECORDS),
        "IS_TELEMETRY_CLICKHOUSE__RETRY_S": "2",  # a write ClickHouse refuses is given up (and its partitions paused) soon
        "IS_TELEMETRY_COLLECTOR__UNLIMITED_CLIENTS": '["127.0.0.1"]',  # the tests' many UIDs are not rate-limited
    }
    s = start_stack(tmp_path_factory.mktemp("long-run") / "stack", "--no-simulate", "--log-level", "info", env=env)
    try:
        yield s
    finally:
        assert s.stop() == 0, s.log()


# ------------------------------------------------------------------------------------------------ 1. recovery


def test_a_killed_worker_consumes_again_within_seconds(stack: RunningStack) -> None:
    tag = "recovery"
    poster = Poster(stack.collector_url, tag, rate=20)
    poster.start()
    try:
        wait_until(lambda: stored_valid(stack, tag) or 0, timeout_s=60, what="the first rows")
        old = child_pid(stack, "worker")
        assert old is not None
        offset = stack.log_path.stat().st_size
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        new = wait_until(lambda: child_pid(stack, "worker"), lambda p: p not in (None, old), 30, 0.02, "a new worker")
        restarted = time.monotonic()
        # the first body answered 202 after the kill: stored once the new worker stores
        first = wait_until(
            lambda: next((s for s in poster.accepted() if s.at > killed), None), timeout_s=30, what="a 202"
        )
        wait_until(lambda: _answers(stack.api_url), timeout_s=60, interval_s=0.05, what="the new worker's API")
        answered = time.monotonic()
        # once the restarted worker answers, it stores within seconds: its dead member is gone from its group (`up`
        # removed it), and Tansu completes the join after half the embedded session timeout (2 s). Before: 15-20 s.
        wait_until(lambda: is_stored(stack, tag, first.n), timeout_s=5.0, interval_s=0.1, what="storing again")
        stored = time.monotonic()
        assert stored - restarted < 10.0  # from its restart: its start-up (imports, chDB) too; ~4 s on a quiet machine
        print(
            f"\nworker kill -9: started again {restarted - killed:.1f}s later (pid {old} -> {new}); it answered "
            f"{answered - restarted:.1f}s after that, and stored again {stored - restarted:.1f}s after its restart "
            f"({stored - answered:.1f}s after it answered); load average {os.getloadavg()[0]:.1f}"
        )
        log = log_since(stack, offset)
        assert re.search(rf"removed the group members \[.is-telemetry-worker-.*-{old}-", log), log
    finally:
        poster.stop()
    # nothing the collector accepted was lost meanwhile
    accepted = len(poster.accepted())
    wait_until(lambda: stored_valid(stack, tag), lambda n: n == accepted, timeout_s=60, what=f"{accepted} stored")


def test_a_worker_up_but_consuming_nothing_is_down_in_status(stack: RunningStack, tmp_path: Path) -> None:
    """A worker whose group takes long to give it partitions (a group of its own, with a 30 s session timeout:
    Tansu joins it after about 15 s) answers, but consumes nothing: `status` says so."""
    from is_telemetry.broker import free_port

    port = free_port()
    kafka = f"127.0.0.1:{stack.broker_port}"
    args = [sys.executable, "-m", "is_telemetry", "worker", "--no-sink", "--group-id", "long-join", "--kafka", kafka]
    args += ["--api-port", str(port), "--data-dir", str(tmp_path / "worker")]
    env = {**os.environ, "IS_TELEMETRY_KAFKA__SESSION_TIMEOUT_S": "30"}
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(api), timeout_s=60, what="the worker's API")
        p = subprocess.run(
            [sys.executable, "-m", "is_telemetry", "status", "--api", api, "--collector", stack.collector_url]
            + ["--kafka", kafka, "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = p.stdout + p.stderr
        assert p.returncode == 1 and re.search(r"worker\s+DOWN\s+up, but consuming no partition", out), out
        assert "unhealthy: worker down" in out, out
        print("\n" + out)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_a_worker_whose_writes_fail_is_shown_as_not_consuming_until_it_stores_again(stack: RunningStack) -> None:
    """ClickHouse refuses the worker's writes (chDB's table directories made immutable): its partitions are paused
    and rewound; the console and `status` say so; once ClickHouse takes writes again, everything is stored."""
    if not chattr_works(stack.data_dir):
        pytest.skip("chattr +i does not stop writes here (needs root on ext4)")
    tag = "paused"
    frozen = [str(p) for p in (stack.data_dir / "chdb" / "store").glob("*/*") if p.is_dir()]
    offset = stack.log_path.stat().st_size
    subprocess.run(["chattr", "+i", *frozen], check=True)
    try:
        post_all(stack, tag, range(10))
        wait_until(
            lambda: log_since(stack, offset),
            lambda t: re.search(r"worker: up, but \d+ of its 8 partitions are paused: ClickHouse did not take", t),
            timeout_s=60,
            what="the console's line",
        )
        code, out = status(stack)
        assert code == 1 and re.search(r"worker\s+BEHIND\s+consuming 8 partitions, \d+ of them paused", out), out
    finally:
        subprocess.run(["chattr", "-i", *frozen], check=True)
    wait_until(
        lambda: log_since(stack, offset),
        lambda t: re.search(r"worker: consuming again \(8 partitions\), after [\d.]+s without", t),
        timeout_s=90,
        what="the worker consuming again",
    )
    wait_until(lambda: stored_valid(stack, tag), lambda n: n == 10, timeout_s=60, what="10 stored")
    code, out = status(stack)
    assert re.search(r"worker\s+OK\s+consuming 8 partitions", out), out


# -------------------------------------------------------------------------------------------- 2. loss report


def post_all(stack: RunningStack, tag: str, numbers: range) -> None:
    with httpx.Client(timeout=30) as client:
        for n in numbers:
            r = client.post(stack.collector_url, content=body(tag, n), headers=JSON)
            assert r.status_code == 202, r.text


def ledger_unstored(stack: RunningStack) -> int:
    """Bodies the loss ledger counts as acknowledged but not stored, over every topic it holds."""
    directory = stack.data_dir / "ledger"
    topics = [p.name.removeprefix("acked.") for p in directory.glob("acked.*")]
    return ledger.loss(directory, topics).lost


def test_a_broker_crash_after_worker_and_collector_restarts_reports_exactly_what_was_lost(
    stack: RunningStack,
) -> None:
    """The counters of the worker and the collector start again at 0 when they restart; the report comes from the
    loss ledger instead. Bodies stored before, between and after the restarts; then the worker is frozen (SIGSTOP),
    12 more are answered 202, and the broker is killed: exactly those 12 are reported lost, and are."""
    tag, frozen_tag, lost = "loss", "loss-unstored", 12
    post_all(stack, tag, range(0, 20))
    wait_until(lambda: stored_valid(stack, tag), lambda n: n == 20, timeout_s=60, what="20 stored")
    for name, more in (("worker", range(20, 25)), ("collector", range(25, 30))):
        old = child_pid(stack, name)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_until(lambda n=name: child_pid(stack, n), lambda p, o=old: p not in (None, o), 60, 0.1, f"a new {name}")
        wait_until(lambda: _answers(stack.collector_url.rsplit("/", 1)[0]), timeout_s=60, what="the collector")
        post_all(stack, tag, more)
        wait_until(lambda: stored_valid(stack, tag), lambda n, m=more.stop: n == m, timeout_s=60, what="stored again")
    # the worker writes its stored positions to the ledger just after ClickHouse took a batch: frozen in between,
    # its last batch would count as lost too (the report errs on the side of loss); so freeze it once they are written
    wait_until(lambda: ledger_unstored(stack), lambda n: n == 0, timeout_s=60, what="the ledger to hold every store")
    worker = child_pid(stack, "worker")
    broker = child_pid(stack, "broker")
    assert worker is not None and broker is not None
    os.kill(worker, signal.SIGSTOP)  # it stores nothing more; `up` kills it when it recovers from the broker loss
    try:
        post_all(stack, frozen_tag, range(lost))
        offset = stack.log_path.stat().st_size
        os.kill(broker, signal.SIGKILL)
        console = wait_until(
            lambda: log_since(stack, offset), lambda t: "!! RECOVERED" in t, timeout_s=120, what="the recovery"
        )
    finally:
        try:
            os.kill(worker, signal.SIGCONT)
        except ProcessLookupError:
            pass
    print("\n" + "\n".join(line for line in console.splitlines() if line.startswith("!!")))
    found = re.search(
        r"!! Lost: (\d+) records acknowledged to their senders but not yet stored \(since the broker started the "
        r"collector got (\d+) acknowledged, and (\d+) of them were stored\)",
        console,
    )
    assert found, console
    assert int(found.group(1)) == lost, console
    assert int(found.group(2)) - int(found.group(3)) == lost, console
    # and so it was: the 12 are not stored, every other one is
    wait_until(lambda: _answers(stack.api_url), timeout_s=60, what="the API again")
    assert stored_valid(stack, frozen_tag) == 0
    assert stored_valid(stack, tag) == 30


# --------------------------------------------------------------------------------------- 3. bounded broker


def topics(stack: RunningStack) -> list[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{stack.broker_port}", client_id="test-topics")
    try:
        return sorted(admin.list_topics())
    finally:
        admin.close()


def test_the_broker_moves_through_generations_and_nothing_is_lost_or_counted_twice(stack: RunningStack) -> None:
    """A steady load through several generations of the raw topic (broker.max_records is 700 here): each old one is
    deleted once stored; every body answered 202 is stored once, valid (a deployment of today, once) or rejected
    (once), none twice."""
    tag = "rotation"
    first = state(stack)["raw_topic"]
    offset = stack.log_path.stat().st_size
    poster = Poster(stack.collector_url, tag, rate=80, bad_every=10)
    poster.start()
    try:
        wait_until(
            lambda: log_since(stack, offset).count(" stored and deleted; the worker consumes "),
            lambda n: n >= 2,
            timeout_s=150,
            interval_s=1,
            what="two generations deleted",
        )
    finally:
        poster.stop()
    valid, bad = len(poster.accepted(bad=False)), len(poster.accepted(bad=True))
    assert valid + bad == len(poster.sent), {str(s.status) for s in poster.sent}  # never refused
    wait_until(lambda: stored_valid(stack, tag), lambda n: n == valid, timeout_s=90, what=f"{valid} stored")
    wait_until(lambda: stored_rejected(stack, tag), lambda n: n == bad, timeout_s=60, what=f"{bad} rejected")
    day = stack.sql("SELECT toString(toDate(now('UTC'))) AS d")[0]["d"]
    rolled = stack.sql(
        f"SELECT deployments FROM deployments_by_os_daily WHERE day = '{day}' AND operating_system = '{tag}'"
    )
    assert rolled == [{"deployments": valid}], rolled  # the roll-up counts each UID once, across generations
    now = state(stack)["raw_topic"]
    log = log_since(stack, offset)
    assert re.search(rf"broker: \d+ records held in {re.escape(first)} \(more than broker.max_records, 700\)", log)
    held = [t for t in topics(stack) if t.startswith("tts-telemetry-raw") or t.startswith("tts-telemetry-deadletter")]
    assert first not in held and now in held, (first, now, held)
    assert len([t for t in held if t.startswith("tts-telemetry-raw")]) <= 2, held  # the current one (and a next)
    print(f"\n{valid} valid and {bad} rejected bodies through {first} .. {now}; topics now {held}")
    # a tool that finds the stack through its data directory writes to the generation it reads now
    sim = subprocess.run(
        [sys.executable, "-m", "is_telemetry", "simulate", "--data-dir", str(stack.data_dir), "--deployments", "2"]
        + ["--cli-installs", "0", "--days", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sim.returncode == 0 and f"kafka 127.0.0.1:{stack.broker_port} {now}" in sim.stderr, sim.stderr
    assert first not in topics(stack)  # not created again


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

"""Real pipeline processes for multi-process tests: start, SIGTERM, SIGKILL, and read the views back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

from is_telemetry import apiclient
from is_telemetry.broker import free_port
from is_telemetry.runtime import stop_process

T = TypeVar("T")

VIEW_QUERIES = {
    "fleet_daily": "SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day, "
    "active_last_week, active_last_month, applications, users_standard, users_admin, organizations "
    "FROM fleet_daily ORDER BY day",
    "gateways_by_frequency_plan_daily": "SELECT day, frequency_plan_id, gateways FROM gateways_by_frequency_plan_daily "
    "ORDER BY day, frequency_plan_id",
    "deployments_by_version_daily": "SELECT day, version, deployments FROM deployments_by_version_daily ORDER BY day, version",
    "rejected_daily": "SELECT day, reason, messages FROM rejected_daily ORDER BY day, reason",
}


class Proc:
    """An `is-telemetry ...` process with its log file; `api` is set when it serves the API."""

    def __init__(self, name: str, args: list[str], log_dir: Path, api_port: int | None = None) -> None:
        self.name, self.args, self.log_path = name, args, log_dir / f"{name}.log"
        self.api = f"http://127.0.0.1:{api_port}" if api_port else None
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "is_telemetry", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.process is not None
        code, killed = stop_process(self.process, timeout_s)
        if killed:
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout_s}s:\n{self.log()}")
        return code

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def sql(self, query: str) -> list[dict[str, Any]]:
        assert self.api
        return apiclient.sql_rows(self.api, query)

    def metric(self, name: str) -> float:
        assert self.api
        return (apiclient.metrics(self.api + "/metrics", timeout_s=10) or {}).get(name, 0.0)

    def views(self) -> dict[str, list[dict[str, Any]]]:
        return {name: self.sql(q) for name, q in VIEW_QUERIES.items()}


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    timeout_s: float = 30.0,
    interval_s: float = 0.2,
    what: str = "the condition",
) -> T:
    """Poll probe() until done(value) (default: truthy); returns that value, or fails naming the last one seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout_s:g}s; last value: {value!r}")
        time.sleep(interval_s)


def worker(bootstrap: str, data_dir: Path, name: str = "worker", *extra: str, api: bool = True) -> Proc:
    port = free_port() if api else None
    args = ["worker", "--kafka", bootstrap, "--data-dir", str(data_dir), "--log-level", "info", *extra]
    args += ["--api-port", str(port)] if port else ["--api-port", "-1"]
    return Proc(name, args, data_dir, port)


def wait_until_ready(proc: Proc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.alive(), f"{proc.name} exited:\n{proc.log()}"
        try:
            if proc.api and httpx.get(proc.api + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{proc.name} not ready:\n{proc.log()}")


def expected_views(truth: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: truth[name] for name in VIEW_QUERIES}


def wait_for_views(proc: Proc, expected: dict[str, Any], timeout_s: float = 180) -> dict[str, Any]:
    """Poll until the views equal `expected`; on timeout fail with the first difference."""
    deadline = time.monotonic() + timeout_s
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            got = proc.views()
        except (httpx.HTTPError, apiclient.ApiError):
            got = {}
        if got == expected:
            return got
        time.sleep(1)
    diff = {k: (got.get(k, [])[:3], expected[k][:3]) for k in expected if got.get(k) != expected[k]}
    raise AssertionError(f"views never matched the ground truth; first rows (got, expected): {diff}\n{proc.log()}")


def consume(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
    """Every record of topic from the beginning, until done(records) or timeout_s (counting by consuming:
    Tansu's ListOffsets 'latest' is wrong)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@dataclass(frozen=True)
class Body:
    """One body as the raw topic carries it, alone in its record or in a many-bodies record (expanded)."""

    value: bytes
    key: bytes | None  # the record's key; for a body of a many-bodies record, the UID it was batched by
    headers: list[tuple[str, bytes]]
    timestamp: int
    partition: int
    offset: int
    index: int
    batched: bool


def expand(records: list[Any]) -> list[Body]:
    from core.envelope import is_batch, unpack

    out: list[Body] = []
    for r in records:
        headers = dict(r.headers or [])
        if not is_batch(headers):
            out.append(Body(r.value, r.key, list(r.headers or []), r.timestamp, r.partition, r.offset, 0, False))
            continue
        for i, f in enumerate(unpack(r.value)):
            try:
                uid = orjson.loads(f.body).get("uid")
            except (orjson.JSONDecodeError, AttributeError):
                uid = None
            hdrs = [
                ("received_at_ms", str(f.received_at_ms).encode()),
                ("source", headers.get("source", b"")),
                ("user_agent", f.user_agent),
                ("body_length", str(len(f.body)).encode()),
            ]
            out.append(
                Body(
                    f.body,
                    uid.encode() if isinstance(uid, str) else None,
                    hdrs,
                    f.received_at_ms,
                    r.partition,
                    r.offset,
                    i,
                    True,
                )
            )
    return out


def consume_bodies(
    bootstrap: str, topic: str, done: Callable[[list[Body]], bool], timeout_s: float = 30.0
) -> list[Body]:
    """Every body of topic from the beginning (many-bodies records expanded), until done(bodies) or timeout_s."""
    found: list[Body] = []

    def enough(records: list[Any]) -> bool:
        found[:] = expand(records)
        return done(found)

    records = consume(bootstrap, topic, enough, timeout_s)
    return expand(records)


def chattr_works(d: Path) -> bool:
    """Whether `chattr +i` makes a directory immutable here (root on a file system that supports it): the fault the
    tests use to make ClickHouse refuse writes."""
    probe = d / "chattr-probe"
    probe.mkdir(parents=True, exist_ok=True)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode:
        return False
    try:
        (probe / "x").touch()
        return False  # immutable did not stop us
    except OSError:
        return True
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)

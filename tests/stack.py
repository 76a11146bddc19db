"""`is-telemetry up` as a test starts it: on free loopback ports, its log in its data directory, stopped with its
whole process group (the `stack` fixture in tests/conftest.py, and the test modules that start their own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from is_telemetry import apiclient
from is_telemetry.broker import free_ports
from is_telemetry.runtime import stop_process
from tests.samples import SAMPLES


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    data_dir: Path
    api_url: str
    collector_url: str
    broker_port: int
    log_path: Path

    def sql(self, query: str) -> list[dict[str, Any]]:
        return apiclient.sql_rows(self.api_url, query)

    def wait_for(self, query: str, predicate: Any, timeout_s: float = 90) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"stack exited: {self.log()}"
            rows = self.sql(query)
            if predicate(rows):
                return rows
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting on {query!r}; last rows {rows}\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 90) -> int:
        code, killed = stop_process(self.process, timeout_s, kill_group=True)
        if killed:
            raise AssertionError(f"the stack ignored SIGTERM for {timeout_s:g}s (its group was killed):\n{self.log()}")
        return code


def start_stack(data_dir: Path, *extra: str, env: dict[str, str] | None = None, preexec_fn: Any = None) -> RunningStack:
    """`is-telemetry up` on free ports with `extra` flags; `env` adds environment variables (IS_TELEMETRY_*),
    `preexec_fn` runs in the child before exec (e.g. to lower its file-descriptor limit)."""
    broker, collector, api = free_ports(3)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "up.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "is_telemetry",
            "up",
            "--data-dir",
            str(data_dir),
            "--broker-port",
            str(broker),
            "--collector-port",
            str(collector),
            "--api-port",
            str(api),
            *extra,
        ],
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=data_dir,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
    )
    stack = RunningStack(
        proc, data_dir, f"http://127.0.0.1:{api}", f"http://127.0.0.1:{collector}/collect", broker, log_path
    )
    deadline = time.monotonic() + 120
    while "Ctrl-C stops everything" not in log_path.read_text(errors="replace")[offset:]:
        if proc.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            raise AssertionError(f"stack did not start:\n{stack.log()}")
        time.sleep(0.2)
    return stack


def post_samples(stack: RunningStack) -> None:
    for name, body in SAMPLES.items():
        r = httpx.post(
            stack.collector_url,
            content=body,
            headers={"Content-Type": "application/json", "User-Agent": "TheThingsStack/3.32.1 (linux/amd64)"},
        )
        assert r.status_code == 202, (name, r.status_code, r.text)

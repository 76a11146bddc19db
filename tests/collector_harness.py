"""The collector as the tests run it: its settings, `python -m is_telemetry collect` on a free port, and a fake
Kafka producer for the failure paths."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError
from kafka.future import Future

from core.config import Settings, load_settings
from is_telemetry.runtime import stop_process
from tests.paths import ROOT

MAX_BODY = 64 * 1024
PUBLISH_TIMEOUT_S = 2.0


def collector_settings(bootstrap: str, topic: str, **collector: Any) -> Settings:
    c = {"max_body_bytes": MAX_BODY, "publish_timeout_s": PUBLISH_TIMEOUT_S, **collector}
    return load_settings(kafka={"bootstrap_servers": bootstrap, "raw_topic": topic}, collector=c)


def new_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class CollectorProcess:
    """`python -m is_telemetry collect` on a free port (it prints its URL once listening)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        log_dir: Path,
        port: int = 0,
        argv: list[str] | None = None,
        **collector_env: Any,
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["IS_TELEMETRY_KAFKA__RAW_TOPIC"] = topic
        env["IS_TELEMETRY_COLLECTOR__PUBLISH_TIMEOUT_S"] = str(PUBLISH_TIMEOUT_S)
        env["IS_TELEMETRY_COLLECTOR__MAX_BODY_BYTES"] = str(MAX_BODY)
        for k, v in collector_env.items():
            env[f"IS_TELEMETRY_COLLECTOR__{k.upper()}"] = str(v)
        env.pop("IS_TELEMETRY_CONFIG", None)
        env["IS_TELEMETRY_COLLECTOR__PORT"] = "0"  # any free port, unless --port (where 0 means the configured one)
        argv = argv or [sys.executable, "-m", "is_telemetry", "collect"]
        self.log = log_dir / f"collector-{uuid.uuid4().hex[:6]}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [*argv, "--kafka", bootstrap, "--host", "127.0.0.1", *(["--port", str(port)] if port else [])],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=log_dir,
                env=env,
            )
        self.url = self._wait_for_url(30.0)

    def _wait_for_url(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        buf = b""
        while b"\n" not in buf:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"collector did not start: {buf!r}\n{self.log.read_text()[-3000:]}")
            if sel.select(0.1):
                buf += os.read(self.proc.stdout.fileno(), 4096)
        sel.close()
        m = re.search(rb"listening on (http://\S+)/collect", buf)
        assert m, buf
        return m.group(1).decode()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        stop_process(self.proc, timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class FakeProducer:
    """kafka-python's producer surface the collector uses; futures resolved from another thread."""

    def __init__(self, outcome: str, delay_s: float = 0.05) -> None:
        self.outcome, self.delay_s = outcome, delay_s
        self.sent: list[dict[str, Any]] = []
        self.flushed = self.closed = False

    def send(self, topic: str, **kw: Any) -> Future:
        if self.outcome == "raise":
            raise KafkaError("send failed")
        self.sent.append({"topic": topic, **kw})
        f = Future()
        if self.outcome == "ok":
            threading.Timer(self.delay_s, f.success, args=("metadata",)).start()
        elif self.outcome == "fail":
            threading.Timer(self.delay_s, f.failure, args=(KafkaError("broker said no"),)).start()
        return f  # "hang": never resolved

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

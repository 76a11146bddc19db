"""Before anything starts: what waiting cannot mend ends `up` at once (PreflightFailed, exit code 2); what it can
(ClickHouse or Kafka not answering yet) is waited for, saying so on the console."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from is_telemetry.broker import port_open
from is_telemetry.config import Settings, client_host
from is_telemetry.errors import TelemetryError
from is_telemetry.preflight import Probe, check_chdb, check_clickhouse, check_data_dir, check_kafka
from is_telemetry.stack.state import other_owner

WAIT_REMINDER_S = 30.0  # how often a wait for ClickHouse or Kafka says it is still waiting


class PreflightFailed(TelemetryError, RuntimeError):
    """The configuration cannot work (waiting would not help): `up` ends with exit code 2 and one line."""


class Port(NamedTuple):
    """A port `up` will listen on: which component, the flag that moves it, and where it listens."""

    name: str
    flag: str
    host: str
    port: int


def ports(settings: Settings) -> list[Port]:
    """The ports `up` is about to listen on, each with its own component's host."""
    wanted = [
        Port("API", "--api-port", settings.api.host, settings.api.port),
        Port("collector", "--collector-port", settings.collector.host, settings.collector.port),
    ]
    if settings.embedded_kafka:
        wanted.append(Port("embedded broker", "--broker-port", settings.broker.host, settings.broker.port))
    return wanted


def preflight(settings: Settings, data_dir: Path, stop: threading.Event) -> None:
    """Check the data directory, the ports, ClickHouse and Kafka. A mistake raises PreflightFailed at once; a
    server that does not answer yet is waited for (saying so on the console) until it answers or `stop` is set."""
    require(check_data_dir(data_dir))
    other = other_owner(data_dir)
    if other is not None:
        raise PreflightFailed(
            f"another `is-telemetry up` (pid {other['pid']}, API {other.get('api_url')}) is "
            f"running on {data_dir}: stop it first, or pass another --data-dir"
        )
    for p in ports(settings):
        if port_open(client_host(p.host), p.port):
            raise PreflightFailed(
                f"port {p.port} for the {p.name} is already in use (another `is-telemetry up`?): "
                f"stop that, or pick another port with {p.flag}, e.g. {p.flag} {p.port + 10}"
            )
    dsn = settings.clickhouse_dsn
    wait_for("ClickHouse", lambda: check_chdb(dsn) if dsn.startswith("chdb:") else check_clickhouse(dsn), stop)
    if not settings.embedded_kafka:
        wait_for("Kafka", lambda: check_kafka(settings.bootstrap_servers), stop)


def require(probe: Probe) -> None:
    if not probe.ok:
        raise PreflightFailed(probe.message)


def wait_for(name: str, probe_fn: Callable[[], Probe], stop: threading.Event, every_s: float = 2.0) -> None:
    """Probe until it answers; a probe that says waiting cannot help raises PreflightFailed. Returns when `stop`
    is set too (the caller checks it)."""
    probe = probe_fn()
    if probe.ok:
        return
    if not probe.retry:
        raise PreflightFailed(probe.message)
    started = time.monotonic()
    print(f"  waiting: {probe.message}; trying again every {every_s:.0f}s until it answers (Ctrl-C stops)", flush=True)
    reminder = started + WAIT_REMINDER_S
    while not stop.wait(every_s):
        probe = probe_fn()
        if probe.ok:
            print(f"  {name} answered after {time.monotonic() - started:.0f}s", flush=True)
            return
        if not probe.retry:
            raise PreflightFailed(probe.message)
        if time.monotonic() >= reminder:
            print(f"  still waiting ({time.monotonic() - started:.0f}s): {probe.message}", flush=True)
            reminder = time.monotonic() + WAIT_REMINDER_S

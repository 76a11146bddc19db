"""Before anything starts: what waiting cannot mend ends `up` at once (PreflightFailed, exit code 2); what it can
(ClickHouse or Kafka not answering yet) is waited for, saying so on the console."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

from core.config import Settings, client_host
from core.errors import TelemetryError
from core.preflight import Probe, check_chdb, check_clickhouse, check_data_dir, check_kafka
from is_telemetry.broker import port_open
from is_telemetry.stack.output import say
from is_telemetry.stack.state import leftovers, other_owner

WAIT_REMINDER_S = 30.0  # how often a wait for ClickHouse or Kafka says it is still waiting
LEFTOVERS_WAIT_S = 60.0  # a killed `up`'s children stop within the lifeline's bounds (drain, then stop): seldom long


class PreflightFailed(TelemetryError):
    """The configuration cannot work (waiting would not help): `up` ends with exit code 2 and one `error:` line per
    problem (`problems`: every one found in the same run)."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


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
    """Check the data directory, its owner, the ports, ClickHouse and Kafka. Every mistake found is raised at once,
    together (PreflightFailed); a server that does not answer yet is waited for (saying so on the console) until it
    answers or `stop` is set. Processes an `up` that was killed left running are waited for first."""
    data = check_data_dir(data_dir)
    problems = [] if data.ok else [data.message]
    other = other_owner(data_dir) if data.ok else None
    if other is not None:
        problems.append(
            f"another `is-telemetry up` (pid {other['pid']}, API {other.get('api_url') or 'not ready yet'}) is "
            f"running on {data_dir}: stop it first, or pass another --data-dir"
        )
    elif data.ok:
        wait_for_leftovers(data_dir, stop)
    problems += port_clashes(settings)
    dsn = settings.clickhouse_dsn
    probes: dict[str, Callable[[], Probe]] = {}
    if dsn.startswith("chdb:"):
        if other is None:  # else its chDB is in use: said by the line above
            probes["ClickHouse"] = lambda: check_chdb(dsn)
    else:
        probes["ClickHouse"] = lambda: check_clickhouse(dsn)
    if not settings.embedded_kafka:
        probes["Kafka"] = lambda: check_kafka(settings.bootstrap_servers)
    first = {name: probe() for name, probe in probes.items()}
    problems += [p.message for p in first.values() if not p.ok and not p.retry]
    if problems:
        raise PreflightFailed(problems)
    for name, probe in probes.items():
        if not first[name].ok:
            wait_for(name, probe, stop, first[name])


def port_clashes(settings: Settings, skip: Collection[str] = ()) -> list[str]:
    """Each port `up` would listen on that is already taken, in one line each (`skip`: the flags of ports not to
    check, e.g. given wrong: the default in their place is not what was asked for)."""
    return [
        f"port {p.port} for the {p.name} is already in use (another `is-telemetry up`?): "
        f"stop that, or pick another port with {p.flag}, e.g. {p.flag} {p.port + 10}"
        for p in ports(settings)
        if p.flag not in skip and port_open(client_host(p.host), p.port)
    ]


def wait_for_leftovers(data_dir: Path, stop: threading.Event, bound_s: float = LEFTOVERS_WAIT_S) -> None:
    """The processes of an `up` that was killed (named by its stale state file) stop by themselves within seconds
    (is_telemetry/lifeline.py): wait for them, so that their ports and the chDB directory are free; any left after
    `bound_s` are killed."""
    left = leftovers(data_dir)
    if not left:
        return
    named = ", ".join(f"{name} pid {pid}" for name, pid in left.items())
    say(f"  waiting: the last `up` on {data_dir} was killed; its processes are stopping by themselves ({named})")
    started = time.monotonic()
    while left and not stop.wait(0.2):
        if time.monotonic() - started > bound_s:
            for pid in left.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            say(f"  killed them: they were still running after {bound_s:.0f}s ({named})")
            stop.wait(0.5)
            return
        left = leftovers(data_dir)
    if not left:
        say(f"  they stopped after {time.monotonic() - started:.1f}s")


def wait_for(
    name: str, probe_fn: Callable[[], Probe], stop: threading.Event, probe: Probe | None = None, every_s: float = 2.0
) -> None:
    """Probe until it answers (`probe`: the first answer, if already asked); a probe that says waiting cannot help
    raises PreflightFailed. Returns when `stop` is set too (the caller checks it)."""
    probe = probe or probe_fn()
    if probe.ok:
        return
    if not probe.retry:
        raise PreflightFailed(probe.message)
    started = time.monotonic()
    say(f"  waiting: {probe.message}; trying again every {every_s:.0f}s until it answers (Ctrl-C stops)")
    reminder = started + WAIT_REMINDER_S
    while not stop.wait(every_s):
        probe = probe_fn()
        if probe.ok:
            say(f"  {name} answered after {time.monotonic() - started:.0f}s")
            return
        if not probe.retry:
            raise PreflightFailed(probe.message)
        if time.monotonic() >= reminder:
            say(f"  still waiting ({time.monotonic() - started:.0f}s): {probe.message}")
            reminder = time.monotonic() + WAIT_REMINDER_S

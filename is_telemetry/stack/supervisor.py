"""The stack's children (the worker, the collector): started in order and waited for, started again when one
exits on its own, stopped in reverse order. Each writes its output to data_dir/logs/NAME.log, and each has a
lifeline (is_telemetry/lifeline.py): if `up` dies without stopping them, they stop by themselves, in order."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
from kafka.errors import KafkaError

from core.config import Settings, client_host, env_name
from core.control import ControlPipe
from core.errors import TelemetryError
from core.generations import Generation, generation
from core.kafka import member_client_id, remove_members
from core.ledger import LEDGER_ENV
from is_telemetry.lifeline import Lifelines
from is_telemetry.runtime import stop_process
from is_telemetry.stack.drain import DRAIN_ENV, DRAIN_S, wait_stored
from is_telemetry.stack.options import StackOptions
from is_telemetry.stack.output import say
from is_telemetry.stack.preflight import PreflightFailed
from is_telemetry.stack.state import process_started

log = logging.getLogger(__name__)

SIMULATOR_ADDRESS = "127.0.0.2"  # the simulated fleet's own loopback source: the rest of 127.0.0.0/8 stays limited


@functools.cache
def simulator_source(collector_host: str) -> str:
    """The address the simulated fleet sends from, which the stack's collector lists in collector.unlimited_clients
    (docs/collector.md, "Per-client limits"): 127.0.0.2; ::1 when the collector is reached over IPv6; 127.0.0.1
    where 127.0.0.2 cannot be bound (macOS configures 127.0.0.1 alone), and then every local client is unlimited."""
    host = client_host(collector_host)
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return "::1"
    except ValueError:  # a host name
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((SIMULATOR_ADDRESS, 0))
    except OSError:
        return "127.0.0.1"
    return SIMULATOR_ADDRESS


class ChildFailed(TelemetryError):
    """A child could not be started (again): `up` ends with exit code 1 and the child's last log lines."""


class Child:
    """A child process of the stack, its output in data_dir/logs/NAME.log; `pass_fds`: its lifeline's descriptors."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C and hang-up reach `up` alone: it stops them in order
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )
        self.started = process_started(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM, wait up to timeout_s, then SIGKILL (saying so); its exit code."""
        if stop_process(self.process, timeout_s).killed:
            say(f"  {self.name} did not stop within {timeout_s:.0f}s: killing it")
        self._log.close()
        return self.process.returncode


class RestartWindow:
    """Restarts counted over a sliding window of `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.times: list[float] = []

    def note(self) -> int:
        """Count a restart now; how many fell within the window, this one included."""
        now = time.time()
        self.times = [t for t in self.times if now - t < self.window_s] + [now]
        return len(self.times)


class Children:
    """The worker (processors + sink + API) and the collector, in stop order: the collector, then the worker."""

    def __init__(
        self,
        settings: Settings,
        options: StackOptions,
        data_dir: Path,
        api_url: str,
        collector_url: str,
        lifelines: Lifelines,
    ) -> None:
        self.s, self.o, self.data_dir, self.lifelines = settings, options, data_dir, lifelines
        self.log_dir = data_dir / "logs"
        self.api_url, self.collector_url = api_url, collector_url
        self.running: list[Child] = []
        # the embedded broker's: the loss ledger, the generations of the raw topic (the worker's lags behind the
        # collector's while the worker finishes the old one), and the collector's command pipe
        self.ledger_dir = data_dir / "ledger"
        self.worker_generation = self.collector_generation = generation(settings, 0)
        self.control = ControlPipe() if settings.embedded_kafka else None
        self.exits = RestartWindow(options.broker_restarts_window_s)
        self.on_started: Callable[[], None] = lambda: None  # called once a child's process exists (up records it)

    def _cli(self, *args: str) -> list[str]:
        base = [sys.executable, "-m", "is_telemetry", *args, "--log-level", self.o.log_level]
        if self.o.config:
            base += ["--config", str(self.o.config)]
        return base

    def start_worker(self) -> None:
        self.running.append(
            Child(
                "worker",
                self._cli(
                    "worker",
                    "--kafka",
                    self.s.bootstrap_servers,
                    "--clickhouse",
                    self.s.clickhouse_dsn,
                    "--data-dir",
                    str(self.data_dir),
                    "--api-port",
                    str(self.s.api.port),
                ),
                self.log_dir,
                env={
                    "IS_TELEMETRY_API__HOST": self.s.api.host,
                    "IS_TELEMETRY_API__TOKEN": self.s.api.token,
                    **self.lifelines.env("worker"),
                    **(self._embedded_worker_env() if self.s.embedded_kafka else {}),
                },
                pass_fds=self.lifelines.pass_fds("worker"),
            )
        )
        self.on_started()
        self._wait_http(self.api_url + "/healthz", "worker", 90)

    def _embedded_worker_env(self) -> dict[str, str]:
        """On the embedded broker: the broker's memory goes with it, so a worker whose `up` is gone stores what it
        holds first; its group's session timeout is the embedded one (Tansu completes a join after about half the
        session timeout: a worker started again consumes sooner); its generation of the topics; the loss ledger."""
        return {
            DRAIN_ENV: "1",
            env_name("kafka", "session_timeout_s"): str(self.s.broker.session_timeout_s),
            **self._generation_env(self.worker_generation),
        }

    def _generation_env(self, gen: Generation) -> dict[str, str]:
        return {
            env_name("kafka", "raw_topic"): gen.raw,
            env_name("kafka", "deadletter_topic"): gen.deadletter,
            LEDGER_ENV: str(self.ledger_dir),
        }

    def start_collector(self) -> None:
        self.running.append(
            Child(
                "collector",
                self._cli(
                    "collect",
                    "--kafka",
                    self.s.bootstrap_servers,
                    "--port",
                    str(self.s.collector.port),
                    "--host",
                    self.s.collector.host,
                ),
                self.log_dir,
                env={
                    **self._collector_env(),
                    **self.lifelines.env("collector"),
                    **(self._generation_env(self.collector_generation) if self.s.embedded_kafka else {}),
                    **(self.control.env() if self.control is not None else {}),
                },
                pass_fds=self.lifelines.pass_fds("collector") + (self.control.pass_fds() if self.control else ()),
            )
        )
        self.on_started()
        self._wait_http(self.collector_url.rsplit("/", 1)[0] + "/readyz", "collector", 60)

    def _collector_env(self) -> dict[str, str]:
        """The simulated fleet is one client with hundreds of deployments: its address is unlimited (besides the
        configured ones); everyone else is limited as configured."""
        if not self.o.simulate:
            return {}
        unlimited = [*self.s.collector.unlimited_clients, simulator_source(self.s.collector.host)]
        return {"IS_TELEMETRY_COLLECTOR__UNLIMITED_CLIENTS": json.dumps(unlimited)}

    def _wait_http(self, url: str, name: str, timeout_s: float) -> None:
        child = next(c for c in self.running if c.name == name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.alive():
                if child.process.returncode == 2:  # a configuration error: its one line says what to change
                    raise PreflightFailed(
                        f"the {name} refused to run: {error_line(child.log_path)} (more in {child.log_path})"
                    )
                raise ChildFailed(
                    f"the {name} exited with code {child.process.returncode}; see {child.log_path}:\n"
                    + tail(child.log_path)
                )
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ChildFailed(f"the {name} was not ready at {url} within {timeout_s:.0f}s; see {child.log_path}")

    def keep_stop_order(self) -> None:
        self.running.sort(key=lambda c: c.name != "worker")  # stop order stays: collector, then worker

    def any_exited(self) -> bool:
        return any(not c.alive() for c in self.running)

    def restart_exited(self) -> None:
        for c in list(self.running):
            if not c.alive():
                self.restart(c)

    def restart(self, child: Child) -> None:
        """A worker or collector that exited on its own is started again (the broker keeps what it had not
        stored: a worker resumes from its committed offsets); more than broker_restarts_max restarts within the
        window end `up` with the child's last log lines."""
        exits = self.exits.note()
        status = exit_status(child.process.returncode)
        child.stop(1)
        self.running.remove(child)
        if child.process.returncode == 2:  # a configuration error: starting it again cannot help
            raise ChildFailed(
                f"the {child.name} refused to run: {error_line(child.log_path)} (more in {child.log_path})"
            )
        if exits > self.o.broker_restarts_max:
            raise ChildFailed(
                f"the {child.name} exited with {status} ({exits} exits within "
                f"{self.o.broker_restarts_window_s:.0f}s): giving up; see {child.log_path}:\n" + tail(child.log_path)
            )
        say(
            f"!! the {child.name} exited with {status}; see {child.log_path}. Starting it again: records the "
            f"broker holds are not lost{' (the worker resumes from its committed offsets)' if child.name == 'worker' else ''}."
        )
        if child.name == "worker":
            self.forget_member(child)
            self.start_worker()
        else:
            self.start_collector()
        self.keep_stop_order()
        say(f"   {child.name} running again")

    def forget_member(self, worker: Child) -> None:
        """A worker that died (kill -9, the OOM killer) did not leave its consumer group: its member would hold every
        partition until its session times out, and the next worker would wait for that. Remove it now. With static
        membership the next worker takes the same member's place at once instead: nothing to do."""
        if self.s.processors.group_instance_id:
            return
        client_id = member_client_id("worker", worker.process.pid)
        try:
            removed = remove_members(self.s.bootstrap_servers, self.s.processors.group_id, client_id)
        except (KafkaError, OSError, TimeoutError) as exc:  # the next worker waits for the session timeout instead
            log.info("could not remove the group member of the worker that exited: %r", exc)
            return
        log.info("removed the group members %s of the worker that exited", removed)

    def stop_before_broker_restart(self) -> None:
        """Stop the broker's clients before a new broker listens: on a fresh broker they would auto-create the
        topics (Tansu does, with its own partition count) before ensure_topics() creates them as configured. The
        worker first, with a short grace (it finishes a ClickHouse write in flight; leaving its group on a dead
        broker would hang), while the collector still answers 503 + Retry-After; then the collector."""
        by_name = {c.name: c for c in self.running}
        for name, grace_s in (("worker", 6.0), ("collector", 20.0)):
            c = by_name.get(name)
            if c is not None:
                code = c.stop(grace_s)
                say(f"   {name} stopped ({exit_status(code)})")
        self.running = []

    def stop_all(self, hurry: threading.Event) -> None:
        """Stop in reverse start order: the collector (it flushes its producer), then, with the embedded broker, a
        wait for the worker to store what the broker holds (its memory goes with it; at most DRAIN_S, or until
        `hurry` is set: a second Ctrl-C), then the worker (it finishes its batch and commits)."""
        for c in reversed(self.running):
            if c.name == "worker" and c.alive() and self.s.embedded_kafka and not hurry.is_set():
                self.drain(hurry)
            say(f"stopping: {c.name}")
            code = c.stop(60 if c.name == "worker" else 20)
            if code not in (0, None, -signal.SIGTERM):
                say(f"  {c.name} exited with {code}; see {c.log_path}")
        self.running = []

    def drain(self, hurry: threading.Event) -> None:
        """Wait for the worker to store what the broker holds: in its generation of the raw topic and, if the
        collector had moved on to a newer one (a rotation under way), in that one too, after the worker moved there."""
        deadline = time.monotonic() + DRAIN_S
        told: list[int] = []

        def waiting(n: int) -> None:
            if not told:
                say(
                    f"waiting for the worker to store the {n} records the embedded broker still holds (its memory "
                    f"goes with it; at most {DRAIN_S:.0f}s, Ctrl-C again to skip)"
                )
            told.append(n)

        left = wait_stored(self.s, DRAIN_S, hurry, waiting, self.worker_generation.raw)
        if not left and self.worker_generation != self.collector_generation and not hurry.is_set():
            self.move_worker(self.collector_generation)
            left = wait_stored(
                self.s, max(1.0, deadline - time.monotonic()), hurry, waiting, self.worker_generation.raw
            )
        if left:
            say(f"  {left} records not stored: they are lost with the broker's memory (senders got 202)")

    def stop_worker(self) -> None:
        """Stop the worker (it finishes its batch and commits, then leaves its group)."""
        worker = next((c for c in self.running if c.name == "worker"), None)
        if worker is None:
            return
        code = worker.stop(60)
        self.running.remove(worker)
        if code not in (0, None, -signal.SIGTERM):
            say(f"  the worker exited with {code} when stopped; see {worker.log_path}")

    def move_worker(self, gen: Generation) -> None:
        """Stop the worker and start it again on generation `gen`."""
        self.stop_worker()
        self.worker_generation = gen
        self.start_worker()
        self.keep_stop_order()

    def use_generation(self, gen: Generation) -> None:
        """A new broker: every child starts on `gen` (generation 0) from now on."""
        self.worker_generation = self.collector_generation = gen

    def pids(self) -> dict[str, dict[str, int | None]]:
        """The running children as the state file names them (is_telemetry/stack/state.py)."""
        return {c.name: {"pid": c.process.pid, "started": c.started} for c in self.running if c.alive()}


def exit_status(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def error_line(path: Path) -> str:
    """The last `error: ...` line a child wrote (what it refused), else its last line."""
    lines = tail(path, 200).splitlines()
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else "(no output)"


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

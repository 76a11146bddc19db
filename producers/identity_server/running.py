"""The producer's loop: count, build, send (each with retries), once or every interval, until stopped; the exit
code it ends with; SIGINT/SIGTERM as a stop."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import GaveUp, Stopped
from core.retry import RetryPolicy, with_retries
from core.schema import TelemetryMessage
from producers.identity_server.counting import (
    DatabaseSchemaError,
    DatabaseUnreachable,
    build_message,
    count_entities_at,
    describe_dsn,
    summarize,
)
from producers.identity_server.durations import format_seconds
from producers.identity_server.logs import log, one_line
from producers.identity_server.senders import SendFailed


@dataclass
class ProduceOptions:
    database: str
    uid: str
    interval_s: float
    once: bool
    sender: Any  # HttpSender | KafkaSender
    retry: RetryPolicy
    echo: Callable[[str], None] = print  # progress lines (stdout)
    echo_err: Callable[[str], None] = lambda line: print(line, file=sys.stderr)  # final error lines


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def produce_one(opts: ProduceOptions, stop: threading.Event) -> TelemetryMessage:
    """Count (with retries), build, send (with retries); print the progress line. Raises GaveUp/Stopped/
    DatabaseSchemaError."""
    where = describe_dsn(opts.database)

    def db_failure(exc: BaseException) -> str | None:
        return f"database unreachable at {where}: {exc}" if isinstance(exc, DatabaseUnreachable) else None

    entities = with_retries(lambda: count_entities_at(opts.database), opts.retry, stop, db_failure)
    message = build_message(opts.uid, entities)
    body = message.to_json()

    def send_failure(exc: BaseException) -> str | None:
        if isinstance(exc, SendFailed):
            if not exc.retry:
                log.error("%s; not retrying (the receiver rejected this message)", exc)
                raise GaveUp(str(exc)) from exc
            return str(exc)
        return None

    started = time.monotonic()
    result = with_retries(lambda: opts.sender.send(opts.uid, body), opts.retry, stop, send_failure)
    ms = (time.monotonic() - started) * 1000
    opts.echo(
        f"{now_iso()} sent uid={opts.uid[:12]}… {summarize(entities)} ({len(body)} bytes) -> "
        f"{opts.sender.description}: ok, {result} ({ms:.0f} ms)"
    )
    return message


def run(opts: ProduceOptions, stop: threading.Event | None = None) -> int:
    """The producer loop. Returns the process exit code: 0 sent (or stopped between sends), 1 a message
    could not be sent (gave up or stopped while retrying), 2 the database is not an IS database."""
    stop = stop or threading.Event()
    try:
        while True:
            due = time.monotonic() + opts.interval_s
            try:
                produce_one(opts, stop)
            except GaveUp as exc:
                if opts.once:
                    opts.echo_err(f"{now_iso()} error: message NOT sent: {exc}")
                    return 1
                opts.echo_err(
                    f"{now_iso()} error: this interval's message was NOT sent ({exc}); next try at the next interval"
                )
            except Stopped:
                opts.echo_err(f"{now_iso()} stopped before the message was sent: it was NOT sent")
                return 1
            except DatabaseSchemaError as exc:
                opts.echo_err(
                    f"{now_iso()} error: the database at {describe_dsn(opts.database)} does not look like "
                    f"a The Things Stack Identity Server database: {exc}"
                )
                return 2
            if opts.once:
                return 0
            wait = max(0.0, due - time.monotonic())
            next_at = datetime.fromtimestamp(time.time() + wait, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            opts.echo(f"{now_iso()} next send at {next_at} (every {format_seconds(opts.interval_s)})")
            if stop.wait(wait):
                opts.echo(f"{now_iso()} stopped")
                return 0
    finally:
        try:
            opts.sender.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("closing %s failed: %s", opts.sender.description, one_line(exc))


def install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set `stop` (a second Ctrl-C interrupts at once). Returns a function restoring them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("stop requested (%s); finishing", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore

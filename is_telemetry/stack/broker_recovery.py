"""The embedded broker keeps everything in memory. This module tells when that memory is gone (its process
exited, or its topics vanished), accounts for what was lost with it (records acknowledged to their senders that
the worker had not stored yet: from the loss ledger, core/ledger.py, durable facts written by the collector
and the worker as they happen, whatever restarted since), and starts a broker again on the same port with the topics
as configured.
The order of the recovery (stop the clients, restart the broker, start the clients again) is `up`'s
(docs/reliability.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from core.config import Settings
from core.errors import BrokerFailed, GaveUp, Stopped
from core.kafka import ensure_topics, topic_names
from core.ledger import Loss
from core.retry import RetryPolicy, retry_on, with_retries
from is_telemetry import apiclient
from is_telemetry.broker import EmbeddedBroker
from is_telemetry.stack.output import say
from is_telemetry.stack.readings import Readings
from is_telemetry.stack.supervisor import exit_status

TOPICS_CHECK_EVERY_S = 15.0  # how often the watch loop asks the broker for its topics (at once after a child exit)


class BrokerWatch:
    """Tells when the embedded broker's state is gone. `topics`: the topics it must hold (the generations in use)."""

    def __init__(self, settings: Settings, topics: Callable[[], list[str]]) -> None:
        self.s, self.topics = settings, topics
        self.topics_checked_at = time.monotonic()

    def lost(self, broker: EmbeddedBroker | None, child_exited: bool) -> str | None:
        """Why the embedded broker's state is gone (its process exited, or its topics vanished), else None."""
        if broker is None:  # external Kafka: durable; its outages are the operator's, children reconnect by themselves
            return None
        p = broker.process
        if p is None or p.poll() is not None:
            code = None if p is None else p.returncode
            return f"the embedded broker (pid {p.pid if p else '?'}) exited with {exit_status(code)}"
        now = time.monotonic()
        if child_exited or now - self.topics_checked_at >= TOPICS_CHECK_EVERY_S:
            self.topics_checked_at = now
            missing = missing_topics(self.s, self.topics())
            if missing:
                return f"the embedded broker lost its topics ({', '.join(missing)} no longer exist)"
        return None

    def restarted(self) -> None:
        self.topics_checked_at = time.monotonic()


def loss_report(lost: Loss, history_missing: int, kept: str, settings: Settings, bootstrap_servers: str) -> str:
    """The console's account of a broker loss, after its first line: what was lost (`lost`, from the loss ledger;
    `history_missing`: UID-days of the simulator's backfill ClickHouse does not hold), what ClickHouse keeps (`kept`),
    what comes next."""
    lines = [
        "!! Its memory storage is gone: every topic, offset and consumer group.",
        f"!! Lost: {lost.lost} records acknowledged to their senders but not yet stored (since the broker started the "
        f"collector got {lost.acknowledged} acknowledged, and {lost.stored} of them were stored). Senders got 202 "
        "and will not re-send them (TTS sends again the next day).",
    ]
    if history_missing:
        lines.append(
            f"!! The simulator's history: {history_missing} UID-days of it are not in ClickHouse; the next start on "
            "this data directory sends it again."
        )
    lines += [
        f"!! ClickHouse is intact ({settings.clickhouse_dsn}): {kept}.",
        f"!! Recovering: restarting the broker on {bootstrap_servers}, recreating the topics, restarting the "
        "collector and the worker.",
    ]
    return "\n".join(lines)


def kept_in_clickhouse(readings: Readings) -> str:
    """What ClickHouse holds, for the loss report (a generic phrase if the API does not answer)."""
    try:
        snapshots, days = readings.kept()
    except (apiclient.ApiError, KeyError, IndexError, ValueError):
        return "every row it had stored"
    return f"{snapshots} snapshot rows over {days} day{'' if days == 1 else 's'}"


def restart_broker(
    settings: Settings, broker: EmbeddedBroker, log_file: Path, stop: threading.Event
) -> EmbeddedBroker | None:
    """Stop the old broker (exited, or topics vanished: its PID must be gone before the port is reused), start a
    new one on the same port and create the topics. None if `stop` was set meanwhile."""
    broker.stop()
    new = start_broker_again(settings, log_file, stop, broker.lifeline)
    if new is None:
        return None  # stopping meanwhile
    ensure_topics(settings)
    wrong = wrong_partitions(settings)
    if wrong:
        say(f"   warning: topics with an unexpected partition count: {wrong}")
    pid = new.process.pid if new.process is not None else "?"
    say(
        f"   broker     kafka://{new.bootstrap_servers} again (pid {pid}); "
        f"topics {', '.join(topic_names(settings))} created"
    )
    return new


def start_broker_again(
    settings: Settings, log_file: Path, stop: threading.Event, lifeline: int | None = None, timeout_s: float = 30.0
) -> EmbeddedBroker | None:
    """A new embedded broker on the same host:port (retried every 0.5s while the old socket is still held), on the
    same lifeline as the old one."""
    policy = RetryPolicy(initial_s=0.5, maximum_s=0.5, deadline_s=timeout_s)
    try:
        return with_retries(
            lambda: EmbeddedBroker(settings.broker.host, settings.broker.port, log_file, lifeline).start(),
            policy,
            stop,
            retry_on(BrokerFailed, what="starting the embedded broker again"),
            level=lambda failures: logging.DEBUG,
        )
    except Stopped:
        return None
    except GaveUp as exc:
        raise BrokerFailed(f"the embedded broker could not be started again: {exc.__cause__}") from exc.__cause__


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    # kafka-python 3 has no api_version_auto_timeout_ms for the admin client (it raised KafkaConfigurationError,
    # which the callers took for "not answering": a broker that lost its topics went unnoticed).
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="is-telemetry-watch", request_timeout_ms=3000
    )


def missing_topics(settings: Settings, topics: list[str]) -> list[str]:
    """The `topics` the broker no longer has ([] if it has them all, or does not answer)."""
    try:
        admin = _admin(settings)
    except KafkaError:
        return []  # not answering: a dead process is detected by its exit, a hang is not a restart
    try:
        existing = set(admin.list_topics())
    except KafkaError:
        return []
    finally:
        admin.close()
    return [t for t in topics if t not in existing]


def wrong_partitions(settings: Settings) -> dict[str, int]:
    """The pipeline's topics whose partition count is not the configured one."""
    try:
        admin = _admin(settings)
        try:
            described = admin.describe_topics(topic_names(settings))
        finally:
            admin.close()
    except KafkaError:
        return {}
    return {t["name"]: len(t["partitions"]) for t in described if len(t["partitions"]) != settings.kafka.partitions}

"""Kafka plumbing shared by every stage: record headers, topic creation, the kafka-python producer."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from core.config import Settings
from core.errors import GaveUp, KafkaUnavailable
from core.retry import RetryPolicy, retry_on, with_retries

log = logging.getLogger(__name__)

#: Record headers the collector (and every producer) sets. Values are ASCII.
HEADER_RECEIVED_AT = "received_at_ms"  # receive time, Unix milliseconds; also the record timestamp
HEADER_USER_AGENT = "user_agent"
HEADER_BODY_LENGTH = "body_length"
HEADER_SOURCE = "source"  # collector | identity-server | simulator


def topic_names(settings: Settings) -> list[str]:
    k = settings.kafka
    return [k.raw_topic, k.deadletter_topic, k.snapshots_topic]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the pipeline's topics (idempotent); waits up to timeout_s for the brokers (else KafkaUnavailable)."""
    servers = settings.bootstrap_servers
    policy = RetryPolicy(initial_s=0.5, maximum_s=0.5, deadline_s=timeout_s)
    try:
        admin = with_retries(
            lambda: KafkaAdminClient(bootstrap_servers=servers, client_id="is-telemetry-admin"),
            policy,
            None,
            retry_on(KafkaError, what=f"Kafka at {servers}"),
            level=lambda failures: logging.INFO,
        )  # the caller's error says it, once
    except GaveUp as exc:
        raise KafkaUnavailable(
            f"Kafka at {servers} is not reachable ({exc.__cause__}); "
            "start it (is-telemetry broker) or fix kafka.bootstrap_servers"
        ) from exc.__cause__
    try:
        _create_missing(admin, settings, topic_names(settings))
    finally:
        admin.close()


def _create_missing(admin: KafkaAdminClient, settings: Settings, names: list[str]) -> None:
    existing = set(admin.list_topics())
    k = settings.kafka
    new = [NewTopic(n, num_partitions=k.partitions, replication_factor=k.replication_factor) for n in names]
    new = [t for t in new if t.name not in existing]
    if new:
        try:
            admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        log.info("created topics %s", [t.name for t in new])


def _quick_admin(settings: Settings) -> KafkaAdminClient:
    """An admin client that fails at once (KafkaError) when Kafka does not answer: for callers that try again later."""
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="is-telemetry-admin", request_timeout_ms=10_000
    )


def create_topics(settings: Settings, names: list[str]) -> None:
    """Create `names` with the configured partitions and replication if they do not exist; KafkaError if Kafka does
    not answer (ensure_topics waits for it instead)."""
    admin = _quick_admin(settings)
    try:
        _create_missing(admin, settings, names)
    finally:
        admin.close()


def delete_topics(settings: Settings, names: list[str]) -> None:
    """Delete `names` (those already gone are no error); KafkaError if Kafka does not answer."""
    admin = _quick_admin(settings)
    try:
        try:
            admin.delete_topics(names)
        except UnknownTopicOrPartitionError:
            pass
    finally:
        admin.close()


def make_producer(bootstrap_servers: str, **overrides: object) -> KafkaProducer:
    """A durable producer: acks=all, retries, small linger for batching under concurrency."""
    config: dict[str, object] = dict(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        retries=5,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
        client_id="is-telemetry",
        # kafka-python 3 turns idempotence on by default; Tansu answers InitProducerId with UnknownError after a
        # restart and the producer then fails every send. Duplicates are harmless downstream (dedup + snapshots).
        enable_idempotence=False,
    )
    config.update(overrides)
    return KafkaProducer(**config)


def headers(received_at_ms: int, source: str, user_agent: str = "", body_length: int = 0) -> list[tuple[str, bytes]]:
    return [
        (HEADER_RECEIVED_AT, str(received_at_ms).encode()),
        (HEADER_SOURCE, source.encode()),
        (HEADER_USER_AGENT, user_agent.encode("utf-8", "replace")),
        (HEADER_BODY_LENGTH, str(body_length).encode()),
    ]


def topic_partitions(settings: Settings, topic: str) -> int:
    """The partition count of `topic` (from the brokers' metadata)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="is-telemetry-admin")
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    if not described or not described[0].get("partitions"):
        raise KafkaUnavailable(f"topic {topic} has no partitions at {settings.bootstrap_servers}")
    return len(described[0]["partitions"])


def close_producer(producer: KafkaProducer, timeout_s: float, expire_s: float) -> bool:
    """Close a producer, flushing for up to timeout_s; True if every record was settled in that time.

    kafka-python's close() raises (from its flush) while records are still waiting for a broker that is gone.
    Such records fail by themselves after the producer's delivery_timeout_ms, so a second close() waits up to
    expire_s (the delivery timeout, or more) for that and then stops the I/O thread. Public API only.
    """
    try:
        producer.close(timeout_s)
        return True
    except KafkaError as exc:
        log.warning(
            "Kafka producer did not flush within %.1fs (%s); waiting up to %.1fs for its records to expire "
            "(their requests were answered 503)",
            timeout_s,
            exc,
            expire_s,
        )
    try:
        producer.close(expire_s)
    except KafkaError as exc:  # the sender thread is a daemon: it cannot keep the process alive
        log.warning("Kafka producer still not closed after %.1fs more (%s); leaving it", expire_s, exc)
    return False


def broker_answers(bootstrap_servers: str, timeout_s: float, client_id: str = "is-telemetry-probe") -> bool:
    """True when a broker at bootstrap_servers answers the Kafka protocol within about timeout_s. Blocking.

    A throwaway KafkaProducer's bootstrap (connect, ApiVersions, Metadata) through the public API: a new connection
    each time, so a broker restarted on the same address is seen at once. (A KafkaAdminClient whose bootstrap fails
    leaves its I/O thread behind; a producer does not.) About 5 ms of CPU when the broker answers.
    """
    timeout_ms = max(100, int(timeout_s * 1000))
    try:
        probe = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_idempotence=False,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError) as exc:
        log.debug("Kafka at %s does not answer: %r", bootstrap_servers, exc)
        return False
    probe.close(0)  # nothing was sent: nothing to flush
    return True


def member_client_id(role: str, pid: int | None = None) -> str:
    """The client id of a worker's (or a sink's) Kafka clients: it names the host and the process. Kafka, and Tansu,
    begin every member id of a consumer group with the member's client id, so the members of a process that died can
    be told apart (`remove_members`)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "host"
    return f"is-telemetry-{role}-{host}-{os.getpid() if pid is None else pid}"


async def _member_ids(bootstrap_servers: str, group_id: str, timeout_s: float) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    # aiokafka's describe, not kafka-python's: that one fails on Tansu's answer (its authorized operations)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="is-telemetry-admin", request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    ids: list[str] = []
    for response in responses:
        for group in response.to_object().get("groups", []):
            ids += [str(m["member_id"]) for m in group.get("members", []) if m.get("member_id")]
    return ids


def remove_members(bootstrap_servers: str, group_id: str, client_id: str, timeout_s: float = 3.0) -> list[str]:
    """Remove from the consumer group every member of the process whose client id is `client_id` (a process that is
    gone: its member would hold its partitions until its session times out). Kafka accepts such a LeaveGroup from
    any client. Returns the member ids removed; raises KafkaError (kafka-python) or OSError if Kafka does not answer.

    Blocking; not to be called from a running event loop."""
    from kafka.admin import MemberToRemove

    members = asyncio.run(asyncio.wait_for(_member_ids(bootstrap_servers, group_id, timeout_s), timeout_s * 2))
    gone = [m for m in members if m.startswith(client_id + "-")]
    if not gone:
        return []
    admin: Any = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="is-telemetry-admin", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        admin.remove_group_members(group_id, [MemberToRemove(member_id=m) for m in gone])
    finally:
        admin.close()
    return gone


def leave_static(bootstrap_servers: str, group_id: str, instance_id: str, timeout_s: float = 3.0) -> None:
    """Take a static member (group.instance.id) out of its group now: on a graceful stop, so that its partitions
    move at once (a static member that simply stops keeps them until its session times out; one that crashes keeps
    them for its replacement, which is the point). Raises KafkaError or OSError if Kafka does not answer."""
    from kafka.admin import MemberToRemove

    admin: Any = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="is-telemetry-admin", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        admin.remove_group_members(group_id, [MemberToRemove(group_instance_id=instance_id)])
    finally:
        admin.close()

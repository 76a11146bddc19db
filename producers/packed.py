"""Bodies straight to Kafka many to a record, as the collector batches them (core/envelope.py).

    send_packed(deliveries, bootstrap_servers, topic, bodies_per_record=100) -> bodies acknowledged

Each body goes to the partition Kafka's default partitioner gives its key (its UID), in order; up to
`bodies_per_record` consecutive bodies of one partition share a record. Bodies without a key (malformed ones)
go alone, as single-body records. Used by the processors bench (bench/bench_processors.py) and the exactness
tests: a month of history in a few hundred records instead of thousands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from core.envelope import BATCH_FORMAT, HEADER_FORMAT, Frame, pack
from core.errors import KafkaUnavailable
from core.kafka import HEADER_SOURCE, headers, make_producer
from core.partitioning import partition_of


class Delivery(Protocol):
    received_at_ms: int
    key: bytes | None
    body: bytes


def send_packed(
    deliveries: Sequence[Delivery],
    bootstrap_servers: str,
    topic: str,
    bodies_per_record: int = 100,
    source: str = "simulator",
    user_agent: Callable[[bytes], str] = lambda body: "",
    progress: Callable[[int, int], None] | None = None,
    pack_keyless: bool = False,
    **producer_overrides: Any,
) -> int:
    """Produce `deliveries` packed per partition; returns the number of bodies acknowledged (raises on failure).
    `pack_keyless`: bodies without a key are packed too (into the partitions in turn) instead of sent alone."""
    producer = make_producer(
        bootstrap_servers,
        **{"max_in_flight_requests_per_connection": 1, "client_id": f"is-telemetry-{source}", **producer_overrides},
    )
    try:
        n = len(producer.partitions_for(topic) or ())
        if not n:
            raise KafkaUnavailable(f"topic {topic} has no partitions at {bootstrap_servers}")
        pending: dict[int, list[Frame]] = {}
        futures: list[tuple[Any, int]] = []
        sent = 0

        def flush(partition: int) -> None:
            frames = pending.pop(partition, [])
            if frames:
                hdrs = [
                    (HEADER_FORMAT, BATCH_FORMAT),
                    (HEADER_SOURCE, source.encode()),
                    ("bodies", str(len(frames)).encode()),
                ]
                futures.append(
                    (
                        producer.send(
                            topic,
                            value=pack(frames),
                            partition=partition,
                            headers=hdrs,
                            timestamp_ms=frames[0].received_at_ms,
                        ),
                        len(frames),
                    )
                )

        for i, d in enumerate(deliveries):
            ua = user_agent(d.body)
            if d.key is None and not pack_keyless:
                futures.append(
                    (
                        producer.send(
                            topic,
                            value=d.body,
                            timestamp_ms=d.received_at_ms,
                            headers=headers(d.received_at_ms, source, ua, len(d.body)),
                        ),
                        1,
                    )
                )
                continue
            p = partition_of(d.key, n) if d.key is not None else i % n
            frames = pending.setdefault(p, [])
            frames.append(Frame(d.received_at_ms, ua.encode("utf-8", "replace"), d.body))
            if len(frames) >= bodies_per_record:
                flush(p)
        for p in list(pending):
            flush(p)
        producer.flush(timeout=120)
        for future, bodies in futures:
            future.get(timeout=60)  # raises the send's error
            sent += bodies
            if progress is not None:
                progress(sent, len(deliveries))
        return sent
    finally:
        producer.close(timeout=5)

"""The collector's Kafka producer settings, from its configuration (docs/collector.md, "Kafka producer")."""

from __future__ import annotations

from core.config import Settings


def _timeouts_ms(settings: Settings) -> tuple[int, int]:
    """(publish, request) timeouts in ms."""
    publish_ms = max(1, int(settings.collector.publish_timeout_s * 1000))
    return publish_ms, max(1000, min(10_000, publish_ms))


def delivery_timeout_ms(settings: Settings) -> int:
    """How long the producer keeps a record it could not deliver: about when its request was answered 503."""
    publish_ms, request_ms = _timeouts_ms(settings)
    return max(publish_ms, request_ms + 1000)


def producer_overrides(settings: Settings) -> dict[str, object]:
    """make_producer overrides for the collector (see docs/collector.md, "Kafka producer")."""
    publish_ms, request_ms = _timeouts_ms(settings)
    return dict(
        client_id="is-telemetry-collector",
        # kafka-python 3 turns idempotence on by default; after a broker restart the idempotent producer
        # can end in a fatal state (Tansu answers InitProducerId with UnknownError) and never publish again.
        # Duplicates from retries are harmless: the processors deduplicate.
        enable_idempotence=False,
        max_block_ms=max(1000, publish_ms),  # metadata waits (only ever on the send thread pool)
        request_timeout_ms=request_ms,
        delivery_timeout_ms=delivery_timeout_ms(settings),  # give up on a record about when we answer 503
        reconnect_backoff_max_ms=1000,  # reconnect quickly after a broker restart
        bootstrap_timeout_ms=5000,
    )

"""The two ways the producer sends a message: POST to the telemetry target as TTS does (`HttpSender`), or publish
on the raw topic as the collector would (`KafkaSender`). A failed send raises `SendFailed`, saying whether to retry."""

from __future__ import annotations

import time
from typing import Any

from core.errors import TelemetryError
from producers.identity_server.host import user_agent
from producers.identity_server.logs import log, one_line

SOURCE = "identity-server"  # value of the `source` record header
HTTP_TIMEOUT_S = 10.0  # TTS's IS client timeout
KAFKA_SEND_TIMEOUT_S = 15.0
KAFKA_CONNECT_TIMEOUT_MS = 10_000  # first broker contact (kafka-python's default is 30 s)


class SendFailed(TelemetryError):
    """A send attempt failed; `retry` says whether trying again can help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class HttpSender:
    """POST the body to the telemetry target as TTS does (no path appended)."""

    def __init__(self, target: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        import httpx

        self.target = target
        self.description = target
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=True)

    def send(self, uid: str, body: bytes) -> str:
        import httpx

        try:
            resp = self._client.post(
                self.target,
                content=body,
                headers={"Content-Type": "application/json", "User-Agent": user_agent()},
            )
        except httpx.HTTPError as exc:
            raise SendFailed(f"target unreachable at {self.target}: {one_line(exc) or type(exc).__name__}") from exc
        status = resp.status_code
        if 200 <= status < 300:
            return f"HTTP {status}"
        detail = one_line(resp.text)[:200]
        if status >= 500 or status in (408, 425, 429):
            raise SendFailed(f"target at {self.target} answered HTTP {status}: {detail}")
        raise SendFailed(f"target at {self.target} refused the message with HTTP {status}: {detail}", retry=False)

    def close(self) -> None:
        self._client.close()


class KafkaSender:
    """Publish on Kafka like the collector: key = UID, acks=all, record headers, timestamp = received_at_ms."""

    def __init__(self, bootstrap_servers: str, topic: str, connect_timeout_ms: int = KAFKA_CONNECT_TIMEOUT_MS) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.connect_timeout_ms = connect_timeout_ms
        self.topic = topic
        self.description = f"kafka {bootstrap_servers} topic {topic}"
        self._producer: Any = None
        self._topic_checked = False

    def _connect(self) -> Any:
        if self._producer is None:
            from kafka.errors import KafkaError

            from core.kafka import make_producer

            try:
                self._producer = make_producer(
                    self.bootstrap_servers,
                    acks="all",
                    client_id="is-telemetry-produce",
                    bootstrap_timeout_ms=self.connect_timeout_ms,
                )
            except (KafkaError, OSError, ValueError) as exc:
                raise SendFailed(
                    f"kafka unreachable at {self.bootstrap_servers}: {one_line(exc) or type(exc).__name__}"
                ) from exc
        if not self._topic_checked:
            self._ensure_topic()
        return self._producer

    def _ensure_topic(self) -> None:
        """Create the pipeline's topics if missing (best effort: a producer may lack the rights)."""
        from core.config import KafkaSettings, Settings, load_settings
        from core.kafka import ensure_topics

        try:
            settings = load_settings(kafka={"bootstrap_servers": self.bootstrap_servers, "raw_topic": self.topic})
        except Exception:  # noqa: BLE001 - the pipeline's config is optional here
            settings = Settings(kafka=KafkaSettings(bootstrap_servers=self.bootstrap_servers, raw_topic=self.topic))
        try:
            ensure_topics(settings, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "could not check/create topic %s on %s (%s); sending anyway",
                self.topic,
                self.bootstrap_servers,
                one_line(exc),
            )
        self._topic_checked = True

    def send(self, uid: str, body: bytes) -> str:
        from kafka.errors import KafkaError

        from core.kafka import headers

        producer = self._connect()
        received_at_ms = int(time.time() * 1000)
        try:
            future = producer.send(
                self.topic,
                value=body,
                key=uid.encode("ascii"),
                headers=headers(
                    received_at_ms=received_at_ms, source=SOURCE, user_agent=user_agent(), body_length=len(body)
                ),
                timestamp_ms=received_at_ms,
            )
            meta = future.get(timeout=KAFKA_SEND_TIMEOUT_S)
        except (KafkaError, OSError) as exc:
            self._drop_producer()
            raise SendFailed(
                f"kafka unreachable at {self.bootstrap_servers}: {one_line(exc) or type(exc).__name__}"
            ) from exc
        return f"partition {meta.partition} offset {meta.offset}"

    def _drop_producer(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            try:
                p.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            try:
                p.flush(timeout=10)
            finally:
                p.close(timeout=5)

"""The collector's ASGI app: `POST /collect`, `/healthz`, `/readyz`, `/metrics`, one-line JSON errors
(core/httperrors.py), and `up`'s commands (core/control.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from core import control
from core.config import Settings
from core.errors import RequestRefused, UnsupportedMediaType
from core.generations import number_of
from core.httpedge import read_body
from core.httperrors import JSON, error_response, refusal
from producers.client_limits import ClientLimits, Throttled
from producers.collector.metrics import Instrument, Metrics
from producers.collector.publisher import RETRY_AFTER_S, Publisher

log = logging.getLogger(__name__)

COLLECT_PATH = "/collect"
ENDPOINTS = frozenset({COLLECT_PATH, "/healthz", "/readyz", "/metrics"})
USER_AGENT_MAX = 512  # longer User-Agent values are truncated before they go into a record header

_ACCEPTED = b'{"status":"accepted"}'


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = {
        404: f"no such endpoint: {request.url.path} (telemetry goes to POST {COLLECT_PATH})",
        405: f"method {request.method} not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error")


def _check_media_type(content_type: str | None) -> None:
    """TTS sends `application/json`. Parameters (charset) are ignored; a missing header is accepted."""
    if not content_type or not content_type.strip():
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {content_type[:100]!r}")


def _key_of(body: bytes) -> bytes | None:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(f"body is not JSON: {exc}"[:300], code="not_json") from None
    if isinstance(message, dict):
        uid = message.get("uid")
        if isinstance(uid, str):
            return uid.encode("utf-8", "surrogatepass")
    return None


def create_app(
    settings: Settings, producer: Any = None, ledger_dir: Path | None = None, control_fd: int | None = None
) -> Starlette:
    """The collector ASGI app. With producer=None the lifespan creates one (make_producer) and closes it
    on shutdown; an injected producer is flushed on shutdown but left open (its owner closes it).
    `ledger_dir`: where to record what Kafka acknowledged; `control_fd`: the read end of `up`'s command pipe
    (core/control.py), by which it moves the collector to another generation of the raw topic."""
    metrics = Metrics()
    publisher = Publisher(settings, producer, metrics, ledger_dir)
    limit = settings.collector.max_body_bytes
    limits = ClientLimits(settings.collector)
    metrics.tracked_clients.set_function(lambda: limits.budget.clients)
    metrics.tracked_uids.set_function(lambda: limits.budget.uids)
    metrics.request_clients.set_function(lambda: limits.requests.clients)

    async def collect(request: Request) -> Response:
        received_at_ms = time.time_ns() // 1_000_000  # receive time, UTC Unix ms, before reading the body
        peer = request.client.host if request.client is not None else None
        client = limits.client(peer, request.headers.getlist("x-forwarded-for"))
        try:
            limits.take_request(client)  # every request, whatever follows: 429 before its body is read
            _check_media_type(request.headers.get("content-type"))
            body = await read_body(request, limit)  # 408 at collector.request_timeout_s
            metrics.body_bytes.observe(len(body))
            limits.take_bytes(client, len(body))  # every body read, whatever it holds
            if not body:
                raise RequestRefused("the body is empty; expected a JSON telemetry message", code="empty_body")
            key = _key_of(body)
            user_agent = request.headers.get("user-agent", "")[:USER_AGENT_MAX]
            verdict = limits.verdict(client, key, received_at_ms)
            if verdict.limited:
                metrics.count_limited(verdict)
            await publisher.publish(body, key, received_at_ms, user_agent, verdict.limited)
        except Throttled as t:  # flood: answered, counted, never stored
            metrics.count_throttled(t.cause)
            return refusal(t)
        except RequestRefused as r:
            return refusal(r)
        except ClientDisconnect:
            return Response(status_code=499)  # never delivered: the client is gone; counted in metrics
        return Response(_ACCEPTED, status_code=202, media_type=JSON)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(request: Request) -> Response:
        if await publisher.ready():
            return Response(b'{"status":"ready"}', media_type=JSON)
        reason = (
            "the Kafka producer is not connected"
            if publisher.producer is None
            else f"Kafka at {settings.bootstrap_servers} does not answer"
        )
        return error_response(503, "kafka_unavailable", reason, {"Retry-After": str(RETRY_AFTER_S)})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        if control_fd is not None:
            follow_commands(control_fd, publisher, settings)
        try:
            yield
        finally:
            await publisher.stop()

    app = Starlette(
        routes=[
            Route(COLLECT_PATH, collect, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        middleware=[Middleware(Instrument, metrics=metrics, endpoints=ENDPOINTS)],
        exception_handlers={HTTPException: _http_exception, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # /collect/ is a 404, not a redirect
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.publisher = publisher
    return app


def follow_commands(fd: int, publisher: Publisher, settings: Settings) -> None:
    """`up`'s commands (core/control.py): {"raw_topic": NAME} moves publishing to that generation of the raw
    topic (only a generation of the configured one is accepted)."""
    loop = asyncio.get_running_loop()

    def on_command(command: dict[str, str]) -> None:
        topic = command.get("raw_topic", "")
        if set(command) != {"raw_topic"} or number_of(settings, topic) is None:
            log.warning("ignored a control command other than a generation of %s", settings.kafka.raw_topic)
            return
        asyncio.run_coroutine_threadsafe(publisher.switch_topic(topic), loop)

    control.listen(fd, on_command)

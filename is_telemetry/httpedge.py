"""Bounds at the HTTP edge, shared by the collector and the API: what a client costs before the app sees it.

uvicorn accepts a protocol class (`uvicorn.Config(http=...)`); `guarded_protocol(limits)` returns its
httptools protocol with three bounds added:
- **header timeout**: a request line and headers must arrive within `header_timeout_s` of the connection
  (or of the first byte of a later request on it); otherwise 408 and close (slow-header clients);
- **header size**: more than `max_header_bytes` before the end of the headers is answered 431 and closed,
  without buffering the rest;
- **connection cap**: at most `max_connections` open connections per process (kept below the file-descriptor
  limit, so the process never runs out of descriptors). Past it, the connection that has waited longest
  without a request in progress is closed to make room; if every connection has a request in progress, the
  new one gets 503 + Retry-After and is closed.

`read_body` reads a request body with a size limit checked while reading and a time limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from is_telemetry.errors import PayloadTooLarge, RequestRefused, RequestTimeout

log = logging.getLogger(__name__)

#: Descriptors kept free for everything else a process opens (ClickHouse parts, Kafka, logs): a quarter of the
#: limit, at least this many.
FD_RESERVE_MIN = 128


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1024


def raise_fd_limit() -> int:
    """Raise this process's soft file-descriptor limit to its hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(configured: int, fd_limit: int | None = None) -> int:
    """`configured`, lowered so that open connections leave a quarter of the descriptors (at least 128) free."""
    limit = raise_fd_limit() if fd_limit is None else fd_limit
    reserve = max(FD_RESERVE_MIN, limit // 4)
    cap = max(8, min(configured, limit - reserve))
    if cap < configured:
        log.warning(
            "max_connections lowered from %d to %d: the file-descriptor limit is %d (ulimit -n)", configured, cap, limit
        )
    return cap


def _raw_response(status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    body = b'{"error":"http_%d","message":"%s"}' % (status, message.encode("ascii"))
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"connection: close\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    head += [name + b": " + value + b"\r\n" for name, value in extra]
    return b"".join(head) + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a header size limit and a connection cap."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers = True  # no request in progress: waiting for the next request line and headers
        self._header_bytes = 0
        self._waiting_since = time.monotonic()
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.limits.header_timeout_s, self._on_header_timeout
        )
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            log.warning(
                "connection limit %d reached and every connection has a request in progress: new connections get 503",
                self.limits.max_connections,
            )
            self._refuse(503, "too many connections, retry later", ((b"retry-after", b"1"),))

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest without a request in progress; False if there is none."""
        victim: GuardedHttpToolsProtocol | None = None
        for c in self.connections:
            if c is self or not isinstance(c, GuardedHttpToolsProtocol) or not c._awaiting_headers:
                continue
            if c.cycle is not None and not c.cycle.response_complete:
                continue
            if victim is None or c._waiting_since < victim._waiting_since:
                victim = c
        if victim is None:
            return False
        log.warning(
            "connection limit %d reached: closing the connection idle the longest to make room",
            self.limits.max_connections,
        )
        victim._cancel_header_timer()
        victim.connections.discard(victim)
        victim.transport.close()
        return True

    def _refuse(self, status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self._cancel_header_timer()
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, message, extra))
            self.transport.close()

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(408, f"request headers not received within {self.limits.header_timeout_s:g}s")

    def data_received(self, data: bytes) -> None:
        while data and self._awaiting_headers and not self.transport.is_closing():
            if self._header_timer is None:  # the first byte of a request on a kept-alive connection
                self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._on_header_timeout)
            allowance = self.limits.max_header_bytes - self._header_bytes
            if allowance <= 0:
                self._refuse(431, f"request line and headers exceed {self.limits.max_header_bytes} bytes")
                return
            chunk, data = data[:allowance], data[allowance:]
            self._header_bytes += len(chunk)
            super().data_received(chunk)
        if data and not self.transport.is_closing():
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True  # what follows is the next request
        self._header_bytes = 0
        self._waiting_since = time.monotonic()


def guarded_protocol(limits: EdgeLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` bound to `limits`."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def edge_limits(section: Any) -> EdgeLimits:
    """EdgeLimits from a config section with header_timeout_s / max_header_bytes / max_connections."""
    return EdgeLimits(section.header_timeout_s, section.max_header_bytes, connection_cap(section.max_connections))


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (announced or received) and with
    408 if it has not fully arrived within `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestRefused("Content-Length is not a number", code="bad_content_length") from None
        if length > limit:
            raise PayloadTooLarge(
                f"body of {length} bytes exceeds the limit of {limit} bytes",
                code="body_too_large",
                headers={"Connection": "close"},
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"body exceeds the limit of {limit} bytes",
                        code="body_too_large",
                        headers={"Connection": "close"},
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"body not received within {timeout_s:g}s", headers={"Connection": "close"}) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def server_config(
    app: Any, host: str, port: int, limits: EdgeLimits, log_level: str = "warning", **overrides: Any
) -> uvicorn.Config:
    """uvicorn settings every server here uses: the guarded protocol, no access log (client addresses are not
    kept), no Server header, logging left to the process (so the repeat filter applies to uvicorn's lines)."""
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        http=guarded_protocol(limits),
        log_level=log_level.lower(),
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)

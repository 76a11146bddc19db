"""Bounds at the HTTP edge, shared by the collector and the API: what a client costs before the app sees it.

uvicorn accepts a protocol class (`uvicorn.Config(http=...)`); `guarded_protocol(limits)` returns its
httptools protocol with these bounds added. They hold for every route and every status, whether or not the
application reads the body:
- **header timeout**: a request line and headers must arrive within `header_timeout_s` of the connection
  (or of the first byte of a later request on it); otherwise 408 and close (slow-header clients);
- **request deadline**: a whole request (line, headers and body) must arrive within `request_timeout_s` of its
  first byte. Past it: 408 and close if it was not answered yet, else close. A body the application answered
  without reading (a 404, 405 or 415, /healthz) is read and thrown away after the answer within that same
  deadline, so that a kept-alive client can send its next request; a body that never ends ends the connection.
  The time the application takes to answer a fully received request is not bounded here (its own limits are);
- **header size**: more than `max_header_bytes` before the end of the headers is answered 431 and closed,
  without buffering the rest;
- **connection cap**: at most `max_connections` open connections per process (kept below the file-descriptor
  limit, so the process never runs out of descriptors). Past it, a new connection makes room by closing, first,
  a connection whose request was answered and whose unread body is still arriving; else one idle (or still
  sending headers) for at least `SLOW_BODY_GRACE_S` (the one waiting longest); else a request whose body is slow:
  behind a pace of `SLOW_BODY_RATE` bytes per second that starts `SLOW_BODY_GRACE_S` after its headers (the fewest
  bytes per second first; answered 408); else one idle for less than that (a new client about to send). A
  request in a normal exchange (its body arriving at a normal pace, or received in full and being answered) is
  never closed for room: when every connection holds one, the new connection gets 503 + Retry-After and is closed.

`read_body` reads a request body with a size limit checked while reading, and answers 408 (its own, with the
application's error body) at the request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import resource
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
#: A body counts as slow once it is behind a pace of SLOW_BODY_RATE bytes per second that starts SLOW_BODY_GRACE_S
#: after its headers (a normal body follows its headers within a round trip, at many times that rate). When the
#: connection cap is reached, the slow body with the fewest bytes per second is closed to make room.
SLOW_BODY_RATE = 4096
SLOW_BODY_GRACE_S = 0.25
#: After a request's deadline the application gets this long to answer its own 408 (`read_body`) before the
#: protocol answers it.
APP_ANSWER_S = 0.5
#: Key of `scope["extensions"]` holding the request's `Deadline`.
DEADLINE_KEY = "is_telemetry.request_deadline"

# Who is closed first when the connection cap is reached (lowest first).
_ANSWERED, _IDLE, _SLOW_BODY, _JUST_OPENED = 0, 1, 2, 3
_EVICTED = {
    _ANSWERED: "a connection whose request was answered but whose body is still arriving",
    _IDLE: "the connection idle the longest",
    _SLOW_BODY: "the slowest request body",
    _JUST_OPENED: "the connection idle the longest",
}


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1024
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class Deadline:
    """When a request must have fully arrived: `at` in event-loop time (`loop.time()`), `timeout_s` after its first
    byte."""

    at: float
    timeout_s: float


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


def _raw_response(status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = (), code: str = "") -> bytes:
    body = b'{"error":"%s","message":"%s"}' % ((code or f"http_{status}").encode("ascii"), message.encode("ascii"))
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"connection: close\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    head += [name + b": " + value + b"\r\n" for name, value in extra]
    return b"".join(head) + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a request deadline, a header size limit and a connection
    cap that closes idle and slow connections first."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        self._awaiting_headers = True  # no request past its headers: waiting for a request line and headers
        self._header_bytes = 0
        self._waiting_since = now
        self._header_deadline: float | None = now + self.limits.header_timeout_s  # None between requests
        self._request_deadline: float | None = None  # from a request's first byte until it has fully arrived
        self._body_since = now  # when the current request's headers were complete
        self._body_bytes = 0  # of its body received since
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._rearm()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            log.warning(
                "connection limit %d reached and every connection has a request in progress: new connections get 503",
                self.limits.max_connections,
            )
            self._refuse(503, "too many connections, retry later", ((b"retry-after", b"1"),))

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    # -- the connection cap ----------------------------------------------------------------------------------

    def _eviction_rank(self, now: float) -> tuple[int, float, float] | None:
        """Where this connection stands in the line to be closed for room (lowest first); None: never."""
        cycle = self.cycle
        if self._awaiting_headers:
            if cycle is not None and not cycle.response_complete:
                return None  # its request is being answered
            # idle for less than the grace, it is likely a new client about to send its request: after slow bodies
            tier = _IDLE if now - self._waiting_since >= SLOW_BODY_GRACE_S else _JUST_OPENED
            return (tier, self._waiting_since, 0.0)
        if cycle is None:
            return None
        if cycle.response_complete:
            return (_ANSWERED, self._body_since, 0.0)
        elapsed = now - self._body_since
        if cycle.response_started or self._body_bytes >= SLOW_BODY_RATE * (elapsed - SLOW_BODY_GRACE_S):
            return None
        return (_SLOW_BODY, self._body_bytes / elapsed, self._body_since)

    def _make_room(self) -> bool:
        """Close the connection first in line to make room (see the module's docstring); False if there is none."""
        now = self.loop.time()
        victim: GuardedHttpToolsProtocol | None = None
        best: tuple[int, float, float] | None = None
        for c in self.connections:
            if c is self or not isinstance(c, GuardedHttpToolsProtocol) or c.transport.is_closing():
                continue
            rank = c._eviction_rank(now)
            if rank is not None and (best is None or rank < best):
                victim, best = c, rank
        if victim is None or best is None:
            return False
        log.warning(
            "connection limit %d reached: closed %s to make room", self.limits.max_connections, _EVICTED[best[0]]
        )
        if best[0] == _SLOW_BODY:
            victim._refuse(
                408, "request body too slow: closed to make room for other clients", code=RequestTimeout.code
            )
        else:
            victim._end(None)
        return True

    # -- ending a connection ---------------------------------------------------------------------------------

    def _end(self, answer: bytes | None) -> None:
        """Write `answer` (if any) and close; an application still working on this request gets a disconnect and
        its own answer is dropped."""
        self._cancel_timer()
        self.connections.discard(self)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if not self.transport.is_closing():
            if answer is not None:
                self.transport.write(answer)
            self.transport.close()

    def _refuse(self, status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = (), code: str = "") -> None:
        self._end(_raw_response(status, message, extra, code))

    # -- the header timeout and the request deadline: one timer ------------------------------------------------

    def _rearm(self) -> None:
        """Arm this connection's timer at the bound that applies in its current state (none between requests,
        nor while a fully received request is being answered)."""
        if self.transport.is_closing():
            return
        at: float | None
        if self._awaiting_headers:
            at = self._header_deadline
            if at is not None and self._request_deadline is not None:
                at = min(at, self._request_deadline)
        else:
            answered = self.cycle is not None and self.cycle.response_complete
            grace = 0.0 if answered else APP_ANSWER_S
            at = None if self._request_deadline is None else self._request_deadline + grace
        if at == self._timer_at:
            return
        self._cancel_timer()
        if at is not None:
            self._timer, self._timer_at = self.loop.call_at(at, self._on_timer), at

    def _cancel_timer(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        self._timer = self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self.transport.is_closing():
            return
        header_deadline, request_deadline = self._header_deadline, self._request_deadline
        if self._awaiting_headers:
            if header_deadline is not None and (request_deadline is None or header_deadline <= request_deadline):
                message = f"request headers not received within {self.limits.header_timeout_s:g}s"
                self._refuse(408, message, code=RequestTimeout.code)
                return
        elif self.cycle is not None and self.cycle.response_started:
            self._end(None)  # answered already, but its body has not all arrived
            return
        message = f"request not received within {self.limits.request_timeout_s:g}s"
        self._refuse(408, message, code=RequestTimeout.code)

    # -- the parser's callbacks ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        while data and self._awaiting_headers and not self.transport.is_closing():
            allowance = self.limits.max_header_bytes - self._header_bytes
            if allowance <= 0:
                self._refuse(431, f"request line and headers exceed {self.limits.max_header_bytes} bytes")
                return
            chunk, data = data[:allowance], data[allowance:]
            self._header_bytes += len(chunk)
            super().data_received(chunk)
        if data and not self.transport.is_closing():
            super().data_received(data)
        self._rearm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        now = self.loop.time()
        if self._header_deadline is None:  # a later request on a kept-alive connection
            self._header_deadline = now + self.limits.header_timeout_s
        self._request_deadline = now + self.limits.request_timeout_s

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_deadline = None
        self._body_since, self._body_bytes = self.loop.time(), 0
        if self._request_deadline is not None:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[DEADLINE_KEY] = Deadline(self._request_deadline, self.limits.request_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True  # what follows is the next request
        self._header_bytes = 0
        self._request_deadline = None
        self._waiting_since = self.loop.time()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = self.loop.time()  # idle from now on, once its request has fully arrived
        self._rearm()  # if it has not: its unread body is thrown away until the deadline, not later


def guarded_protocol(limits: EdgeLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` bound to `limits`."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def edge_limits(section: Any) -> EdgeLimits:
    """EdgeLimits from a config section with header_timeout_s / max_header_bytes / max_connections /
    request_timeout_s."""
    return EdgeLimits(
        section.header_timeout_s,
        section.max_header_bytes,
        connection_cap(section.max_connections),
        section.request_timeout_s,
    )


def request_deadline(request: Request) -> Deadline | None:
    """The request's deadline, set by the guarded protocol (None when served without it, e.g. by a test client)."""
    deadline = request.scope.get("extensions", {}).get(DEADLINE_KEY)
    return deadline if isinstance(deadline, Deadline) else None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (announced or received) and with
    408 if it has not fully arrived by the request's deadline (`request_deadline`; without one, no time limit)."""
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
    deadline = request_deadline(request)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline.at if deadline is not None else None):
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
        assert deadline is not None
        raise RequestTimeout(
            f"request not received within {deadline.timeout_s:g}s", headers={"Connection": "close"}
        ) from None
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

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
- **chunked framing**: in a chunked body, what is not body (chunk-size lines with their extensions, and the
  trailer section) counts like headers: a run of more than `max_header_bytes` of it without a body byte is
  answered 431 and closed (a run of up to half that always passes: it is measured a piece at a time). Trailer
  fields are never passed to the application. `Transfer-Encoding` must be `chunked` or absent: any other coding
  (`gzip, chunked` included, which a proxy may read otherwise) is answered 501 and closed;
- **pipelining and unread answers**: the bytes of a connection are parsed a request at a time, and only while
  no request waits behind the one being answered (uvicorn's flow control; at most `PIPELINE_DEPTH` ever wait) and
  the client reads its answers (no more than `WRITE_BUFFER_BYTES` waiting to be sent). Otherwise nothing more is
  read from the connection (what was received is held: one read at most) until that is no longer so; a
  connection whose answers wait unread for `request_timeout_s` is closed. A closed connection gets
  `request_timeout_s` to send what it still has to send, then it is aborted;
- **connection cap**: at most `max_connections` open connections per process (kept below the file-descriptor
  limit, so the process never runs out of descriptors). Past it, a new connection makes room by closing, first,
  a connection whose request was answered and whose unread body is still arriving; else one idle (or still
  sending headers) for at least `SLOW_BODY_GRACE_S` (the one waiting longest); else one whose answers have waited
  unread for at least that long (the longest first); else a request whose body is slow: behind a pace of
  `SLOW_BODY_RATE` bytes per second that starts `SLOW_BODY_GRACE_S` after its headers (the fewest bytes per second
  first; answered 408); else one idle for less than that (a new client about to send). A request in a normal
  exchange (its body arriving at a normal pace, or received in full and being answered to a client that reads)
  is never closed for room: when every connection holds one, the new connection gets 503 + Retry-After and is
  closed.

`read_body` reads a request body with a size limit checked while reading, and answers 408 (its own, with the
application's error body) at the request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from core.errors import PayloadTooLarge, RequestRefused, RequestTimeout
from core.httperrors import error_body

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
#: Requests received on one connection and waiting behind the one being answered (HTTP pipelining); with this many
#: waiting, nothing more is read from the connection until one has been answered.
PIPELINE_DEPTH = 4
#: Answers waiting in one connection's write buffer (the transport's high-water mark): past it the client is not
#: reading them, and nothing more is read from it until it does.
WRITE_BUFFER_BYTES = 64 * 1024

# Who is closed first when the connection cap is reached (lowest first).
_ANSWERED, _IDLE, _STALLED, _SLOW_BODY, _JUST_OPENED = 0, 1, 2, 3, 4
_EVICTED = {
    _ANSWERED: "a connection whose request was answered but whose body is still arriving",
    _IDLE: "the connection idle the longest",
    _STALLED: "the connection whose answers have not been read the longest",
    _SLOW_BODY: "the slowest request body",
    _JUST_OPENED: "the connection idle the longest",
}
# What the connection's timer is armed for.
_LINGER, _STALL, _HEADERS, _REQUEST = 0, 1, 2, 3


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
    body = error_body(RequestRefused(message, status=status, code=code or f"http_{status}"))
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"connection: close\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    head += [name + b": " + value + b"\r\n" for name, value in extra]
    return b"".join(head) + b"\r\n" + body


class _EdgeFlow(FlowControl):
    """uvicorn's flow control, except that it never resumes reading itself: the protocol does, once it has parsed
    what it holds and nothing else keeps the connection paused (`GuardedHttpToolsProtocol._release`)."""

    def __init__(self, transport: asyncio.Transport, wake: Callable[[], None]) -> None:
        super().__init__(transport)
        self._wake = wake

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._wake()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a request deadline, a header size limit, bounds on
    pipelined requests, unread answers and chunked framing, and a connection cap that closes idle and slow
    connections first."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _EdgeFlow(transport, self._wake)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        now = self.loop.time()
        self._awaiting_headers = True  # no request past its headers: waiting for a request line and headers
        self._header_bytes = 0
        self._waiting_since = now
        self._header_deadline: float | None = now + self.limits.header_timeout_s  # None between requests
        self._request_deadline: float | None = None  # from a request's first byte until it has fully arrived
        self._body_since = now  # when the current request's headers were complete
        self._body_bytes = 0  # of its body received since
        self._messages = 0  # requests begun on this connection
        self._chunked = False  # the current request's body is chunked
        self._framing = 0  # bytes of chunked framing since its last body byte (at most: see _feed)
        self._held = b""  # received but not parsed yet: the connection is paused (see _may_read)
        self._release_due = False
        self._stalled_since: float | None = None  # since when the client has not been reading its answers
        self._closing_since: float | None = None
        self._answering: RequestResponseCycle | None = None  # the request being answered (self.cycle: the last read)
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
        self._held = b""
        self._disconnect()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def _disconnect(self) -> None:
        """Tell the application answering a request, and the one whose request was read last, that the client is
        gone: their answers are dropped (uvicorn tells only the latter, and the former's next write would fail)."""
        for cycle in (self._answering, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    # -- the connection cap ----------------------------------------------------------------------------------

    def _eviction_rank(self, now: float) -> tuple[int, float, float] | None:
        """Where this connection stands in the line to be closed for room (lowest first); None: never."""
        if self._stalled_since is not None and now - self._stalled_since >= SLOW_BODY_GRACE_S:
            return (_STALLED, self._stalled_since, 0.0)
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
            victim._end(None, abort=best[0] == _STALLED)
        return True

    # -- ending a connection ---------------------------------------------------------------------------------

    def _end(self, answer: bytes | None, abort: bool = False) -> None:
        """Write `answer` (if any) and close (`abort`: at once, dropping what the client has not read); an
        application still working on this request gets a disconnect and its own answer is dropped."""
        self._cancel_timer()
        self.connections.discard(self)
        self._disconnect()
        if abort:
            self.transport.abort()
        elif not self.transport.is_closing():
            if answer is not None:
                self.transport.write(answer)
            self.transport.close()
        self._rearm()

    def _refuse(self, status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = (), code: str = "") -> None:
        self._end(_raw_response(status, message, extra, code))

    def _cut_off(self, status: int, message: str) -> None:
        """Refuse the request whose body is arriving; if it was answered already, only close."""
        if self.cycle is not None and self.cycle.response_started:
            self._end(None)
        else:
            self._refuse(status, message)

    # -- the deadlines: one timer ------------------------------------------------------------------------------

    def _next_deadline(self) -> tuple[float, int] | None:
        """The first bound that applies in the connection's current state, and its kind: none between requests, nor
        while a fully received request is being answered, unless the client stopped reading its answers."""
        timeout = self.limits.request_timeout_s
        if self.transport.is_closing():
            return None if self._closing_since is None else (self._closing_since + timeout, _LINGER)
        due: list[tuple[float, int]] = []
        if self._stalled_since is not None:
            due.append((self._stalled_since + timeout, _STALL))
        if self._awaiting_headers:
            if self._header_deadline is not None:
                due.append((self._header_deadline, _HEADERS))
            if self._request_deadline is not None:
                due.append((self._request_deadline, _REQUEST))
        elif self._request_deadline is not None:
            answered = self.cycle is not None and self.cycle.response_complete
            due.append((self._request_deadline + (0.0 if answered else APP_ANSWER_S), _REQUEST))
        return min(due, default=None)

    def _rearm(self) -> None:
        """Arm this connection's timer at its next deadline."""
        if self.transport.is_closing() and self._closing_since is None:
            self._closing_since = self.loop.time()
        due = self._next_deadline()
        at = None if due is None else due[0]
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
        due = self._next_deadline()
        if due is None:
            return
        kind = due[1]
        if kind == _LINGER:  # what is left to send has not gone out: the client is not reading
            self.transport.abort()
        elif kind == _STALL:
            log.warning(
                "closed a connection whose answers were not read for %gs (pipelined requests)",
                self.limits.request_timeout_s,
            )
            self._end(None, abort=True)
        elif kind == _HEADERS:
            self._refuse(
                408, f"request headers not received within {self.limits.header_timeout_s:g}s", code=RequestTimeout.code
            )
        elif not self._awaiting_headers and self.cycle is not None and self.cycle.response_started:
            self._end(None)  # answered already, but its body has not all arrived
        else:
            message = f"request not received within {self.limits.request_timeout_s:g}s"
            self._refuse(408, message, code=RequestTimeout.code)

    # -- reading: what is parsed, and when -----------------------------------------------------------------------

    def _may_read(self) -> bool:
        """Whether more of the connection's bytes may be parsed now: not while uvicorn's flow control holds it (a
        request waits behind the one being answered, or the application has not taken the body so far), nor while
        the client does not read its answers, nor with PIPELINE_DEPTH requests waiting."""
        flow = self.flow
        return not (
            flow.read_paused or flow.write_paused or len(self.pipeline) >= PIPELINE_DEPTH or self.transport.is_closing()
        )

    def _wake(self) -> None:
        """Something that held the connection may have ended: look again soon (not from inside the application's
        send or receive)."""
        if not self._release_due and not self.transport.is_closing():
            self._release_due = True
            self.loop.call_soon(self._release)

    def _release(self) -> None:
        self._release_due = False
        if self._held and self._may_read():
            held, self._held = self._held, b""
            self._feed(held)
        if not self._held and self._may_read():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._held:  # the transport delivered more while paused: keep the order
            data, self._held = self._held + data, b""
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Hand `data` to the parser a piece at a time, each ending after the next blank line (the end of a request's
        headers, or of a chunked body), so that a request waiting behind another stops the parsing at once: what is
        left is held, and the connection paused, until it may be read (`_may_read`). Meanwhile the bytes before the
        end of a request's headers, and a chunked body's framing, are counted against `max_header_bytes`."""
        limit = self.limits.max_header_bytes
        view = memoryview(data)
        pos, size = 0, len(data)
        while pos < size and not self.transport.is_closing():
            if not self._may_read():
                self._held = bytes(view[pos:])
                self.transport.pause_reading()
                break
            end = size
            in_chunked_body = self._chunked and not self._awaiting_headers
            if self._awaiting_headers:
                allowance = limit - self._header_bytes
                if allowance <= 0:
                    self._refuse(431, f"request line and headers exceed {limit} bytes")
                    break
                end = min(end, pos + allowance)
            elif in_chunked_body:
                end = min(end, pos + limit // 2)
            blank = data.find(b"\r\n\r\n", pos, end)
            if blank >= 0:
                end = blank + 4
            if self._awaiting_headers:
                self._header_bytes += end - pos
            messages, body_bytes = self._messages, self._body_bytes
            super().data_received(view[pos:end])  # type: ignore[arg-type]
            if in_chunked_body and self._chunked and self._messages == messages and not self._awaiting_headers:
                # framing since the last body byte: exact when this piece held no body, else at most the piece's
                # bytes that were not body (half the limit), so a run of framing up to half the limit always passes
                body = self._body_bytes - body_bytes
                self._framing = end - pos - body if body else self._framing + end - pos
                if self._framing > limit:
                    self._cut_off(431, f"chunk-size lines, chunk extensions or trailer fields exceed {limit} bytes")
                    break
            pos = end
        self._rearm()

    # -- the parser's callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.transport.is_closing():
            return
        super().on_message_begin()
        self._messages += 1
        now = self.loop.time()
        if self._header_deadline is None:  # a later request on a kept-alive connection
            self._header_deadline = now + self.limits.header_timeout_s
        self._request_deadline = now + self.limits.request_timeout_s

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._awaiting_headers:
            super().on_header(name, value)
        # else a trailer field (after a chunked body): counted as framing, and never merged into the request's
        # headers (RFC 9110, 6.5.1); neither application reads trailers

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_deadline = None
        self._body_since, self._body_bytes = self.loop.time(), 0
        codings = [c.strip().lower() for n, v in self.headers if n == b"transfer-encoding" for c in v.split(b",")]
        if codings and codings != [b"chunked"]:
            # only chunked is understood; taking `gzip, chunked` as plain chunked is how requests get smuggled
            # past a proxy that reads it otherwise (RFC 9112, 6.1: 501)
            self._refuse(501, "transfer codings other than chunked are not supported: send chunked or Content-Length")
            return
        self._chunked, self._framing = bool(codings), 0
        if self._request_deadline is not None:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[DEADLINE_KEY] = Deadline(self._request_deadline, self.limits.request_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        super().on_message_complete()
        self._awaiting_headers = True  # what follows is the next request
        self._header_bytes = 0
        self._request_deadline = None
        self._chunked = False
        self._waiting_since = self.loop.time()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one waits
        self._waiting_since = self.loop.time()  # idle from now on, once its request has fully arrived
        if self._held or not self.transport.is_reading():
            self._wake()  # a request fewer waits: read on
        self._rearm()  # if it has not: its unread body is thrown away until the deadline, not later

    # -- writing: answers the client does not read -----------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled_since = self.loop.time()
        self.transport.pause_reading()
        self._rearm()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stalled_since = None
        self._wake()
        self._rearm()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._rearm()


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
    kept), no Server header, logging left to the process (so the repeat filter applies to uvicorn's lines), and the
    peer's address as the client's: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default, so that any
    local process could name a new client with every request; the collector reads that header itself, from
    `collector.trusted_proxies` only (producers/client_limits.py)."""
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        http=guarded_protocol(limits),
        log_level=log_level.lower(),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)

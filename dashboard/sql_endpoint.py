"""POST /api/sql: an analyst's statement, checked, run and streamed, every resource bounded where it is spent.

    {"query": "SELECT ...", "format": "json" | "csv" | "tsv" | "parquet" | "arrow"}   (or ?format=...)

- **Queue.** At most `api.query_concurrency` statements run at once; a request waits for a slot at most
  `api.query_queue_s` in all, then gets 503 `busy`. A request whose client hangs up while it waits is dropped before
  it starts; one whose client hangs up while it runs is cancelled (its stream closed, its query killed).
- **Time.** Once a slot is taken, the statement and the delivery of its result take at most `api.query_timeout_s`
  (ClickHouse stops the query at that limit) plus DELIVERY_GRACE_S; a client that reads too slowly is cut off.
- **Bytes.** The result goes out as ClickHouse wrote it (dashboard/sql_formats.py), a chunk at a time: the process
  never holds more than one chunk of it. The first FIRST_BYTES are read before the status is sent, so that a result
  that fails early is answered with its error status; a result that fits in them goes out whole, with its length. Past `api.query_max_result_bytes` the body ends with the error
  (JSON: an `"error"` member; other formats: a `#error` line, then the connection is closed before the end of the
  chunked body, so that no reader takes the truncated file for a whole one).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.errors import PayloadTooLarge, RequestRefused, Unavailable
from dashboard import metrics
from dashboard.analyst_sql import SqlSessions, new_query_id, query_error
from dashboard.sql_engine import Engine, EngineError
from dashboard.sql_formats import DEFAULT_FORMAT, FORMATS, OutputFormat, ResultCut, frame

log = logging.getLogger(__name__)

FIRST_BYTES = 64 * 1024  # read before the status line: a result that fails within them gets its error status
DELIVERY_GRACE_S = 5.0  # beyond api.query_timeout_s, for the last bytes of a result to reach the client


def request_of(raw: bytes, query_params: Any) -> tuple[str, OutputFormat]:
    """(statement, format) from a request body `{"query": ..., "format": ...}` (the format also as ?format=)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, str):
        raise RequestRefused('the body must be JSON {"query": "SELECT ...", "format": "json"}')
    if not query.strip():
        raise RequestRefused("empty query")
    name = body.get("format") if isinstance(body, dict) and "format" in body else query_params.get("format")
    name = DEFAULT_FORMAT if name is None else name
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise RequestRefused(f"format must be one of {', '.join(FORMATS)} (got {str(name)[:20]!r})", code="bad_format")
    return query, fmt


@dataclass
class _Running:
    engine: Engine
    marker: str
    fmt: OutputFormat
    pieces: Iterator[bytes]
    first: list[bytes]
    done: bool  # the whole result is in `first`


class SqlEndpoint:
    """The /api/sql handler: a bounded pool of analyst sessions and as many threads, nothing queued beyond them."""

    def __init__(self, sessions: SqlSessions, timeout_s: float, cap: int) -> None:
        self.sessions, self.timeout_s, self.cap = sessions, timeout_s, cap
        self.pool = ThreadPoolExecutor(max_workers=sessions.size, thread_name_prefix="analyst-sql")
        self._slots: asyncio.Semaphore | None = None  # made on the API's event loop

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.sessions.close()

    async def __call__(self, request: Request, query: str, fmt: OutputFormat) -> Response:
        started = time.perf_counter()
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            if not await self._take_slot(gone):
                metrics.QUERIES.labels("cancelled").inc()
                return Response(status_code=499)
        except RequestRefused as exc:
            gone.cancel()
            metrics.QUERIES.labels(exc.code).inc()
            raise
        try:
            running = await self._start(query, fmt, gone)
        except BaseException:
            self._release()
            gone.cancel()
            raise
        if running is None:
            self._release()
            gone.cancel()
            metrics.QUERIES.labels("cancelled").inc()
            return Response(status_code=499)
        if running.done:  # the whole result is in hand: an ordinary response with its length
            gone.cancel()
            self.sessions.give_back(running.engine, healthy=True)
            self._release()
            metrics.QUERIES.labels("ok").inc()
            metrics.QUERY_SECONDS.observe(time.perf_counter() - started)
            return Response(b"".join(running.first), media_type=running.fmt.media_type, headers=_headers(running.fmt))
        deadline = started + self.timeout_s + DELIVERY_GRACE_S
        return _ResultResponse(self, running, gone, deadline, started)

    # -- the queue --------------------------------------------------------------------------------------------

    async def _take_slot(self, gone: asyncio.Future[None]) -> bool:
        """True once a slot is held; False if the client went away first; 503 after queue_s."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.sessions.size)
        take = asyncio.ensure_future(self._slots.acquire())
        metrics.WAITING.inc()
        try:
            done, _ = await asyncio.wait(
                {take, gone},  # type: ignore[type-var]
                timeout=self.sessions.queue_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            metrics.WAITING.dec()
        if take in done and not gone.done():
            metrics.RUNNING.inc()
            return True
        take.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await take
        if take.done() and not take.cancelled():
            metrics.RUNNING.inc()
            self._release()  # acquired in the same instant as the client left or the wait ended
        if gone.done():
            return False
        raise Unavailable(
            f"{self.sessions.size} analyst queries are running; waited {self.sessions.queue_s:g}s "
            "(api.query_queue_s): retry shortly",
            code="busy",
            headers={"Retry-After": "2"},
        )

    def _release(self) -> None:
        assert self._slots is not None
        metrics.RUNNING.dec()
        self._slots.release()

    # -- running ----------------------------------------------------------------------------------------------

    async def _start(self, query: str, fmt: OutputFormat, gone: asyncio.Future[None]) -> _Running | None:
        """The statement checked and started, its first bytes read; None if the client left (it is then stopped)."""
        if gone.done():
            return None  # dropped before it starts
        query_id = new_query_id()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.pool, self._open, query, fmt, query_id)
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        if not work.done():
            await loop.run_in_executor(None, self.sessions.cancel, _marker(query_id))
            with contextlib.suppress(RequestRefused, EngineError):
                running = await work
                running.engine.close()
            return None
        return work.result()

    def _open(self, query: str, fmt: OutputFormat, query_id: str) -> _Running:
        """On an analyst thread: check, start, and read up to FIRST_BYTES."""
        engine = self.sessions.engine()
        try:
            prepared = self.sessions.prepare(engine, query, fmt, query_id)
            pieces = frame(fmt, prepared.header, prepared.chunks, self.cap)
            first: list[bytes] = []
            size = 0
            done = True
            for piece in pieces:
                first.append(piece)
                size += len(piece)
                if size >= FIRST_BYTES:
                    done = False
                    break
            return _Running(engine, prepared.marker, fmt, pieces, first, done)
        except ResultCut as exc:  # within the first bytes: nothing is sent yet, so the status says it
            engine.close()
            raise PayloadTooLarge(exc.message, code=exc.code) from exc
        except EngineError as exc:  # ClickHouse stopped it within the first bytes
            engine.close()
            raise query_error(exc) from exc
        except RequestRefused:
            self.sessions.give_back(engine, healthy=True)  # refused before anything ran
            raise
        except BaseException:
            engine.close()
            raise


def _headers(fmt: OutputFormat) -> dict[str, str]:
    headers = {"cache-control": "no-store"}
    if fmt.binary:
        headers["content-disposition"] = f'attachment; filename="result.{fmt.name}"'
    return headers


def _marker(query_id: str) -> str:
    return f"/* is-telemetry analyst {query_id} */ "


def _next(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


_CUT_SHORT: contextvars.ContextVar[bool] = contextvars.ContextVar("analyst_result_cut_short", default=False)
UNFINISHED = "ASGI callable returned without completing response."


class _DeliberatelyUnfinished(logging.Filter):
    """uvicorn calls a response left unfinished an error; a result this module cut short on purpose is not one (it
    is logged at INFO with its reason). The flag lives in the request's own task, so no other response is hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == UNFINISHED and _CUT_SHORT.get())


logging.getLogger("uvicorn.error").addFilter(_DeliberatelyUnfinished())


class _ResultResponse(Response):
    """Streams a running result; ends it with the error if it is cut short (see the module's docstring)."""

    def __init__(
        self,
        endpoint: SqlEndpoint,
        running: _Running,
        gone: asyncio.Future[None],
        deadline: float,
        started: float,
    ) -> None:
        # no Response.__init__: it would announce a Content-Length, and the length is not known yet (chunked)
        self.status_code, self.background, self.media_type = 200, None, running.fmt.media_type
        self.raw_headers = [(b"content-type", running.fmt.media_type.encode())]
        self.raw_headers += [(k.encode(), v.encode()) for k, v in _headers(running.fmt).items()]
        self.endpoint, self.running, self.gone, self.deadline, self.started = endpoint, running, gone, deadline, started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        running, endpoint = self.running, self.endpoint
        healthy = False
        outcome = "ok"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            for piece in running.first:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            finish = True
            if not running.done:
                finish, outcome = await self._rest(send)
            if finish:  # a whole result, or a JSON one ended by its "error" member
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                healthy = outcome == "ok"
            else:  # the body stays unfinished: the server closes the connection (and need not call that an error)
                _CUT_SHORT.set(True)
        finally:
            self.gone.cancel()
            with contextlib.suppress(RuntimeError):
                running.pieces.close()  # type: ignore[attr-defined]
            if not healthy:
                await asyncio.get_running_loop().run_in_executor(None, endpoint.sessions.cancel, running.marker)
            endpoint.sessions.give_back(running.engine, healthy)
            endpoint._release()
            metrics.QUERIES.labels(outcome).inc()
            if healthy:
                metrics.QUERY_SECONDS.observe(time.perf_counter() - self.started)

    async def _rest(self, send: Send) -> tuple[bool, str]:
        """Send the rest of the result: (whether the body may be finished, the outcome: ok, cancelled or the code of
        the error that cut it short)."""
        loop = asyncio.get_running_loop()
        running = self.running
        while True:
            remaining = self.deadline - time.perf_counter()
            step = loop.run_in_executor(self.endpoint.pool, _next, running.pieces)
            done, _ = await asyncio.wait(
                {step, self.gone},  # type: ignore[type-var]
                timeout=max(remaining, 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self.gone.done():
                return False, "cancelled"
            if step not in done:
                message = f"the result was not delivered within {self.endpoint.timeout_s:g}s (api.query_timeout_s)"
                return await self._cut(send, ResultCut(running.fmt, {"error": "timeout", "message": message}))
            try:
                piece = step.result()
            except ResultCut as exc:
                return await self._cut(send, exc)
            except EngineError as exc:
                return await self._cut(send, ResultCut(running.fmt, query_error(exc).body()))
            if piece is None:
                return True, "ok"
            try:
                async with asyncio.timeout(max(self.deadline - time.perf_counter(), 0)):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            except TimeoutError:
                return False, "timeout"

    async def _cut(self, send: Send, cut: ResultCut) -> tuple[bool, str]:
        log.info("analyst result cut short: %s", cut.message)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await send({"type": "http.response.body", "body": cut.tail, "more_body": True})
        return self.running.fmt.name == "json", cut.code


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

"""Where analysts' SQL runs: one read-only ClickHouse session that hands out ClickHouse's own output, block by block.

    engine = open_engine(dsn, settings)   # embedded chDB or a server; read-only before it is returned
    engine.value(sql) -> bytes            # one value, as ClickHouse writes it (RawBLOB): the check's own queries
    engine.output(sql, fmt) -> bytes      # a small result whole, in format `fmt` (headers, the catalogue)
    chunks = engine.stream(sql, fmt)      # the result in ClickHouse format `fmt`; iterate, then close() (cancels)

Results are bytes from ClickHouse, never Python values. On chDB a row format streams one block at a time
(`send_query`); a columnar file (Parquet, Arrow) has a footer, so chDB writes it whole first, within the query's
memory limit (ClickHouse counts its output buffer there). On a server every format streams over HTTP.
Errors come out as EngineError with ClickHouse's error code, whichever engine ran the query.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlparse

import chdb
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from core.clickhouse_client import connect
from core.errors import TelemetryError

#: Formats chDB can hand out a block at a time: each block's output stands alone and the blocks concatenate.
BLOCK_FORMATS = frozenset({"JSONCompactEachRow", "CSV", "TabSeparated", "JSONEachRow"})
_CODE = re.compile(r"Code: (\d+)\. ")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
READ_SIZE = 256 * 1024  # bytes read from a server's response at a time


class EngineError(TelemetryError):
    """ClickHouse refused or stopped a query (`code` is ClickHouse's error code, 0 if it gave none), or could not be
    reached (`unavailable`)."""

    def __init__(self, text: str, code: int = 0, unavailable: bool = False) -> None:
        super().__init__(text)
        self.text, self.code, self.unavailable = text, code, unavailable

    @property
    def name(self) -> str:
        m = _NAME.search(self.text.splitlines()[0] if self.text else "")
        return m.group(1) if m else ""

    @classmethod
    def of(cls, exc: BaseException) -> EngineError:
        text = str(exc).removeprefix("Streaming query failed: ").strip()
        code = getattr(exc, "code", None)
        if not isinstance(code, int) or not code:
            m = _CODE.search(text)
            code = int(m.group(1)) if m else 0
        unavailable = not code and isinstance(exc, (OSError, ClickHouseError)) and not _CODE.search(text)
        return cls(text or type(exc).__name__, code, unavailable)


class Chunks(Protocol):
    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Engine(Protocol):
    embedded: bool

    def value(self, sql: str) -> bytes: ...

    def output(self, sql: str, fmt: str) -> bytes: ...

    def stream(self, sql: str, fmt: str) -> Chunks: ...

    def close(self) -> None: ...


def open_engine(dsn: str, settings: Mapping[str, Any]) -> Engine:
    """A read-only session on `dsn` with `settings` (the limits) in force; EngineError if it cannot be opened."""
    if dsn.startswith("chdb:"):
        return ChdbEngine(urlparse(dsn).path, settings)
    return ServerEngine(dsn, settings)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.\- ]*", text):
        raise ValueError(f"setting value {text!r} is not a plain word")
    return f"'{text}'"


# -- chDB -------------------------------------------------------------------------------------------------------------


class ChdbEngine:
    """A chDB connection handle of its own (chDB runs handles side by side), set up with the limits, then readonly."""

    embedded = True

    def __init__(self, path: str, settings: Mapping[str, Any]) -> None:
        try:
            self._conn: Any = chdb.connect(os.path.realpath(path))
        except RuntimeError as exc:
            raise EngineError(f"cannot open chDB at {path}: {exc}", unavailable=True) from exc
        try:
            for key, value in settings.items():
                if not re.fullmatch(r"[a-z_0-9]+", key):
                    raise ValueError(f"setting name {key!r}")
                self._conn.query(f"SET {key} = {_literal(value)}")
            self._conn.query("SET readonly = 1")
        except RuntimeError as exc:
            self.close()
            raise EngineError.of(exc) from exc

    def value(self, sql: str) -> bytes:
        return self.output(sql, "RawBLOB")

    def output(self, sql: str, fmt: str) -> bytes:
        try:
            return bytes(self._conn.query(sql, fmt).bytes())
        except RuntimeError as exc:
            raise EngineError.of(exc) from exc

    def stream(self, sql: str, fmt: str) -> Chunks:
        try:
            if fmt in BLOCK_FORMATS:
                return _ChdbBlocks(self._conn.send_query(sql, fmt))
            return _Whole(self._conn.query(sql, fmt))
        except RuntimeError as exc:
            raise EngineError.of(exc) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except RuntimeError:
                pass  # already gone with the engine


class _ChdbBlocks:
    def __init__(self, streaming: Any) -> None:
        self._streaming = streaming

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                result = self._streaming.fetch()
            except RuntimeError as exc:
                raise EngineError.of(exc) from exc
            if result is None:
                return
            yield from _slices(result)

    def close(self) -> None:
        try:
            self._streaming.cancel()
        except RuntimeError:
            pass  # the query had already ended


def _slices(result: Any) -> Iterator[bytes]:
    """A chDB result's bytes in slices, never one copy of the whole (the result stays alive while its view is read)."""
    view = result.get_memview().view()
    for i in range(0, len(view), READ_SIZE):
        yield bytes(view[i : i + READ_SIZE])


class _Whole:
    """A result written whole (a columnar file), handed out in slices."""

    def __init__(self, result: Any) -> None:
        self._result: Any = result

    def __iter__(self) -> Iterator[bytes]:
        if self._result is not None:
            yield from _slices(self._result)

    def close(self) -> None:
        self._result = None


# -- a ClickHouse server ----------------------------------------------------------------------------------------------


class ServerEngine:
    """clickhouse-connect over HTTP. A read-only user's settings profile holds the limits (compose/clickhouse/users.d/
    analyst.xml); a user that is not read-only gets them, and readonly = 1, with every request."""

    embedded = False

    def __init__(self, dsn: str, settings: Mapping[str, Any]) -> None:
        try:
            client: Client = connect(dsn)
            level = int(client.query("SELECT getSetting('readonly')").result_rows[0][0])
            if level == 0:
                client.close()
                client = connect(dsn, settings={**settings, "readonly": 1})
        except (ClickHouseError, OSError) as exc:
            raise EngineError.of(exc) from exc
        self._client = client

    def value(self, sql: str) -> bytes:
        return self.output(sql, "RawBLOB")

    def output(self, sql: str, fmt: str) -> bytes:
        try:
            return bytes(self._client.raw_query(sql, fmt=fmt))
        except (ClickHouseError, OSError) as exc:
            raise EngineError.of(exc) from exc

    def stream(self, sql: str, fmt: str) -> Chunks:
        try:
            return _ServerStream(self._client.raw_stream(sql, fmt=fmt))
        except (ClickHouseError, OSError) as exc:
            raise EngineError.of(exc) from exc

    def close(self) -> None:
        self._client.close()


class _ServerStream:
    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                data = self._response.read(READ_SIZE)
            except (ClickHouseError, OSError) as exc:
                raise EngineError.of(exc) from exc
            if not data:
                return
            yield bytes(data)

    def close(self) -> None:
        self._response.close()  # closes the connection: the server cancels a query whose client went away

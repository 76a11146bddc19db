"""The formats analysts' results come in, and how ClickHouse's output is framed into a response, bytes in, bytes out.

| format    | body                                                          | media type                          |
|-----------|---------------------------------------------------------------|-------------------------------------|
| `json`    | `{"columns":[...],"types":[...],"rows":[[...],...]}`: ClickHouse's JSONCompactEachRow rows | application/json |
| `csv`     | ClickHouse's CSVWithNames                                     | text/csv                            |
| `tsv`     | ClickHouse's TabSeparatedWithNames                            | text/tab-separated-values           |
| `parquet` | ClickHouse's Parquet                                          | application/vnd.apache.parquet      |
| `arrow`   | ClickHouse's ArrowStream (Arrow IPC stream)                   | application/vnd.apache.arrow.stream |

A result's header (column names, and types for JSON) comes from ClickHouse too: the statement read with `LIMIT 0`
in the header format. `frame(...)` joins header, rows and end, counts the bytes as they go, and stops at the cap:
a JSON result then ends in `"error"` (still valid JSON); every other format ends with a line naming the error and is
cut short, so that no reader takes a truncated file for a whole one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from core.errors import TelemetryError


@dataclass(frozen=True)
class OutputFormat:
    name: str
    body: str  # the ClickHouse format of the rows
    header: str | None  # the ClickHouse format whose output for no rows is the header
    media_type: str
    binary: bool = False


FORMATS = {
    f.name: f
    for f in (
        OutputFormat("json", "JSONCompactEachRow", "JSONCompactEachRowWithNamesAndTypes", "application/json"),
        OutputFormat("csv", "CSV", "CSVWithNames", "text/csv; charset=utf-8"),
        OutputFormat("tsv", "TabSeparated", "TabSeparatedWithNames", "text/tab-separated-values; charset=utf-8"),
        OutputFormat("parquet", "Parquet", None, "application/vnd.apache.parquet", binary=True),
        OutputFormat("arrow", "ArrowStream", None, "application/vnd.apache.arrow.stream", binary=True),
    )
}
DEFAULT_FORMAT = "json"


class ResultCut(TelemetryError):
    """The result was cut short (the byte cap, a deadline, a failure mid-stream): `error` is the error's JSON body
    (`error`, `message`, maybe ClickHouse's code), `tail` what ends the response for its reader."""

    def __init__(self, fmt: OutputFormat, error: dict[str, object]) -> None:
        super().__init__(str(error.get("message", "")))
        self.error = error
        self.code, self.message = str(error.get("error", "")), str(error.get("message", ""))
        self.tail = error_tail(fmt, error)


def json_head(header: bytes) -> bytes:
    """The start of a JSON result from ClickHouse's JSONCompactEachRowWithNamesAndTypes header (two lines)."""
    lines = header.split(b"\n")
    names, types = (lines + [b"[]", b"[]"])[:2]
    return b'{"columns":' + names + b',"types":' + types + b',"rows":[\n'


def error_tail(fmt: OutputFormat, error: dict[str, object]) -> bytes:
    """What ends a result cut short: the JSON error member, a `#error` line, or nothing (a binary file)."""
    if fmt.name == "json":
        return b'\n],"error":' + orjson.dumps(error) + b"}\n"
    if fmt.binary:
        return b""
    line = f"{error.get('error')}: {error.get('message')}".encode("utf-8", "replace")
    return b"\n#error " + line.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n"


def _json_rows(chunks: Iterable[bytes], cap: int) -> Iterator[bytes]:
    """JSONCompactEachRow lines as the elements of a JSON array, whole rows at a time: a comma before each row but the
    first. A row never holds a raw newline (JSON escapes it), so newlines are the row ends, wherever chunks are cut."""
    first = True
    rest = b""
    for chunk in chunks:
        data = rest + chunk if rest else chunk
        end = data.rfind(b"\n")
        if end < 0:
            rest = data
            if len(rest) > cap:  # one row larger than the whole cap: it could never be sent
                yield rest
                return
            continue
        rows, rest = data[:end], data[end + 1 :]
        yield (b"" if first else b",\n") + rows.replace(b"\n", b",\n")
        first = False
    if rest:
        yield (b"" if first else b",\n") + rest


def frame(fmt: OutputFormat, header: bytes, chunks: Iterable[bytes], cap: int) -> Iterator[bytes]:
    """The response body: header, rows, end. Raises ResultCut (after yielding what fits) once more than `cap` bytes
    would be sent. The header (a statement's column names and types) always goes out whole, and counts."""
    head = json_head(header) if fmt.name == "json" else header
    sent = len(head)
    if head:
        yield head
    pieces = _json_rows(chunks, cap) if fmt.name == "json" else chunks
    for piece in pieces:
        room = cap - sent
        if len(piece) > room:
            if room > 0 and fmt.name != "json" and not fmt.binary:
                yield piece[:room]  # JSON sends whole rows only; a text format up to the cap, then its error line
            message = (
                f"the result exceeds {cap} bytes (api.query_max_result_bytes): narrow the query, add LIMIT, "
                "or ask for parquet"
            )
            raise ResultCut(fmt, {"error": "result_too_large", "message": message})
        sent += len(piece)
        yield piece
    if fmt.name == "json":
        yield b"\n]}\n"

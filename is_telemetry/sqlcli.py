"""`is-telemetry sql`: run a read-only query through a stack's API or straight against ClickHouse.

Where it goes: `--api URL` if given; `--clickhouse DSN` straight to that ClickHouse; else the API a running
`is-telemetry up` recorded in the data directory (stack.json), else the data directory's chDB, read-only. Either way
the statement meets the same check and limits as POST /api/sql (dashboard/analyst_sql.py).

A token goes only where the user sent it: to the API named with `--api`, or to a loopback API found in stack.json.
What is printed is escaped (is_telemetry/termsafe.py): no stored value can drive the terminal.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import orjson

from core.config import Settings, is_loopback
from core.csvsafe import csv_cell
from core.errors import RequestRefused, TelemetryError
from core.preflight import chdb_holder
from is_telemetry import apiclient
from is_telemetry.stack.state import STATE_FILE, read_state
from is_telemetry.termsafe import json_printable, printable
from sinks.clickhouse import redact

#: What `--format` takes: printed (rendered here from the API's JSON) or written as ClickHouse wrote it (--output).
PRINTED = ("table", "csv", "json")
EXPORTED = ("parquet", "arrow", "tsv")


class SqlError(TelemetryError):
    """The query could not run; the message says where it was sent and why (`detail`: ClickHouse's whole text)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def run_query(
    settings: Settings, query: str, api: str | None, token: str | None, direct: bool
) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of `query` (see the module's docstring for where it runs)."""
    out = io.BytesIO()
    fetch(settings, query, api, token, direct, "json", out)
    body = orjson.loads(out.getvalue())
    if isinstance(body.get("error"), dict):
        raise SqlError(f"{body['error'].get('error')}: {body['error'].get('message')}")
    return list(body["columns"]), list(body["rows"])


def fetch(
    settings: Settings, query: str, api: str | None, token: str | None, direct: bool, fmt: str, out: BinaryIO
) -> None:
    """Write the result of `query` in `fmt` to `out`; SqlError saying where it was asked if it cannot."""
    if api and not direct:
        return _through_api(api, query, token or settings.api.token, settings, fmt, out, "--api")
    if direct or not settings.clickhouse_dsn.startswith("chdb:"):
        return _direct(settings, query, fmt, out, f"ClickHouse at {redact(settings.analyst_dsn)}")
    tried: list[str] = []
    state_path = settings.data_dir.resolve() / STATE_FILE
    state = read_state(settings.data_dir.resolve())
    url = str(state.get("api_url", "")) if state else ""
    if url:
        token = token or settings.api.token
        host = urlparse(url).hostname or ""
        if token and not is_loopback(host):
            raise SqlError(
                f"{state_path} names the API at {url}, which is not a loopback address: your token is sent only to an "
                f"API you name, so pass --api {url} if that is where it should go"
            )
        try:
            apiclient.sql_to(out, url, query, fmt, token, timeout_s=settings.api.query_timeout_s + 30)
            return None
        except apiclient.ApiError as exc:
            if exc.status:
                raise SqlError(
                    f"{_refusal(exc.status, exc.code, exc.message)} (asked the running stack's API at "
                    f"{url}, recorded in {state_path})",
                    exc.message,
                ) from exc
            tried.append(f"the API at {url} recorded in {state_path} did not answer (is that stack gone?)")
    return _on_chdb(settings, query, fmt, out, tried)


def _through_api(url: str, query: str, token: str, settings: Settings, fmt: str, out: BinaryIO, origin: str) -> None:
    try:
        apiclient.sql_to(out, url, query, fmt, token, timeout_s=settings.api.query_timeout_s + 30)
    except apiclient.ApiError as exc:
        if exc.status == 0:
            raise SqlError(f"{exc.message} ({origin}); is the stack running (is-telemetry up)?") from exc
        raise SqlError(f"{_refusal(exc.status, exc.code, exc.message)} (asked the API at {url})", exc.message) from exc


def _on_chdb(settings: Settings, query: str, fmt: str, out: BinaryIO, tried: list[str]) -> None:
    path = Path(urlparse(settings.analyst_dsn).path)
    before = "; ".join([*tried, ""]) if tried else ""
    if not (path / "metadata").is_dir():
        raise SqlError(
            f"{before}no stack is running for {settings.data_dir} (no {STATE_FILE} there) and there is no "
            f"chDB data at {path}: start one (is-telemetry up), or pass --data-dir, --api "
            "http://HOST:PORT or --clickhouse"
        )
    holder = chdb_holder(path)
    if holder is not None:
        who = f"pid {holder}" if holder else "another process"
        raise SqlError(
            f"{before}the chDB at {path} is in use by {who} (chDB allows one process per directory); "
            "if that is a stack, pass its API: --api http://127.0.0.1:PORT"
        )
    _direct(settings, query, fmt, out, f"{before}chDB at {path} (read-only, no stack running)")


def _direct(settings: Settings, query: str, fmt: str, out: BinaryIO, where: str) -> None:
    from dashboard.analyst_sql import SqlSessions, query_error
    from dashboard.sql_engine import EngineError
    from dashboard.sql_formats import FORMATS, ResultCut, frame

    sessions = SqlSessions.from_settings(settings)
    try:
        engine = sessions.engine()
        try:
            prepared = sessions.prepare(engine, query, FORMATS[fmt])  # the same checks and limits as POST /api/sql
            for piece in frame(prepared.fmt, prepared.header, prepared.chunks, settings.api.query_max_result_bytes):
                out.write(piece)
        except ResultCut as exc:
            out.write(exc.tail)
            raise SqlError(f"{exc.code}: {exc.message} (on {where})") from exc
        except EngineError as exc:
            error = query_error(exc)
            raise SqlError(f"{_refusal(error.status, error.code, error.message)} (on {where})", exc.text) from exc
        finally:
            engine.close()
    except RequestRefused as exc:
        detail = str(exc.extra.get("detail", ""))
        raise SqlError(f"{_refusal(exc.status, exc.code, exc.message)} (on {where})", detail) from exc
    finally:
        sessions.close()


def _refusal(status: int, code: str, message: str) -> str:
    """A refused query in words: a write says so first, whatever ClickHouse's own wording."""
    if code == "writes_not_allowed":
        text = message if message.lower().startswith("writes are not allowed") else f"writes are not allowed: {message}"
        return f"refused (read-only): {text}"
    return f"{status} {code}: {message}"


def format_result(columns: list[str], rows: list[list[Any]], fmt: str) -> str:
    """The result as printed: every stored string escaped (is_telemetry/termsafe.py)."""
    if fmt == "json":
        return json_printable(orjson.dumps([dict(zip(columns, row)) for row in rows]).decode()) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([_csv(c) for c in columns])
        for row in rows:
            w.writerow([_csv(v) for v in row])  # formulas neutralised for spreadsheets
        return buf.getvalue()
    cells = [[_cell(v) for v in row] for row in rows]
    names = [printable(c, backslash=True) for c in columns]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(names)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(names), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(out) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def _csv(v: Any) -> Any:
    cell = csv_cell(v)
    return printable(cell) if isinstance(cell, str) else cell


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json_printable(orjson.dumps(v).decode())
    return printable(str(v), backslash=True)

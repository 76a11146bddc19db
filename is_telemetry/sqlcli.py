"""`is-telemetry sql`: run a read-only query through a stack's API or straight against ClickHouse."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

from is_telemetry import apiclient
from is_telemetry.config import Settings
from is_telemetry.csvsafe import csv_cell
from is_telemetry.errors import RequestRefused, TelemetryError
from is_telemetry.preflight import chdb_holder
from is_telemetry.stack.state import STATE_FILE, read_state
from sinks.clickhouse import redact


class SqlError(TelemetryError):
    """The query could not run; the message says where it was sent and why."""


def run_query(
    settings: Settings, query: str, api: str | None, token: str | None, direct: bool
) -> tuple[list[str], list[list[Any]]]:
    """Run `query` read-only: through `api` if given; straight against ClickHouse if `direct` (--clickhouse);
    else through the API a running `is-telemetry up` recorded in the data directory, and failing that on the
    data directory's chDB, read-only. Errors say which of these were tried."""
    if api and not direct:
        return _through_api(settings, api, query, token, "--api")
    if direct or not settings.clickhouse_dsn.startswith("chdb:"):
        return _direct(settings, query, f"ClickHouse at {redact(settings.analyst_dsn)}")
    tried: list[str] = []
    state_path = settings.data_dir.resolve() / STATE_FILE
    state = read_state(settings.data_dir.resolve())
    url = str(state.get("api_url", "")) if state else ""
    if url:
        try:
            return apiclient.sql(url, query, token or settings.api.token, timeout_s=settings.api.query_timeout_s + 30)
        except apiclient.ApiError as exc:
            if exc.status:
                raise SqlError(
                    f"{_refusal(exc.status, exc.code, exc.message)} (asked the running stack's API at "
                    f"{url}, recorded in {state_path})"
                ) from exc
            tried.append(f"the API at {url} recorded in {state_path} did not answer (is that stack gone?)")
    return _on_chdb(settings, query, tried)


def _through_api(
    settings: Settings, url: str, query: str, token: str | None, origin: str
) -> tuple[list[str], list[list[Any]]]:
    try:
        return apiclient.sql(url, query, token or settings.api.token, timeout_s=settings.api.query_timeout_s + 30)
    except apiclient.ApiError as exc:
        if exc.status == 0:
            raise SqlError(f"{exc.message} ({origin}); is the stack running (is-telemetry up)?") from exc
        raise SqlError(f"{_refusal(exc.status, exc.code, exc.message)} (asked the API at {url})") from exc


def _on_chdb(settings: Settings, query: str, tried: list[str]) -> tuple[list[str], list[list[Any]]]:
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
    return _direct(settings, query, f"{before}chDB at {path} (read-only, no stack running)")


def _direct(settings: Settings, query: str, where: str) -> tuple[list[str], list[list[Any]]]:
    from dashboard.analyst_sql import AnalystSessions, new_query_id
    from dashboard.responses import json_value

    sessions = AnalystSessions.from_settings(settings)
    try:
        result = sessions.run_client_sql(query, new_query_id())  # the same checks and limits as POST /api/sql
    except RequestRefused as exc:
        raise SqlError(f"{_refusal(exc.status, exc.code, exc.message)} (on {where})") from exc
    finally:
        sessions.close()
    return result.columns, [[json_value(v) for v in row] for row in result.rows]


def _refusal(status: int, code: str, message: str) -> str:
    """A refused query in words: a write says so first, whatever ClickHouse's own wording."""
    if code == "writes_not_allowed" or status == 403 and "readonly" in message.lower():
        text = message if message.lower().startswith("writes are not allowed") else f"writes are not allowed: {message}"
        return f"refused (read-only): {text}"
    return f"{status} {code}: {message}"


def format_result(columns: list[str], rows: list[list[Any]], fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps([dict(zip(columns, row)) for row in rows]).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([csv_cell(c) for c in columns])
        for row in rows:
            w.writerow([csv_cell(v) for v in row])  # formulas neutralised for spreadsheets
        return buf.getvalue()
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(out) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return str(v)

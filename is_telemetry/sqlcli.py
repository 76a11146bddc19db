"""`is-telemetry sql`: run a read-only query through a stack's API or straight against ClickHouse."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from is_telemetry import apiclient
from is_telemetry.config import Settings
from is_telemetry.csvsafe import csv_cell
from is_telemetry.errors import RequestRefused, TelemetryError


class SqlError(TelemetryError):
    """The query could not run; the message says where it was sent and why."""


def run_query(settings: Settings, query: str, api: str | None, token: str | None, direct: bool) -> tuple[list[str], list[list[Any]]]:
    if api and not direct:
        try:
            return apiclient.sql(api, query, token or "", timeout_s=settings.api.query_timeout_s + 30)
        except apiclient.ApiError as exc:
            hint = "; is the stack running (is-telemetry up)?" if exc.status == 0 else ""
            raise SqlError(f"{exc}{hint}") from exc
    if settings.clickhouse_dsn.startswith("chdb:") and not direct:
        raise SqlError("the embedded chDB is locked by the running stack: pass --api http://127.0.0.1:PORT "
                       "(or --clickhouse for a ClickHouse server)")
    from dashboard.analyst_sql import AnalystSessions, new_query_id
    from dashboard.responses import json_value

    sessions = AnalystSessions.from_settings(settings)
    try:
        result = sessions.run_client_sql(query, new_query_id())  # the same checks and limits as POST /api/sql
    except RequestRefused as exc:
        raise SqlError(f"{exc.status} {exc.code}: {exc.message}") from exc
    finally:
        sessions.close()
    return result.columns, [[json_value(v) for v in row] for row in result.rows]


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

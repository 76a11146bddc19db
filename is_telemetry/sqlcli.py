"""`is-telemetry sql`: run a read-only query through a stack's API or straight against ClickHouse."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import orjson

from is_telemetry.config import Settings


def run_query(settings: Settings, query: str, api: str | None, token: str | None, direct: bool) -> tuple[list[str], list[list[Any]]]:
    if api and not direct:
        headers = {"content-type": "text/plain; charset=utf-8"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            r = httpx.post(api.rstrip("/") + "/api/sql", content=query.encode(), headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"cannot reach the API at {api}: {exc}; is the stack running (is-telemetry up)?") from exc
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code} {body.get('error', '')}: {body.get('message', r.text[:500])}")
        return body["columns"], body["rows"]
    if settings.clickhouse_dsn.startswith("chdb:") and not direct:
        raise RuntimeError("the embedded chDB is locked by the running stack: pass --api http://127.0.0.1:PORT "
                           "(or --clickhouse for a ClickHouse server)")
    from dashboard.api import json_value
    from sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(settings.clickhouse_dsn)
    try:
        columns, rows = store.query(query)
    finally:
        store.close()
    return columns, [[json_value(v) for v in row] for row in rows]


def format_result(columns: list[str], rows: list[list[Any]], fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps([dict(zip(columns, row)) for row in rows]).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(v) for v in row])
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

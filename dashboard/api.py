"""The HTTP API: read-only SQL, health, metrics (and the dashboard's panels, dashboard/panels.py).

In embedded mode chDB is locked by the process that writes it, so this app runs inside the processors
worker; against a ClickHouse server it also runs standalone (`is-telemetry api`).
Read-only is enforced by ClickHouse itself (`readonly=1`), never by parsing the SQL.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from is_telemetry.config import Settings
from sinks.clickhouse import ClickHouseStore

log = logging.getLogger(__name__)

MAX_SQL_BYTES = 64 * 1024


def json_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, int) and not -(2**63) <= v < 2**64:
        return str(v)
    if isinstance(v, (Decimal, UUID)):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    return v


def rows_json(columns: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{c: json_value(v) for c, v in zip(columns, row)} for row in rows]


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, code: str, message: str) -> OrjsonResponse:
    return OrjsonResponse({"error": code, "message": message}, status_code=status)


def create_app(settings: Settings, store: ClickHouseStore) -> Starlette:
    token = settings.api.token

    def authorized(request: Request) -> bool:
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given, f"Bearer {token}")

    async def sql(request: Request) -> Response:
        if not authorized(request):
            return error(401, "unauthorized", "missing or wrong bearer token (api.token)")
        raw = await request.body()
        if len(raw) > MAX_SQL_BYTES:
            return error(413, "too_large", f"query over {MAX_SQL_BYTES} bytes")
        query = raw.decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                query = str(orjson.loads(raw)["query"])
            except Exception:
                return error(400, "bad_request", 'JSON body must be {"query": "SELECT ..."}')
        if not query.strip():
            return error(400, "bad_request", "empty query")
        try:
            columns, rows = await _in_thread(store.query, query)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0][:1000] if str(exc).strip() else type(exc).__name__
            status = 403 if "readonly" in msg.lower() or "READONLY" in msg else 400
            return error(status, "query_failed", msg)
        return OrjsonResponse({"columns": columns, "rows": [[json_value(v) for v in r] for r in rows]})

    async def healthz(request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/api/sql", sql, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]
    routes.extend(_panel_routes(settings, store))
    return Starlette(routes=routes)


def _panel_routes(settings: Settings, store: ClickHouseStore) -> list[BaseRoute]:
    try:
        from dashboard import panels
    except ImportError:
        return []
    return list(panels.routes(settings, store))


async def _in_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside another event loop's process (the faust worker): the host owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def embedded_server(app: Starlette, host: str, port: int) -> EmbeddedServer:
    return EmbeddedServer(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"))


def serve(settings: Settings, log_level: str = "warning") -> None:
    store = ClickHouseStore(settings.clickhouse_dsn, settings.clickhouse.snapshot_ttl_days).open()
    print(f"API and dashboard on http://{settings.api.host}:{settings.api.port}/", flush=True)
    try:
        uvicorn.run(create_app(settings, store), host=settings.api.host, port=settings.api.port, log_level=log_level,
                    access_log=False)
    finally:
        store.close()

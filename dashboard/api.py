"""The HTTP API: analysts' read-only SQL, health, metrics, and the dashboard (dashboard/panels.py).

`POST /api/sql` takes `application/json` `{"query": "SELECT ...", "format": "json"}` only (a browser cannot send
that cross-site without a CORS preflight, which this server never grants), with `Authorization: Bearer <api.token>`
when a token is set. Every statement runs through dashboard/sql_endpoint.py: parsed by ClickHouse, checked against
allowlists, run on a read-only session with time, memory and result limits, its output streamed as ClickHouse
wrote it, cancelled when the client goes away.

Every `/api/*` and `/metrics` request is refused (403) when the browser says it comes from another site
(`Sec-Fetch-Site`, `Origin`), and, without a token, when its `Host` is not a loopback name or one of
`api.allowed_hosts` (a DNS-rebinding page would otherwise be "same-origin").
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core.config import Settings, is_loopback
from core.errors import Forbidden, RequestRefused, Unauthorized, UnsupportedMediaType
from core.httpedge import read_body
from core.httperrors import error_response, refusal
from dashboard import forget_route, freshness, metrics, panels
from dashboard.analyst_sql import AnalystSessions, SqlSessions
from dashboard.responses import OrjsonResponse
from dashboard.sql_endpoint import SqlEndpoint, request_of

log = logging.getLogger(__name__)

_JSON = "application/json"
_GUARDED = ("/api/", "/metrics")
_SAME_SITE_FETCH = frozenset({"same-origin", "none"})


def host_name(host_header: str) -> str:
    """'127.0.0.1:8481' -> '127.0.0.1'; '[::1]:8481' -> '::1'; 'Example.net' -> 'example.net'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h[1:]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class BrowserGuard:
    """Refuses cross-site browser requests (and, without a token, unknown Host names) on the API's paths."""

    def __init__(self, app: ASGIApp, check_host: bool, allowed_hosts: frozenset[str]) -> None:
        self.app, self.check_host, self.allowed_hosts = app, check_host, allowed_hosts

    def problem(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.check_host:
            name = host_name(host)
            if not (is_loopback(name) or name in self.allowed_hosts):
                return (
                    f"Host {host[:100]!r} is not allowed without a token: use 127.0.0.1 or localhost, "
                    "add the name to api.allowed_hosts, or set api.token"
                )
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in _SAME_SITE_FETCH:
            return f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:40]})"
        origin = headers.get("origin")
        if origin is not None:
            scheme = scope.get("scheme", "http")
            if origin.lower() != f"{scheme}://{host}".lower():
                return f"cross-origin request refused (Origin: {origin[:100]})"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_GUARDED):
            problem = self.problem(scope)
            if problem is not None:
                metrics.REFUSED.labels("cross_site").inc()
                await refusal(Forbidden(problem, code="cross_site"))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refresh_metrics(sessions: AnalystSessions) -> bytes:
    """The analyst views' refresh gauges (dashboard/freshness.py); none when ClickHouse cannot say (down, busy,
    not migrated yet)."""
    try:
        return freshness.metrics_text(panels.panel_query(sessions))
    except RequestRefused as exc:
        log.debug("analyst view refresh metrics unavailable: %s", exc.message)
        return b""


def create_app(settings: Settings, sessions: SqlSessions, panel_sessions: AnalystSessions) -> Starlette:
    """The API app: POST /api/sql runs on `sessions` (dashboard/sql_endpoint.py); the dashboard's panels on
    `panel_sessions`, so that a pool saturated by ad-hoc queries leaves the dashboard answering."""
    token = settings.api.token.encode()
    endpoint = SqlEndpoint(sessions, settings.api.query_timeout_s, settings.api.query_max_result_bytes)

    def check_token(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, b"Bearer " + token):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <api.token>)")

    async def sql(request: Request) -> Response:
        check_token(request)
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != _JSON:
            raise UnsupportedMediaType('POST /api/sql takes Content-Type: application/json, {"query": "SELECT ..."}')
        try:
            raw = await read_body(request, settings.api.max_sql_bytes)  # 408 at api.request_timeout_s
        except ClientDisconnect:  # the client hung up, or the edge cut it off (core/httpedge.py)
            return Response(status_code=499)  # nobody to answer
        query, fmt = request_of(raw, request.query_params)
        try:
            return await endpoint(request, query, fmt)
        except RequestRefused as exc:
            metrics.QUERIES.labels(exc.code).inc()
            raise

    async def healthz(request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        refreshes = await asyncio.to_thread(_refresh_metrics, panel_sessions)
        return Response(generate_latest() + refreshes, media_type=CONTENT_TYPE_LATEST)

    async def on_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRefused)
        return refusal(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), dict(exc.headers or {}))

    async def on_internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error")

    routes: list[BaseRoute] = [
        Route("/api/sql", sql, methods=["POST"]),
        forget_route.route(settings),  # POST /api/forget (docs/privacy.md)
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        *panels.routes(settings, panel_sessions),
    ]
    allowed = frozenset(h.lower() for h in [*settings.api.allowed_hosts, settings.api.host] if h)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BrowserGuard, check_host=not token, allowed_hosts=allowed)],
        exception_handlers={RequestRefused: on_refused, HTTPException: on_http, Exception: on_internal},
    )
    # no route redirects (a trailing slash is an unknown path): a redirect's Location is built from the Host header
    # the client sent, so a client that follows it would take its SQL, UIDs or token to that host
    app.router.redirect_slashes = False
    app.state.endpoint = endpoint
    return app


PANEL_SESSIONS = 2


def app_from_settings(settings: Settings) -> tuple[Starlette, AnalystSessions, SqlEndpoint]:
    """The app with what holds its ClickHouse sessions: the dashboard's pool (2) and the SQL endpoint's
    (api.query_concurrency); close both when the server stops."""
    sessions = SqlSessions.from_settings(settings)
    panel_sessions = AnalystSessions.from_settings(settings, size=PANEL_SESSIONS)
    app = create_app(settings, sessions, panel_sessions)
    return app, panel_sessions, app.state.endpoint

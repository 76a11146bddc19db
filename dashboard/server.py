"""Serving the API: standalone (`is-telemetry api`) or on a thread of its own inside a worker.

Inside the processors worker (embedded chDB can only be read by the process that writes it) the API runs on
its own thread and event loop, so nothing an HTTP client does (slow headers, large results, many connections)
runs on the loop that consumes Kafka and writes ClickHouse; its queries run on their own ClickHouse sessions
(dashboard/analyst_sql.py).
"""

from __future__ import annotations

import logging
import threading

import uvicorn

from core.config import Settings, check_api_exposure
from core.httpedge import edge_limits, server_config
from dashboard.analyst_sql import AnalystSessions
from dashboard.api import app_from_settings
from dashboard.sql_endpoint import SqlEndpoint

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 5


def api_server(settings: Settings, log_level: str = "warning") -> tuple[uvicorn.Server, AnalystSessions, SqlEndpoint]:
    check_api_exposure(settings)
    app, panel_sessions, sql = app_from_settings(settings)
    config = server_config(
        app, settings.api.host, settings.api.port, edge_limits(settings.api), log_level, timeout_keep_alive=KEEP_ALIVE_S
    )
    return uvicorn.Server(config), panel_sessions, sql


class ApiThread:
    """The API on a thread of its own (uvicorn installs no signal handlers off the main thread)."""

    def __init__(self, settings: Settings, log_level: str = "warning") -> None:
        self.server, self.panel_sessions, self.sql = api_server(settings, log_level)
        self.thread = threading.Thread(target=self._run, name="api", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        finally:
            self.sql.close()
            self.panel_sessions.close()

    def start(self) -> ApiThread:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            log.warning("the API did not stop within %.0fs", timeout_s)


def serve(settings: Settings, log_level: str = "warning") -> None:
    """`is-telemetry api`: the API and dashboard until SIGTERM/SIGINT."""
    server, panel_sessions, sql = api_server(settings, log_level)
    panel_sessions.probe()
    print(f"API and dashboard on http://{settings.api.host}:{settings.api.port}/", flush=True)
    try:
        server.run()
    finally:
        sql.close()
        panel_sessions.close()
    if not server.started:
        raise SystemExit(f"the API could not listen on {settings.api.host}:{settings.api.port}")

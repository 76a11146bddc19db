"""Serving the collector: uvicorn behind the HTTP edge's bounds (core/httpedge.py), its URL printed once it listens,
a graceful stop on SIGTERM/SIGINT (in-flight requests finish, then the producer is flushed)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from core.config import Settings
from core.httpedge import edge_limits, server_config
from producers.collector.app import COLLECT_PATH, create_app

# Idle keep-alive connections are closed after this. Longer than HTTP clients' own idle expiry (httpx 5 s,
# Go's net/http 90 s) so that a client never sends a POST on a connection the server is just closing
# (the request would fail with a reset, and POSTs are not retried).
KEEP_ALIVE_S = 95


class CollectorServer(uvicorn.Server):
    """uvicorn.Server that prints its URL once listening and exits normally after SIGTERM/Ctrl-C.

    uvicorn's own shutdown does the graceful part: stop accepting, let in-flight requests finish
    (up to timeout_graceful_shutdown), then the lifespan shutdown flushes the Kafka producer.
    """

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None] | None = print) -> None:
        super().__init__(config)
        self.announce = announce
        self.url = ""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        host, port = self.config.host, self.config.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                port = sock.getsockname()[1]
                break
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        if self.announce is not None:
            self.announce(f"collector listening on {self.url}{COLLECT_PATH} (Ctrl-C stops it)")
            sys.stdout.flush()

    def capture_signals(self) -> Any:  # type: ignore[override]
        return _SignalCapture(self)


class _SignalCapture:
    """Like uvicorn's capture_signals, minus re-raising the signal after a graceful shutdown."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self.server.handle_exit)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def make_config(settings: Settings, app: ASGIApp | None = None, log_level: str = "warning") -> uvicorn.Config:
    return server_config(
        app if app is not None else create_app(settings),
        settings.collector.host,
        settings.collector.port,
        edge_limits(settings.collector),  # header timeout and size, connection cap (core/httpedge.py)
        log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
        # in-flight requests get this long to finish after SIGTERM; the producer flush follows
        timeout_graceful_shutdown=int(settings.collector.publish_timeout_s) + 10,
    )


def serve(
    settings: Settings, log_level: str = "warning", ledger_dir: Path | None = None, control_fd: int | None = None
) -> None:
    """Run the collector on settings.collector.host:port until SIGTERM/SIGINT, then shut down gracefully
    (`ledger_dir`, `control_fd`: see create_app)."""
    app = create_app(settings, ledger_dir=ledger_dir, control_fd=control_fd)
    server = CollectorServer(make_config(settings, app, log_level=log_level))
    server.run()
    if not server.started:
        raise SystemExit(f"the collector could not listen on {settings.collector.host}:{settings.collector.port}")

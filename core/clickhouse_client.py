"""Opening a ClickHouse client from a DSN, for the sink (sinks/clickhouse.py) and the query side
(dashboard/analyst_sql.py): `chdb:///abs/path` is embedded chDB, `http(s)://user:pass@host:port/db` a server."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client


def connect(dsn: str, settings: dict[str, Any] | None = None) -> Client:
    """chdb:///abs/path -> embedded chDB; http(s)://user:pass@host:port/db -> a ClickHouse server.
    `settings` go with every request (servers only)."""
    url = urlparse(dsn)
    if url.scheme == "chdb":
        if not url.path.startswith("/"):
            raise ValueError(f"chdb DSN needs an absolute path: chdb:///abs/path (got {dsn})")
        if settings:
            raise ValueError("per-request settings are for servers; on chDB use SET on the session")
        return clickhouse_connect.get_client(dsn=dsn)
    if url.scheme in ("http", "https"):
        database = url.path.strip("/") or "default"
        secure = url.scheme == "https"
        query: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        return clickhouse_connect.get_client(
            host=url.hostname or "localhost",
            port=url.port or (8443 if secure else 8123),
            username=url.username or "default",
            password=url.password or "",
            database=database,
            secure=secure,
            settings=settings,
            **query,
        )
    raise ValueError(f"unsupported ClickHouse DSN {dsn!r}: use chdb:///abs/path or http(s)://user:pass@host:8123/db")


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ***."""
    url = urlparse(dsn)
    if url.password:
        return dsn.replace(f":{url.password}@", ":***@")
    return dsn

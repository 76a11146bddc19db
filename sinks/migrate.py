"""The schema: the migrations of sinks/migrations applied in order, once each (`schema_migrations` records them), and
the snapshots' time to live (`clickhouse.snapshot_ttl_days`)."""

from __future__ import annotations

import importlib.resources
import logging
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlparse

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from core.clickhouse_client import redact
from core.retry import first_line
from sinks import retention
from sinks.connection import TRANSIENT_CODES, Connection, StoreRefused
from sinks.retention import Retention

log = logging.getLogger("sinks.clickhouse")

#: The tables `clickhouse.snapshot_ttl_days` applies to: the snapshots and every CLI report (migration 0006).
TTL_TABLES = ("snapshots", "cli_reports", "analyst_history", "analyst_jumps")


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) of every file in sinks/migrations, in order."""
    found = []
    for entry in importlib.resources.files("sinks.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        statements = [s.strip() for s in entry.read_text().split(";\n") if _strip_comments(s).strip()]
        found.append((version, name, statements))
    return sorted(found)


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


def ttl_horizon(snapshot_ttl_days: int) -> date | None:
    """The last day whose snapshots the TTL has removed (None: they are kept)."""
    if snapshot_ttl_days <= 0:
        return None
    return datetime.now(UTC).date() - timedelta(days=snapshot_ttl_days)


class Migrator:
    """Applies the migrations not applied yet, then the TTL, on the writer's session."""

    def __init__(self, connection: Connection, snapshot_ttl_days: int, retention: Retention | None = None) -> None:
        self.connection, self.snapshot_ttl_days = connection, snapshot_ttl_days
        self.retention = retention or Retention()  # the other TTLs (sinks/retention.py)
        self._migrating = ""  # the migration being applied (for the error of one that fails)

    def migrate(self) -> list[str]:
        c = self.connection.client
        c.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {r[0] for r in c.query("SELECT version FROM schema_migrations FINAL").result_rows}
        applied = []
        for version, name, statements in migrations():
            if version in done:
                continue
            self._migrating = name
            for statement in statements:
                c.command(statement)
            c.insert(
                "schema_migrations",
                [[version, name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            applied.append(name)
            log.info("applied migration %s", name)
        self._apply_ttl()
        return applied

    def migrate_or_refuse(self) -> list[str]:
        """migrate(), with an error that waiting cannot mend raised as StoreRefused (the rest is retried)."""
        dsn = self.connection.dsn
        try:
            return self.migrate()
        except DatabaseError as exc:
            where = f" (migration {self._migrating})" if self._migrating else ""
            reason = first_line(exc, 500)
            code = getattr(exc, "code", None)
            if dsn.startswith("chdb:") and not self.connection.connected and not isinstance(exc, OperationalError):
                raise StoreRefused(_chdb_unusable(dsn, reason)) from exc  # the directory could not be opened
            if code is not None and code not in TRANSIENT_CODES:
                raise StoreRefused(f"ClickHouse at {redact(dsn)} refused the set-up{where}: {reason}") from exc
            raise
        finally:
            self._migrating = ""

    def _apply_ttl(self) -> None:
        client = self.connection.client
        present = {
            str(r[0])
            for r in client.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}",
                parameters={"names": list(TTL_TABLES)},
            ).result_rows
        }
        for table in (t for t in TTL_TABLES if t in present):  # a table a later migration adds is not there yet
            if self.snapshot_ttl_days > 0:
                client.command(f"ALTER TABLE {table} MODIFY TTL day + toIntervalDay({int(self.snapshot_ttl_days)})")
            else:
                create = client.command(f"SHOW CREATE TABLE {table}")
                if "TTL" in str(create):
                    client.command(f"ALTER TABLE {table} REMOVE TTL")
        retention.apply(client, self.retention)


def _chdb_unusable(dsn: str, reason: str) -> str:
    from core.preflight import check_chdb

    held = check_chdb(dsn)
    if not held.ok:
        return held.message
    return f"chDB cannot open {urlparse(dsn).path}: {reason} (is the directory writable?)"

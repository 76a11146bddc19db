"""What the running pipeline says about itself, read the way an operator would: SQL through the API (POST
/api/sql) and the worker's /metrics. Short timeouts; a query that fails raises
apiclient.ApiError, a /metrics that does not answer reads as None."""

from __future__ import annotations

from typing import Any

from is_telemetry import apiclient

WORKER_STORED = "is_telemetry_processor_stored_total"  # records acknowledged once their batch reached ClickHouse
WORKER_ASSIGNED = "is_telemetry_processor_partitions_assigned"  # raw-topic partitions the worker consumes
WORKER_PAUSED = "is_telemetry_sink_paused_partitions"  # of them, paused: ClickHouse did not take their last batch


class Readings:
    def __init__(self, api_url: str, collector_url: str, token: str) -> None:
        self.api_url, self.token = api_url, token
        self.collector_base = collector_url.rsplit("/", 1)[0]

    def query(self, sql: str, timeout_s: float = 10) -> list[list[Any]]:
        return apiclient.sql(self.api_url, sql, self.token, timeout_s)[1]

    def stored_counts(self) -> tuple[int, int, int]:
        """(UID-days, rejected bodies, days) as stored after duplicates collapse (FINAL): they only go up."""
        row = self.query(
            "SELECT (SELECT count() FROM snapshots FINAL), (SELECT count() FROM rejections FINAL), "
            "(SELECT count() FROM daily_rollup FINAL)",
            timeout_s=5,
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    def summary_day(self) -> list[Any] | None:
        """The last finished UTC day of fleet_daily, else today's (before any day has finished): day, deployments,
        CLI installs, gateways, end devices, active day/week/month, applications, users, organizations."""
        rows = self.query(
            "SELECT toString(day), deployments, cli_installs, gateways, end_devices, active_last_day, "
            "active_last_week, active_last_month, applications, users_standard + users_admin, organizations "
            "FROM fleet_daily WHERE day <= toDate(now('UTC')) "
            "ORDER BY day = toDate(now('UTC')), day DESC LIMIT 1",
            timeout_s=5,
        )
        return rows[0] if rows else None

    def kept(self) -> tuple[int, int]:
        """(snapshot rows, days) ClickHouse holds (a broker loss does not touch them)."""
        ch = self.query(
            "SELECT (SELECT count() FROM snapshots), (SELECT count() FROM daily_rollup FINAL)", timeout_s=3
        )[0]
        return ch[0], ch[1]

    def stored_per_day(self) -> tuple[dict[str, int], dict[str, int]]:
        """UID-days and rejected bodies stored per day (FINAL), keyed by the day's ISO date."""
        # constant SQL (no value is spliced in); the caller picks the days it needs
        rows = self.query("SELECT day, count() FROM snapshots FINAL GROUP BY day", timeout_s=5)
        rejected = self.query("SELECT day, count() FROM rejections FINAL GROUP BY day", timeout_s=5)
        return {str(d): int(n) for d, n in rows}, {str(d): int(n) for d, n in rejected}

    def worker_stored(self) -> float | None:
        worker = apiclient.metrics(self.api_url + "/metrics")
        return None if worker is None else worker.get(WORKER_STORED, 0.0)

    def worker_partitions(self) -> tuple[int, int] | None:
        """(raw-topic partitions the worker consumes, of them paused); (0, 0): it is up but consumes nothing; None if
        it does not answer."""
        worker = apiclient.metrics(self.api_url + "/metrics", timeout_s=1.0)
        if worker is None or WORKER_ASSIGNED not in worker:
            return None
        return int(worker[WORKER_ASSIGNED]), int(worker.get(WORKER_PAUSED, 0))

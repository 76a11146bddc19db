"""Retention beyond the snapshots' TTL, enforced by ClickHouse (docs/privacy.md, "Retention").

Set at every start from the configuration, as `clickhouse.snapshot_ttl_days` is (sinks/clickhouse.py `_apply_ttl`),
and removed when set back to 0:
- `clickhouse.rejection_body_ttl_days`: a column TTL on `rejections.body` and `rejections.message`. ClickHouse
  empties them once the day is that old; the row (day, reason, source position) stays, so every rejected count
  stays exact and a replay still collapses on its position.
- `clickhouse.uid_state_ttl_days`: a TTL on `uid_activity` and `analyst_first_seen` (the per-UID analyst state:
  first and last day, the sets of days, weeks and months), on the UID's last day: a UID silent for that long is forgotten. One that reports again
  later is then first seen again (docs/analysts.md, "Beyond retention").
The day aggregates (`rollup_partitions`, `analyst_daily`, `retention_cohorts`) hold no UID's data of its own, and are
kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from core.config import ClickHouseSettings

#: the per-UID analyst state kept on the UID's last day (analyst_first_seen: sinks/migrations/0009)
UID_STATE_TABLES = ("uid_activity", "analyst_first_seen")


@dataclass(frozen=True)
class Retention:
    """Days to keep (0 = keep for ever)."""

    rejection_body_days: int = 0
    uid_state_days: int = 0

    @classmethod
    def of(cls, settings: ClickHouseSettings) -> Retention:
        return cls(settings.rejection_body_ttl_days, settings.uid_state_ttl_days)


def apply(client: Client, retention: Retention) -> None:
    """Set (or remove) the TTLs of `retention` on the tables present (a later migration's table is not there yet)."""
    present = {
        str(r[0])
        for r in client.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            parameters={"names": ["rejections", *UID_STATE_TABLES]},
        ).result_rows
    }
    if "rejections" in present:
        days = int(retention.rejection_body_days)  # an int from the configuration, never text
        if days > 0:  # the columns that hold what a sender sent: its body, and the message that may quote it
            client.command(
                f"ALTER TABLE rejections MODIFY COLUMN body TTL day + toIntervalDay({days}), "
                f"MODIFY COLUMN message TTL day + toIntervalDay({days})"
            )
        elif "TTL" in str(client.command("SHOW CREATE TABLE rejections")):
            client.command("ALTER TABLE rejections MODIFY COLUMN body REMOVE TTL, MODIFY COLUMN message REMOVE TTL")
    for table in (t for t in UID_STATE_TABLES if t in present):
        days = int(retention.uid_state_days)
        if days > 0:  # the per-UID analyst state, measured on the UID's last day
            client.command(f"ALTER TABLE {table} MODIFY TTL last_day + toIntervalDay({days})")
        elif "TTL" in str(client.command(f"SHOW CREATE TABLE {table}")):
            client.command(f"ALTER TABLE {table} REMOVE TTL")

"""Roll a validated message up into its per-(day, UID) snapshot row: the unit of truth.

Aggregates are never counters: every day aggregate is recomputed from the latest snapshot of each
UID of that day (sinks/clickhouse.py `refresh_days`), so re-processing the same record changes nothing.
Rows are plain JSON-safe dicts so they can travel through Kafka to a separate sink process.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import orjson

from is_telemetry.schema import TelemetryMessage

_MAJOR_MINOR = re.compile(r"^\s*v?(\d+)\.(\d+)")


def major_minor(binary_version: str) -> str:
    """'3.32.1 (1d218216, 2024-10-24T13:28:12Z)' -> '3.32'; '3.27.0-dev' -> '3.27'; else 'unknown'."""
    m = _MAJOR_MINOR.match(binary_version)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else "unknown"


def day_of(received_at_ms: int) -> date:
    """The UTC day of the receive time the collector stamped."""
    return datetime.fromtimestamp(received_at_ms / 1000, tz=UTC).date()


def snapshot_row(
    message: TelemetryMessage, body: bytes, received_at_ms: int, partition: int, offset: int, flags: list[str]
) -> dict[str, Any]:
    os_ = message.os
    row: dict[str, Any] = {
        "day": day_of(received_at_ms).isoformat(),
        "uid": message.uid,
        "kind": message.kind,
        "received_at_ms": received_at_ms,
        "source_partition": partition,
        "source_offset": offset,
        "default_uid": message.is_default_uid,
        "flags": flags,
        "operating_system": os_.operating_system if os_ else "",
        "arch": os_.arch if os_ else "",
        "binary_version": os_.binary_version if os_ else "",
        "version": major_minor(os_.binary_version) if os_ else "unknown",
        "golang_version": (os_.golang_version.strip() if os_ else ""),
        "cli": orjson.dumps(message.cli).decode() if message.cli is not None else "",
        "body": body.decode("utf-8", "replace"),
    }
    ec = message.entities_count
    if ec is not None:
        a = ec.end_devices.activate_end_devices
        row.update(
            gateways=ec.gateways.total,
            gateways_by_frequency_plan=dict(ec.gateways.gateways_by_frequency_plan_id),
            end_devices=ec.end_devices.total,
            active_end_devices=a.total,
            active_last_day=a.last_day,
            active_last_week=a.last_week,
            active_last_month=a.last_month,
            applications=ec.applications.total,
            users_standard=ec.accounts.users.standard,
            users_admin=ec.accounts.users.admin,
            users_total=ec.accounts.users.total,
            organizations=ec.accounts.organizations.total,
        )
    return row


def rejection_row(
    reason: str, message: str, body: bytes, received_at_ms: int, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    return {
        "day": day_of(received_at_ms).isoformat(),
        "received_at_ms": received_at_ms,
        "reason": reason,
        "message": message,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "body": body[:4096].decode("utf-8", "replace"),
    }

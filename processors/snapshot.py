"""A validated message as its per-(day, UID) snapshot row, a rejected record as its rejection row.

The day of a record is the UTC day of the receive time the collector stamped, never the processing time, so a replay
gives the same answer.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache

import orjson

from is_telemetry.rows import RejectionRow, SnapshotRow, ms_to_datetime, position
from is_telemetry.schema import TelemetryMessage

_MAJOR_MINOR = re.compile(r"^\s*v?(\d+)\.(\d+)")
REJECTED_BODY_MAX = 4096  # a rejected body is kept truncated: anyone can put any text in it


@lru_cache(maxsize=4096)  # a fleet runs a few hundred distinct versions
def major_minor(binary_version: str) -> str:
    """'3.32.1 (1d218216, 2024-10-24T13:28:12Z)' -> '3.32'; '3.27.0-dev' -> '3.27'; else 'unknown'."""
    m = _MAJOR_MINOR.match(binary_version)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else "unknown"


def day_of(received_at_ms: int) -> date:
    """The UTC day of the receive time the collector stamped."""
    return datetime.fromtimestamp(received_at_ms / 1000, tz=UTC).date()


def snapshot_row(
    message: TelemetryMessage,
    body: bytes,
    received_at_ms: int,
    partition: int,
    offset: int,
    flags: list[str],
    index: int = 0,
) -> SnapshotRow:
    os_ = message.os
    received_at = ms_to_datetime(received_at_ms)
    row = SnapshotRow(
        day=received_at.date(),
        uid=message.uid,
        kind=message.kind,
        received_at=received_at,
        version=(received_at_ms << 64) | position(offset, index),
        source_partition=partition,
        source_offset=offset,
        source_index=index,
        default_uid=message.is_default_uid,
        flags=flags,
        operating_system=os_.operating_system if os_ else "",
        arch=os_.arch if os_ else "",
        binary_version=os_.binary_version if os_ else "",
        version_major_minor=major_minor(os_.binary_version) if os_ else "unknown",
        golang_version=os_.golang_version.strip() if os_ else "",
        cli=orjson.dumps(message.cli).decode() if message.cli is not None else "",
        body=body.decode("utf-8", "replace"),
    )
    ec = message.entities_count
    if ec is not None:
        a = ec.end_devices.activate_end_devices
        row.gateways = ec.gateways.total
        row.gateways_by_frequency_plan = dict(ec.gateways.gateways_by_frequency_plan_id)
        row.end_devices = ec.end_devices.total
        row.active_end_devices = a.total
        row.active_last_day = a.last_day
        row.active_last_week = a.last_week
        row.active_last_month = a.last_month
        row.applications = ec.applications.total
        row.users_standard = ec.accounts.users.standard
        row.users_admin = ec.accounts.users.admin
        row.users_total = ec.accounts.users.total
        row.organizations = ec.accounts.organizations.total
    return row


def rejection_row(
    reason: str, message: str, body: bytes, received_at_ms: int, topic: str, partition: int, offset: int, index: int = 0
) -> RejectionRow:
    received_at = ms_to_datetime(received_at_ms)
    return RejectionRow(
        day=received_at.date(),
        received_at=received_at,
        reason=reason,
        message=message,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_index=index,
        body=body[:REJECTED_BODY_MAX].decode("utf-8", "replace"),
    )

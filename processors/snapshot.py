"""A validated message as its per-(day, UID) snapshot row, a rejected record as its rejection row.

The day of a record is the UTC day of the receive time the collector stamped, never the processing time, so a replay
gives the same answer.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import orjson

from core.rows import RejectionRow, SnapshotRow, ms_to_datetime, position
from core.schema import TelemetryMessage

# major.minor: ASCII digits, each part below 1000 (leading zeros allowed): a bounded pattern, never int() of a long
# digit string (Python refuses more than 4,300 digits) and never a number the analyst views cannot order.
_MAJOR_MINOR = re.compile(r"^\s*v?0*([0-9]{1,3})\.0*([0-9]{1,3})(?![0-9])")
REJECTED_BODY_MAX = 4096  # a rejected body is kept truncated: anyone can put any text in it


@lru_cache(maxsize=4096)  # a fleet runs a few hundred distinct versions
def major_minor(binary_version: str) -> str:
    """'3.32.1 (1d218216, 2024-10-24T13:28:12Z)' -> '3.32'; '3.27.0-dev' -> '3.27'; else (no two dotted numbers
    below 1000 first) 'unknown'."""
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
    if os_ is not None:
        system, arch, binary, go = os_.operating_system, os_.arch, os_.binary_version, os_.golang_version.strip()
        minor = major_minor(binary)
    else:
        system = arch = binary = go = ""
        minor = "unknown"
    ec = message.entities_count
    if ec is None:  # a CLI message: no counts
        kind, default_uid, cli = "cli", False, orjson.dumps(message.cli).decode()
        counts: tuple[Any, ...] = (0, {}, 0, 0, 0, 0, 0, 0, 0, 0, None, 0)
    else:
        gw, ed, accounts = ec.gateways, ec.end_devices, ec.accounts
        active, users = ed.activate_end_devices, accounts.users
        kind, default_uid, cli = "is", message.is_default_uid, ""
        counts = (
            gw.total,
            dict(gw.gateways_by_frequency_plan_id),
            ed.total,
            active.total,
            active.last_day,
            active.last_week,
            active.last_month,
            ec.applications.total,
            users.standard,
            users.admin,
            users.total,
            accounts.organizations.total,
        )
    # One constructor call with every column in order (setting fields one by one afterwards cost a third more).
    return SnapshotRow(  # type: ignore[call-arg]  # mypy cannot count the starred counts against the fields
        received_at.date(),
        message.uid,
        kind,
        received_at,
        (received_at_ms << 64) | position(offset, index),
        partition,
        offset,
        index,
        default_uid,
        flags,
        system,
        arch,
        binary,
        minor,
        go,
        *counts,
        cli,
        body.decode("utf-8", "replace"),
    )


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
